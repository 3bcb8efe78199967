"""What the commands that score many images share: checking and opening outputs, the scoring loop, the summary.

Not a command: :mod:`dgiqa_cli.cli` skips it when registering commands, and any command may import it.
"""

from __future__ import annotations

import os
from pathlib import Path

from rich.markup import escape

from dgiqa_cli.cli.common import err, fail, progress_bar
from dgiqa_cli.errors import EXIT_USAGE
from dgiqa_cli.io.names import printable


def check_outputs(
    csv_path: Path | None, jsonl_path: Path | None, resume: bool, overwrite: bool, parquet_path: Path | None = None
) -> list:
    """Check every output before any work (exit 2 on a problem); returns [(path, writer class)]."""
    from dgiqa_cli.io.rows import STDOUT, CsvWriter, JsonlWriter, check_writable

    outputs = []
    for path, writer_class in ((csv_path, CsvWriter), (jsonl_path, JsonlWriter), (parquet_path, "parquet")):
        if path is None:
            continue
        if writer_class == "parquet":
            if str(path) == STDOUT:
                raise fail("--parquet cannot go to stdout; give it a file", EXIT_USAGE)
            try:
                from dgiqa_cli.io.parquet import ParquetWriter, require_pyarrow

                require_pyarrow()
            except ImportError as exc:
                raise fail(str(exc), EXIT_USAGE) from None
            writer_class = ParquetWriter
        try:
            check_writable(path)
        except OSError as exc:
            raise fail(str(exc), EXIT_USAGE) from None
        if str(path) != STDOUT and path.exists() and path.stat().st_size > 0 and not (resume or overwrite):
            raise fail(
                f"{printable(str(path))} exists; add --resume to score only what it lacks, "
                "or --overwrite to start again",
                EXIT_USAGE,
            )
        outputs.append((path, writer_class))
    if sum(str(path) == STDOUT for path, _ in outputs) > 1:
        raise fail("--csv - and --jsonl - would both write to stdout; send one of them to a file", EXIT_USAGE)
    return outputs


def check_resumable(outputs: list, settings: dict, csv_safe: bool) -> None:
    """With --resume: refuse outputs whose rows were made with other settings (a ResumeError naming them: exit 2)."""
    from dgiqa_cli.io.rows import check_resume, check_rows

    for path, writer_class in outputs:
        if writer_class.__module__.endswith(".parquet"):
            from dgiqa_cli.io.parquet import read_rows

            check_rows(path, read_rows(path) if path.is_file() else [], settings)
        else:
            check_resume(path, settings, csv_safe)


def open_writers(outputs: list, resume: bool, settings: dict, csv_safe: bool) -> list:
    """Open the checked outputs; returns [(writer, paths that already have a row)]."""
    from dgiqa_cli.io.rows import CsvWriter, completed_paths

    opened = []
    for path, writer_class in outputs:
        if writer_class.__module__.endswith(".parquet"):
            from dgiqa_cli.io.parquet import completed_paths as parquet_paths

            done = parquet_paths(path) if resume else set()
        else:
            done = completed_paths(path, csv_safe) if resume else set()
        options = {"csv_safe": csv_safe} if writer_class is CsvWriter else {}
        opened.append((writer_class(path, append=resume, settings=settings, **options), done))
    return opened


def print_summary(stats, results_for_summary, lowest: int, detailed: bool) -> None:
    from dgiqa_cli.io.rows import score_summary

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
        err.print(f"  {score_value:.4f}  {escape(printable(path))}", highlight=False)


def score_paths(
    scorer, todo, writers: list, batch_size: int | None, workers: int | None, quiet: bool, total: int | None = None
):
    """Score ``todo`` (paths, or :class:`~dgiqa_cli.io.sources.Item` s) through the batch engine, rows to ``writers``
    as they finish; returns (stats, table rows, (score, path) pairs). Without writers the rows are kept for the
    table printed at the end. ``total``: how many ``todo`` holds, where it is an iterator (None: unknown)."""
    from dgiqa_cli.inference.engine import BatchRunner, default_batch_size, default_workers

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
            err.print(f"[red]failed:[/] {escape(printable(result.path))}: {escape(result.error)}", highlight=False)
        progress.update(task, advance=1, current=printable(os.path.basename(result.path)))

    with progress_bar(quiet) as progress:
        task = progress.add_task("Scoring", total=len(todo) if isinstance(todo, list) else total, current="")
        stats = runner.run(todo, on_result)
    return stats, table_rows, scores_seen


def load_labelled(datasets, labels, root, path_column, mos_column, split_column, group_column, lower, spaq_resize):
    """Every labelled set named on the command line, data-set folders first (a LabelsError: a usage error)."""
    from dgiqa_cli.evaluation.labels import load_labels

    sets = []
    columns = {"path_column": path_column, "mos_column": mos_column}
    columns.update(split_column=split_column, group_column=group_column, lower_is_better=lower)
    for folder in datasets or []:
        sets.append(load_labels(dataset=folder, mos_column=mos_column, lower_is_better=lower, spaq_resize=spaq_resize))
    for file in labels or []:
        sets.append(load_labels(file, root=root, **columns))
    if not sets:
        raise fail("give data-set folders, or ratings with --labels FILE", EXIT_USAGE)
    return sets


def save_report(path: Path, rows: list[dict], quiet: bool, **options) -> bool:
    """Write ``dgiqa report``'s page of ``rows`` at the end of a run (batch --report, eval --out), thumbnails
    with a progress bar. A report that cannot be made is one line on stderr and ``False``: the run's own
    outputs are written already and its exit code stays what the scoring made it."""
    from dgiqa_cli.report import Report, ReportError

    try:
        with progress_bar(quiet) as progress:
            Report(rows, on_progress=stage_progress(progress), **options).save(path)
    except (ReportError, OSError) as exc:
        err.print(f"[bold red]error:[/] no report written to {escape(printable(str(path)))}: {escape(str(exc))}")
        return False
    if not quiet:
        err.print(f"report: {escape(printable(str(path)))}", highlight=False)
    return True


def stage_progress(progress):
    """A report's ``on_progress(stage, done, total)``: one bar per stage (thumbnails, explain panels)."""
    tasks: dict[str, int] = {}

    def on_progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total, current="")
        progress.update(tasks[stage], completed=done)

    return on_progress
