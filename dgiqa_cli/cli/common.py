"""The Typer app and what every command shares: consoles, exit codes, option types, helpers.

Imports no command: each command module (``score``, ``batch``, ...) imports
this one and registers itself on :data:`app`.

Data goes to stdout (a table, or JSON / CSV that pipe into jq or pandas);
progress, warnings and errors go to stderr. Exit codes (the README's table):
0 every image scored, 1 some images failed (each has a row saying why), 2 usage
error, 3 the weights cannot be had or do not fit, 74 an output file cannot be
written, 75 the output is being written by another run, 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ..errors import (  # noqa: F401  (the commands import the codes from here)
    EXIT_BUSY,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_OUTPUT,
    EXIT_TERMINATED,
    EXIT_USAGE,
    EXIT_WEIGHTS,
)
from ..names import printable
from ..version import __version__

out = Console(soft_wrap=True)
# Messages are never hard-wrapped: a redirected stderr keeps one line per message, for grep.
err = Console(stderr=True, soft_wrap=True)

app = typer.Typer(
    name="dgiqa",
    help=(
        "Blind image quality scores with DGIQA (depth-guided, no reference image needed).\n\n"
        "DGIQA scores are in [0, 1], higher is better (Life-IQA, --model life-iqa: unbounded MOS). Examples:\n\n"
        "  dgiqa score photo.jpg\n\n"
        "  dgiqa score *.png --json | jq '.[].score'\n\n"
        "  dgiqa score photo.jpg --weights DGIQA_Koniq10k.pth --crops 20"
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


class CropMode(str, Enum):
    official = "official"
    grid = "grid"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Backend(str, Enum):
    auto = "auto"
    torch = "torch"
    openvino = "openvino"


class DepthModel(str, Enum):
    vits = "vits"
    vitb = "vitb"
    vitl = "vitl"


class ModelFamily(str, Enum):
    dgiqa = "dgiqa"
    life_iqa = "life-iqa"


# Options shared by every command that scores.
ModelOpt = Annotated[
    ModelFamily | None,
    typer.Option(
        "--model",
        "-m",
        help="Model family: dgiqa (scores in [0, 1], the default) or life-iqa (unbounded MOS regression). "
        "Default: whatever --weights holds.",
        show_default=False,
    ),
]
WeightsOpt = Annotated[
    str | None,
    typer.Option(
        "--weights",
        "-w",
        help="Weights: a registry name (dgiqa-koniq \\[default], dgiqa-kadid, life-iqa-koniq) or a name made "
        "with `dgiqa weights import`, a .pth/.safetensors file such as the authors' DGIQA_Koniq10k.pth, a folder "
        "in the Hub format, or hf://OWNER/REPO\\[/FILE].",
        show_default=False,
    ),
]
DepthModelOpt = Annotated[
    DepthModel | None,
    typer.Option(
        help="Depth Anything encoder. Default: the one the weights were trained with (ViT-L for "
        "the authors' releases); another one is faster but shifts scores.",
        show_default=False,
    ),
]
DepthWeightsOpt = Annotated[
    str | None,
    typer.Option(
        help="Depth Anything weights: a name (vits, vitb, vitl), a file (pytorch_model.bin) or "
        "hf://OWNER/REPO\\[/FILE]. Default: the registry's copy for --depth-model.",
        show_default=False,
    ),
]
CropsOpt = Annotated[int, typer.Option(min=1, help="Number of 224x224 crops averaged per image (the paper uses 20).")]
CropModeOpt = Annotated[
    CropMode, typer.Option(help="official: the authors' seeded random positions; grid: evenly spread.")
]
SeedOpt = Annotated[int, typer.Option(help="Seed of the official crop positions (the authors use 42).")]
DeviceOpt = Annotated[
    str,
    typer.Option(
        help="Where to run: auto, cpu, cuda, cuda:N (the N-th GPU) or mps. auto picks CUDA, then MPS, then CPU."
    ),
]
PrecisionOpt = Annotated[
    Precision,
    typer.Option(help="auto: bf16 (or fp16) on GPUs, fp32 on CPU. fp32 reproduces the authors' numbers exactly."),
]
BackendOpt = Annotated[
    Backend | None,
    typer.Option(
        help="What runs the networks: auto (OpenVINO on the CPU, 1.5x faster there in fp32, 2.7x in bf16 as "
        "measured on 2 cores; PyTorch on GPUs), torch or "
        "openvino. Default: $DGIQA_BACKEND, else auto. OpenVINO compiles each network once and caches it "
        "($DGIQA_CACHE); fp32 keeps every score within 1e-4 of PyTorch's.",
        show_default=False,
    ),
]
# Options shared by every command that reads human ratings (eval, finetune).
DatasetsArg = Annotated[
    list[Path] | None,
    typer.Argument(
        help="Data-set folders as distributed: KonIQ-10k, KADID-10k, LIVE Challenge or SPAQ (recognised by "
        "their ratings file).",
        show_default=False,
    ),
]
LabelsOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--labels",
        help="A CSV or Parquet file of ratings: columns path and mos (see --path-column, --mos-column), optional "
        "split and group. Paths are relative to the file, or to --root. Repeat for several sets.",
        show_default=False,
    ),
]
RootOpt = Annotated[
    Path | None, typer.Option(help="Folder that --labels paths are relative to (default: the labels file's).")
]
PathColumnOpt = Annotated[str, typer.Option(help="Column of --labels holding picture paths.")]
MosColumnOpt = Annotated[
    str | None,
    typer.Option(
        help="Column holding the ratings. Default: mos for --labels; the data set's own (KonIQ-10k: MOS, "
        "KADID-10k: dmos, SPAQ: MOS) for folders, e.g. MOS_zscore for KonIQ-10k on 0-100.",
        show_default=False,
    ),
]
SplitColumnOpt = Annotated[str, typer.Option(help="Column of --labels naming each picture's split (optional).")]
GroupColumnOpt = Annotated[
    str,
    typer.Option(
        help="Column of --labels naming each picture's group, e.g. its reference picture (optional): "
        "resampling and splits keep a group together."
    ),
]
LowerIsBetterOpt = Annotated[
    bool, typer.Option("--lower-is-better", help="The ratings are DMOS-style: a lower number is a better picture.")
]
SpaqResizeOpt = Annotated[
    bool,
    typer.Option(help="SPAQ: score its photos shrunk to 512 pixels on the short side, as the usual protocol does."),
]
MaxPixelsOpt = Annotated[int, typer.Option(min=1, help="Refuse images with more pixels than this (protects memory).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or warnings on stderr.")]


def version_callback(value: bool) -> None:
    if value:
        out.print(f"dgiqa {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Blind image quality assessment with DGIQA."""


def setup_logging(quiet: bool) -> None:
    """Library warnings (e.g. a depth model other than the trained one) as one line each on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger = logging.getLogger("dgiqa")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.ERROR if quiet else logging.WARNING)
    logger.propagate = False
    from ..weights import progress

    progress.configure(quiet=quiet, console=err)  # download bars nest with the "Loading models…" spinner


def fail(message: str, code: int) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


@contextlib.contextmanager
def weights_errors():
    """Weights problems as one clear line and the right exit code: 2 when what the user typed names
    nothing (a usage error), 3 when the weights cannot be had or do not fit."""
    from ..weights import UnknownWeightsError, WeightsError

    try:
        yield
    except UnknownWeightsError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    except WeightsError as exc:
        raise fail(str(exc), EXIT_WEIGHTS) from None


def busy(message: str, quiet: bool = False):
    """A spinner on stderr while something slow runs, when stderr is a terminal (and not --quiet)."""
    return err.status(message, spinner="dots") if err.is_terminal and not quiet else contextlib.nullcontext()


SCORER_OPTIONS = (
    "model",
    "weights",
    "depth_model",
    "depth_weights",
    "crops",
    "crop_mode",
    "seed",
    "device",
    "precision",
    "backend",
    "max_pixels",
)


def scorer_options(command_params: dict) -> dict:
    """The Scorer's keyword arguments from a scoring command's parameters (every such command names the
    shared options alike; choices arrive as Enums)."""
    options = {key: command_params[key] for key in SCORER_OPTIONS}
    return {key: value.value if isinstance(value, Enum) else value for key, value in options.items()}


def make_scorer(command_params: dict):
    """Build the Scorer from a scoring command's parameters. Bad option values are usage errors."""
    from ..scorer import Scorer

    options = scorer_options(command_params)
    with weights_errors(), busy("Loading models…"):
        try:
            return Scorer(**options)
        except ValueError as exc:
            raise fail(str(exc), EXIT_USAGE) from None


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: finished rows are kept and the run says how to resume."""


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Turn SIGTERM into :class:`Terminated` while the block runs (in the main thread, where signals arrive)."""

    def terminate(signum, frame):
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def progress_bar(quiet: bool) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta", style="dim"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[current]}", style="dim"),
        console=err,
        transient=True,
        disable=quiet,
    )


def render_table(results, scorer) -> Table:
    low, high = scorer.score_range
    scale = "MOS, unbounded" if low is None or high is None else f"{low:g}-{high:g}"
    table = Table(title=f"{scorer.arch} · {scorer.model_name}", show_lines=False, header_style="bold")
    table.add_column("image", overflow="fold")
    table.add_column(f"score ({scale})", justify="right")
    spread = any(r.ok and r.score_ci95_low is not None for r in results)
    if spread:  # how far another draw of crops could move the score (none with one crop)
        table.add_column("95% of mean", justify="right")
    table.add_column("size", justify="right")
    table.add_column("note", overflow="fold")
    for r in results:
        if r.ok:
            interval = (
                []
                if not spread
                else ["" if r.score_ci95_low is None else f"{r.score_ci95_low:.4f}–{r.score_ci95_high:.4f}"]
            )
            table.add_row(escape(printable(r.path)), f"{r.score:.4f}", *interval, f"{r.width}x{r.height}", "")
        else:
            table.add_row(
                escape(printable(r.path)), "[red]-[/]", *([""] if spread else []), "", f"[red]{escape(r.error)}[/]"
            )
    return table
