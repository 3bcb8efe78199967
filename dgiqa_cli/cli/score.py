"""``dgiqa score``: score a few images and print a table, JSON or CSV."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from dgiqa_cli.cli.common import QuietOpt, app, err, fail, out, progress_bar, render_table, setup_logging
from dgiqa_cli.cli.options import ScorerOptions, with_options
from dgiqa_cli.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from dgiqa_cli.io.names import encode_path, printable


@app.command()
@with_options()
def score(
    images: Annotated[list[Path], typer.Argument(help="Image files to score.", show_default=False)],
    *,
    options: ScorerOptions,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON list of results, and nothing else, on stdout.")
    ] = False,
    csv_path: Annotated[
        Path | None,
        typer.Option("--csv", help="Also write the results to this CSV file ('-': stdout, instead of the table)."),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Score images one by one and print a table (or --json / --csv).

    Every image gets a score or a one-line reason why not; exit code 1 if any failed.
    """
    from dgiqa_cli.io.rows import STDOUT, CsvWriter, check_writable

    setup_logging(quiet)
    csv_to_stdout = csv_path is not None and str(csv_path) == STDOUT
    if csv_to_stdout and as_json:
        raise fail("--json and --csv - would both write to stdout; send the CSV to a file", EXIT_USAGE)
    if csv_path is not None:
        try:
            check_writable(csv_path)
        except OSError as exc:
            raise fail(str(exc), EXIT_USAGE) from None
    scorer = options.build()
    results = []
    started = time.perf_counter()
    with progress_bar(quiet or len(images) < 2) as progress:
        task = progress.add_task("Scoring", total=len(images), current="")
        for path in images:
            progress.update(task, current=printable(path.name))
            results.append(scorer.score(path))
            progress.advance(task)
    elapsed = time.perf_counter() - started

    if csv_path is not None:
        with CsvWriter(csv_path, settings=scorer.settings) as writer:
            for r in results:
                writer.write(r)
    if as_json:
        sys.stdout.write(json.dumps([json_row(r, scorer) for r in results], indent=2, ensure_ascii=False) + "\n")
    elif not csv_to_stdout:
        out.print(render_table(results, scorer))
    failed = [r for r in results if not r.ok]
    for r in failed:
        err.print(f"[red]failed:[/] {escape(printable(r.path))}: {escape(r.error)}", highlight=False)
    if not quiet and len(results) > 1:
        err.print(
            f"{len(results) - len(failed)} scored, {len(failed)} failed in {elapsed:.1f} s "
            f"({len(results) / max(elapsed, 1e-9):.2f} images/s)",
            highlight=False,
        )
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


def json_row(result, scorer) -> dict:
    """A result as JSON: valid UTF-8 whatever the file name (undecodable bytes escaped as in CSV rows)."""
    row = dict(result.as_dict(), score_range=list(scorer.score_range))
    row["path"] = encode_path(result.path)
    return row
