"""``dgiqa batch``: score whole folders, resumable, rows written as images finish."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..images import MAX_PIXELS
from ..names import printable
from .common import (
    EXIT_BUSY,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_OUTPUT,
    EXIT_TERMINATED,
    EXIT_USAGE,
    BackendOpt,
    CropMode,
    CropModeOpt,
    CropsOpt,
    DepthModelOpt,
    DepthWeightsOpt,
    DeviceOpt,
    MaxPixelsOpt,
    ModelOpt,
    Precision,
    PrecisionOpt,
    QuietOpt,
    SeedOpt,
    Terminated,
    WeightsOpt,
    app,
    err,
    fail,
    make_scorer,
    out,
    progress_bar,
    render_table,
    setup_logging,
    sigterm_as_interrupt,
)
from .running import check_outputs, check_resumable, open_writers, print_summary, score_paths


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
    csv_path: Annotated[
        Path | None, typer.Option("--csv", help="Write rows to this CSV as images finish ('-': stdout).")
    ] = None,
    jsonl_path: Annotated[
        Path | None, typer.Option("--jsonl", help="Write rows to this JSON Lines file as images finish ('-': stdout).")
    ] = None,
    csv_safe: Annotated[
        bool,
        typer.Option(
            "--csv-safe",
            help="Prefix text cells that a spreadsheet would run as a formula (=, +, -, @) with a quote (').",
        ),
    ] = False,
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
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = Precision.auto,
    backend: BackendOpt = None,
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
    from ..discover import collect_inputs
    from ..export import OutputError, lock_outputs

    setup_logging(quiet)
    folders = folders or []
    if not folders and from_list is None:
        raise fail("give folders or files to score, or --from-list FILE", EXIT_USAGE)
    missing = [printable(str(f)) for f in folders if not f.exists()]
    if missing:
        raise fail(f"no such file or folder: {', '.join(missing)}", EXIT_USAGE)
    if from_list not in (None, "-") and not Path(from_list).is_file():
        raise fail(f"--from-list {from_list}: no such file", EXIT_USAGE)
    if heatmaps_worst is not None and heatmaps is None:
        raise fail("--heatmaps-worst needs --heatmaps DIR", EXIT_USAGE)
    if heatmaps is not None and heatmaps.exists() and not heatmaps.is_dir():
        raise fail(f"--heatmaps {heatmaps}: exists and is not a folder", EXIT_USAGE)
    outputs = check_outputs(csv_path, jsonl_path, resume, overwrite)
    interrupted = "every finished image has its row; run again with --resume to finish"
    try:
        with lock_outputs([path for path, _ in outputs]), sigterm_as_interrupt():
            if resume:  # what the options alone say, before any model is loaded
                check_resumable(outputs, {"crops": crops, "crop_mode": crop_mode.value, "seed": seed}, csv_safe)
            paths = collect_inputs(folders, recursive, glob, from_list)
            if not paths:
                err.print("no images found", highlight=False)
                raise typer.Exit(EXIT_OK)
            scorer = make_scorer(locals())
            if compile_models:
                scorer.compile()
            if resume:
                check_resumable(outputs, scorer.settings, csv_safe)
            writers = open_writers(outputs, resume, scorer.settings, csv_safe)
            try:
                todo = [p for p in paths if any(p not in done for _, done in writers)] if writers else paths
                stats, table_rows, scores_seen = score_paths(scorer, todo, writers, batch_size, workers, quiet)
            finally:
                for writer, _ in writers:
                    writer.close()
            stats.skipped = len(paths) - len(todo)
    except KeyboardInterrupt as exc:
        code = EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
        err.print(f"{'terminated' if code == EXIT_TERMINATED else 'interrupted'}: {interrupted}", highlight=False)
        raise typer.Exit(code) from None
    except OutputError as exc:
        raise fail(str(exc), EXIT_BUSY if exc.errno == errno.EBUSY else EXIT_OUTPUT) from None
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
    from ..explain import write_explanation
    from ..images import ImageError

    if not paths:
        return
    common = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    with progress_bar(quiet) as progress:
        task = progress.add_task("Heatmaps", total=len(paths), current="")
        for path in paths:
            progress.update(task, current=printable(Path(path).name))
            target = folder / os.path.relpath(os.path.dirname(os.path.abspath(path)), common)
            try:
                write_explanation(scorer, path, target, heatmap=True, force=overwrite)
            except FileExistsError:
                pass  # made by an earlier run
            except (ImageError, ValueError) as exc:
                err.print(f"[red]no heatmap:[/] {escape(printable(path))}: {escape(str(exc))}", highlight=False)
            progress.advance(task)
    if not quiet:
        err.print(f"heatmaps for {len(paths)} images in {folder}", highlight=False)
