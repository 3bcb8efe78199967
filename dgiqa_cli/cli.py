"""The ``dgiqa`` command line: parse, call the library, render. No model logic lives here.

Data goes to stdout (a table, or JSON / CSV that pipe into jq or pandas);
progress, warnings and errors go to stderr. Exit codes: 0 every image scored,
1 some images (or the weights) failed, 2 usage error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import __version__
from .images import MAX_PIXELS

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

out = Console(soft_wrap=True)
err = Console(stderr=True)

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


class DeviceName(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


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
DeviceOpt = Annotated[DeviceName, typer.Option(help="Where to run: auto picks CUDA, then MPS, then CPU.")]
PrecisionOpt = Annotated[
    Precision,
    typer.Option(help="auto: bf16 (or fp16) on GPUs, fp32 on CPU. fp32 reproduces the authors' numbers exactly."),
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


def fail(message: str, code: int) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


@contextlib.contextmanager
def weights_errors():
    """Weights problems as one clear line and the right exit code: 2 when what the user typed names
    nothing (a usage error), 1 when the weights cannot be had or do not fit."""
    from .hub import UnknownWeightsError, WeightsError

    try:
        yield
    except UnknownWeightsError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    except WeightsError as exc:
        raise fail(str(exc), EXIT_FAILED) from None


def busy(message: str):
    """A spinner on stderr while something slow runs, when stderr is a terminal."""
    return err.status(message, spinner="dots") if err.is_terminal else contextlib.nullcontext()


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
    "max_pixels",
)


def make_scorer(command_params: dict):
    """Build the Scorer from a scoring command's parameters (every such command names the shared options
    alike; choices arrive as Enums). Bad option values are usage errors."""
    from .scorer import Scorer

    options = {key: command_params[key] for key in SCORER_OPTIONS}
    options = {key: value.value if isinstance(value, Enum) else value for key, value in options.items()}
    with weights_errors(), busy("Loading models…"):
        try:
            return Scorer(**options)
        except ValueError as exc:
            raise fail(str(exc), EXIT_USAGE) from None


def progress_bar(quiet: bool) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
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
    table.add_column("size", justify="right")
    table.add_column("note", overflow="fold")
    for r in results:
        if r.ok:
            table.add_row(escape(r.path), f"{r.score:.4f}", f"{r.width}x{r.height}", "")
        else:
            table.add_row(escape(r.path), "[red]-[/]", "", f"[red]{escape(r.error)}[/]")
    return table


@app.command()
def score(
    images: Annotated[list[Path], typer.Argument(help="Image files to score.", show_default=False)],
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    depth_model: DepthModelOpt = None,
    depth_weights: DepthWeightsOpt = None,
    crops: CropsOpt = 20,
    crop_mode: CropModeOpt = CropMode.official,
    seed: SeedOpt = 42,
    device: DeviceOpt = DeviceName.auto,
    precision: PrecisionOpt = Precision.auto,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON list of results, and nothing else, on stdout.")
    ] = False,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="Also write the results to this CSV file.")] = None,
    max_pixels: MaxPixelsOpt = MAX_PIXELS,
    quiet: QuietOpt = False,
) -> None:
    """Score images one by one and print a table (or --json / --csv).

    Every image gets a score or a one-line reason why not; exit code 1 if any failed.
    """
    from .export import CsvWriter, check_writable

    setup_logging(quiet)
    if csv_path is not None:
        try:
            check_writable(csv_path)
        except OSError as exc:
            raise fail(str(exc), EXIT_USAGE) from None
    scorer = make_scorer(locals())
    results = []
    started = time.perf_counter()
    with progress_bar(quiet or len(images) < 2) as progress:
        task = progress.add_task("Scoring", total=len(images), current="")
        for path in images:
            progress.update(task, current=path.name)
            results.append(scorer.score(path))
            progress.advance(task)
    elapsed = time.perf_counter() - started

    if csv_path is not None:
        with CsvWriter(csv_path) as writer:
            for r in results:
                writer.write(r)
    if as_json:
        payload = [dict(r.as_dict(), score_range=list(scorer.score_range)) for r in results]
        sys.stdout.write(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    else:
        out.print(render_table(results, scorer))
    failed = [r for r in results if not r.ok]
    for r in failed:
        err.print(f"[red]failed:[/] {escape(r.path)}: {escape(r.error)}", highlight=False)
    if not quiet and len(results) > 1:
        err.print(
            f"{len(results) - len(failed)} scored, {len(failed)} failed in {elapsed:.1f} s "
            f"({len(results) / max(elapsed, 1e-9):.2f} images/s)",
            highlight=False,
        )
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


def open_writers(csv_path: Path | None, jsonl_path: Path | None, resume: bool, overwrite: bool):
    """Check every output before any work, and open them; returns [(writer, paths already there)]."""
    from .export import CsvWriter, JsonlWriter, check_writable, completed_paths

    outputs = []
    for path, writer_class in ((csv_path, CsvWriter), (jsonl_path, JsonlWriter)):
        if path is None:
            continue
        try:
            check_writable(path)
        except OSError as exc:
            raise fail(str(exc), EXIT_USAGE) from None
        if path.exists() and path.stat().st_size > 0 and not (resume or overwrite):
            raise fail(
                f"{path} exists; add --resume to score only what it lacks, or --overwrite to start again", EXIT_USAGE
            )
        outputs.append((path, writer_class))
    opened = []
    for path, writer_class in outputs:
        done = completed_paths(path) if resume else set()
        opened.append((writer_class(path, append=resume), done))
    return opened


def print_summary(stats, results_for_summary, lowest: int, detailed: bool) -> None:
    from .export import score_summary

    err.print(
        f"{stats.scored} scored, {stats.failed} failed, {stats.skipped} skipped (already done) "
        f"in {stats.seconds:.1f} s ({stats.images_per_second:.2f} images/s)",
        highlight=False,
    )
    if not detailed or not results_for_summary:
        return
    summary = score_summary([score for score, _ in results_for_summary])
    err.print("scores: " + ", ".join(f"{k} {v:.4f}" for k, v in summary.items()), highlight=False)
    err.print(f"lowest {min(lowest, len(results_for_summary))}:", highlight=False)
    for score_value, path in sorted(results_for_summary)[:lowest]:
        err.print(f"  {score_value:.4f}  {escape(path)}", highlight=False)


@app.command()
def batch(
    folders: Annotated[
        list[Path] | None, typer.Argument(help="Folders (walked recursively) or image files.", show_default=False)
    ] = None,
    from_list: Annotated[
        str | None, typer.Option("--from-list", help="Also score the paths in this file, one a line ('-': stdin).")
    ] = None,
    recursive: Annotated[bool, typer.Option("--recursive/--no-recursive", help="Walk sub-folders.")] = True,
    glob: Annotated[
        str | None, typer.Option(help="Only files matching this pattern, e.g. '*.jpg' or 'raw/*/*.png'.")
    ] = None,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="Write rows to this CSV as images finish.")] = None,
    jsonl_path: Annotated[
        Path | None, typer.Option("--jsonl", help="Write rows to this JSON Lines file as images finish.")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Keep the rows already in --csv/--jsonl and score only the images they lack.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace existing --csv/--jsonl files.")] = False,
    summary: Annotated[bool, typer.Option(help="Print the score distribution and the lowest-scoring files.")] = False,
    lowest: Annotated[int, typer.Option(min=1, help="How many lowest-scoring files --summary lists.")] = 10,
    workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Threads that decode and prepare images ahead of the device (0: none, one image at a time). "
            "Default: the CPU count (at most 16) with a GPU, 1 on CPU.",
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(min=1, help="Images per device batch (DGIQA sees this x --crops crops). Default: 32 GPU, 1 CPU."),
    ] = None,
    compile_models: Annotated[
        bool, typer.Option("--compile", help="torch.compile the networks: slow start, faster long runs.")
    ] = False,
    heatmaps: Annotated[
        Path | None,
        typer.Option(help="Write an explain panel (depth, attention, local quality) per image into this folder."),
    ] = None,
    heatmaps_worst: Annotated[
        int | None, typer.Option(min=1, help="With --heatmaps: panels only for the N lowest-scoring images.")
    ] = None,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    depth_model: DepthModelOpt = None,
    depth_weights: DepthWeightsOpt = None,
    crops: CropsOpt = 20,
    crop_mode: CropModeOpt = CropMode.official,
    seed: SeedOpt = 42,
    device: DeviceOpt = DeviceName.auto,
    precision: PrecisionOpt = Precision.auto,
    max_pixels: MaxPixelsOpt = MAX_PIXELS,
    quiet: QuietOpt = False,
) -> None:
    """Score whole folders fast: parallel decoding, batched GPU work, rows written as they finish.

    Interrupt it at any time; run it again with --resume and every image ends up
    with exactly one row. Without --csv/--jsonl a table is printed at the end.

    [dim]Examples:[/]

      dgiqa batch ./photos --csv scores.csv --summary

      find . -name '*.jpg' | dgiqa batch --from-list - --jsonl out.jsonl
    """
    from .discover import collect_inputs
    from .engine import BatchRunner, default_batch_size, default_workers

    setup_logging(quiet)
    folders = folders or []
    if not folders and from_list is None:
        raise fail("give folders or files to score, or --from-list FILE", EXIT_USAGE)
    missing = [str(f) for f in folders if not f.exists()]
    if missing:
        raise fail(f"no such file or folder: {', '.join(missing)}", EXIT_USAGE)
    if from_list not in (None, "-") and not Path(from_list).is_file():
        raise fail(f"--from-list {from_list}: no such file", EXIT_USAGE)
    if heatmaps_worst is not None and heatmaps is None:
        raise fail("--heatmaps-worst needs --heatmaps DIR", EXIT_USAGE)
    if heatmaps is not None and heatmaps.exists() and not heatmaps.is_dir():
        raise fail(f"--heatmaps {heatmaps}: exists and is not a folder", EXIT_USAGE)
    writers = open_writers(csv_path, jsonl_path, resume, overwrite)
    try:
        paths = collect_inputs(folders, recursive, glob, from_list)
        todo = [p for p in paths if any(p not in done for _, done in writers)] if writers else paths
        if not paths:
            err.print("no images found", highlight=False)
            raise typer.Exit(EXIT_OK)
        scorer = make_scorer(locals())
        if compile_models:
            scorer.compile()
        runner = BatchRunner(
            scorer,
            batch_size=batch_size or default_batch_size(scorer.device),
            workers=default_workers(scorer.device) if workers is None else workers,
        )
        table_rows, scores_seen = [], []

        def on_result(result) -> None:
            for writer, done in writers:
                if result.path not in done:
                    writer.write(result)
            if not writers:
                table_rows.append(result)
            if result.ok:
                scores_seen.append((result.score, result.path))
            else:
                err.print(f"[red]failed:[/] {escape(result.path)}: {escape(result.error)}", highlight=False)
            progress.advance(task)

        with progress_bar(quiet) as progress:
            task = progress.add_task("Scoring", total=len(todo), current="")
            try:
                stats = runner.run(todo, on_result)
            except KeyboardInterrupt:
                progress.stop()
                err.print(
                    "interrupted: every finished image has its row; run again with --resume to finish", highlight=False
                )
                raise typer.Exit(130) from None
        stats.skipped = len(paths) - len(todo)
    finally:
        for writer, _ in writers:
            writer.close()
    if table_rows:
        out.print(render_table(table_rows, scorer))
    if not quiet:
        print_summary(stats, scores_seen, lowest, summary)
    if heatmaps is not None:
        chosen = sorted(scores_seen)[:heatmaps_worst] if heatmaps_worst else scores_seen
        write_heatmaps(scorer, [path for _, path in chosen], heatmaps, overwrite, quiet)
    raise typer.Exit(EXIT_FAILED if stats.failed else EXIT_OK)


def write_heatmaps(scorer, paths: list[str], folder: Path, overwrite: bool, quiet: bool) -> None:
    """Explain panels for ``paths``, in sub-folders mirroring theirs (below their common parent).

    Panels that already exist are kept (a resumed run does not redo them) unless --overwrite.
    """
    import os

    from .explain import write_explanation
    from .images import ImageError

    if not paths:
        return
    common = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    with progress_bar(quiet) as progress:
        task = progress.add_task("Heatmaps", total=len(paths), current="")
        for path in paths:
            progress.update(task, current=Path(path).name)
            target = folder / os.path.relpath(os.path.dirname(os.path.abspath(path)), common)
            try:
                write_explanation(scorer, path, target, heatmap=True, force=overwrite)
            except FileExistsError:
                pass  # made by an earlier run
            except (ImageError, ValueError) as exc:
                err.print(f"[red]no heatmap:[/] {escape(path)}: {escape(str(exc))}", highlight=False)
            progress.advance(task)
    if not quiet:
        err.print(f"heatmaps for {len(paths)} images in {folder}", highlight=False)


def main() -> None:
    """Console-script entry point."""
    app()


# Commands that live in their own modules register themselves on `app` when imported; they import the
# shared options above, so they come last. Works in either import order.
from . import cli_explain, cli_weights  # noqa: E402, F401

if __name__ == "__main__":
    main()
