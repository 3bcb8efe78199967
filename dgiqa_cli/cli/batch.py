"""``dgiqa batch``: score whole folders, resumable, rows written as images finish."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..images import MAX_PIXELS
from .common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CropMode,
    CropModeOpt,
    CropsOpt,
    DepthModelOpt,
    DepthWeightsOpt,
    DeviceName,
    DeviceOpt,
    MaxPixelsOpt,
    ModelOpt,
    Precision,
    PrecisionOpt,
    QuietOpt,
    SeedOpt,
    WeightsOpt,
    app,
    err,
    fail,
    make_scorer,
    out,
    progress_bar,
    render_table,
    setup_logging,
)


def open_writers(csv_path: Path | None, jsonl_path: Path | None, resume: bool, overwrite: bool):
    """Check every output before any work, and open them; returns [(writer, paths already there)]."""
    from ..export import CsvWriter, JsonlWriter, check_writable, completed_paths

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
    from ..export import score_summary

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
    from ..discover import collect_inputs
    from ..engine import BatchRunner, default_batch_size, default_workers

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
    from ..explain import write_explanation
    from ..images import ImageError

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
