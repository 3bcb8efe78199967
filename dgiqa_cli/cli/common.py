"""The Typer app and what every command shares: consoles, exit codes, option types, how runs end.

Imports no command: each command module (``score``, ``batch``, ...) imports
this one and registers itself on :data:`app`. The scoring options live in
:mod:`.options`.

Data goes to stdout (a table, or JSON / CSV that pipe into jq or pandas);
progress, warnings and errors go to stderr. Exit codes (the README's table):
0 every image scored, 1 some images failed (each has a row saying why), 2 usage
error, 3 the weights cannot be had or do not fit, 74 an output file cannot be
written, 75 the output is being written by another run, 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM). The library's errors carry their code
(:class:`dgiqa_cli.errors.DGIQAError`); :class:`DGIQAGroup` is the one place
that turns them into exits.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from collections.abc import Callable
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
from typer.core import TyperGroup

from dgiqa_cli.errors import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    DGIQAError,
)
from dgiqa_cli.io.names import one_line, printable
from dgiqa_cli.version import __version__

out = Console(soft_wrap=True)
# Messages are never hard-wrapped: a redirected stderr keeps one line per message, for grep.
err = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int) -> typer.Exit:
    """The command line's own refusals (a usage message naming its flags): one line on stderr, then exit ``code``."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


class DGIQAGroup(TyperGroup):
    """Maps the library's errors to exit codes, once for every command: a :class:`~dgiqa_cli.errors.DGIQAError`
    that leaves a command is one line on stderr and exits with its ``exit_code`` (2 usage, 3 weights, 74 output,
    75 busy, 1 otherwise). Anything else is a bug and keeps its traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DGIQAError as exc:
            raise fail(one_line(str(exc)), exc.exit_code) from None


app = typer.Typer(
    cls=DGIQAGroup,
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
    from dgiqa_cli.weights import progress

    progress.configure(quiet=quiet, console=err)  # download bars nest with the "Loading models…" spinner


def busy(message: str, quiet: bool = False):
    """A spinner on stderr while something slow runs, when stderr is a terminal (and not --quiet)."""
    return err.status(message, spinner="dots") if err.is_terminal and not quiet else contextlib.nullcontext()


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


@contextlib.contextmanager
def run_outcome(kept: str | Callable[[], str], on_interrupt: Callable[[], None] | None = None):
    """How a long run ends when stopped: SIGTERM is taken as Ctrl-C while the block runs, and either exits 130
    (143 for SIGTERM) after one line saying what was kept and how to go on (``kept``, or what it returns then).
    ``on_interrupt`` runs before the exit (batch writes its report of the rows so far). Library errors, an output
    that fails or is busy included, go on to :class:`DGIQAGroup`, which exits with their code."""
    try:
        with sigterm_as_interrupt():
            yield
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        what = kept if isinstance(kept, str) else kept()
        err.print(f"{'terminated' if terminated else 'interrupted'}: {escape(what)}", highlight=False)
        if on_interrupt is not None:
            on_interrupt()
        raise typer.Exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED) from None


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
