"""``dgiqa report``: one HTML file to look at a run (scores, gallery, explain panels, failures)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from dgiqa_cli.cli.common import QuietOpt, app, err, fail, progress_bar, setup_logging
from dgiqa_cli.cli.options import MODEL_OPTIONS, ScorerOptions, with_options
from dgiqa_cli.cli.running import stage_progress
from dgiqa_cli.errors import EXIT_OK, EXIT_OUTPUT, EXIT_USAGE
from dgiqa_cli.inference.defaults import DEFAULT_CROP_MODE
from dgiqa_cli.io.names import printable


@app.command()
@with_options(options=MODEL_OPTIONS)
def report(
    rows_files: Annotated[
        list[Path],
        typer.Argument(
            help="Rows of one run: CSV, JSON Lines or Parquet files from dgiqa batch or eval, or a --ray run's "
            "folder of Parquet files.",
            show_default=False,
            metavar="ROWS...",
        ),
    ],
    *,
    out_path: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path("report.html"),
    extremes: Annotated[
        int, typer.Option(min=0, help="How many lowest and highest pictures get a section of their own.")
    ] = 24,
    explain_worst: Annotated[
        int,
        typer.Option(
            min=0,
            help="Make explain panels (depth, attention, local quality) for the N lowest-scoring pictures now, "
            "with the model (--weights etc.; the run's crops and seed are read from the rows).",
        ),
    ] = 0,
    heatmaps: Annotated[
        Path | None,
        typer.Option(help="Take the explain panels from this folder, written by an earlier dgiqa batch --heatmaps."),
    ] = None,
    allow_mixed: Annotated[
        bool, typer.Option("--allow-mixed", help="Report rows made with different settings together.")
    ] = False,
    csv_safe: Annotated[
        bool, typer.Option("--csv-safe", help="The CSV files were written with dgiqa batch --csv-safe.")
    ] = False,
    title: Annotated[str | None, typer.Option(help="The page's title.", show_default=False)] = None,
    options: ScorerOptions,
    quiet: QuietOpt = False,
) -> None:
    """Write one self-contained HTML report of a run: its settings and counts, the score histogram with a
    threshold slider, a gallery of thumbnails, the lowest and highest pictures with their explain panels,
    and the failures.

    The file needs nothing else (no network, works from file://).

    Past 5,000 pictures the thumbnails go to a folder beside it (report_files/ for report.html).

    [dim]Examples:[/]

      dgiqa report scores.csv --out report.html

      dgiqa report scores/ --out report.html --heatmaps heatmaps/      (a --ray run's folder)

      dgiqa report scores.csv --explain-worst 12 --weights dgiqa-koniq
    """
    from dgiqa_cli.io.rows import OutputError, check_writable
    from dgiqa_cli.report import Report, read_rows

    setup_logging(quiet)
    if heatmaps is not None and not heatmaps.is_dir():
        raise fail(f"--heatmaps {printable(str(heatmaps))}: no such folder", EXIT_USAGE)
    try:
        check_writable(out_path)
    except OutputError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    rows = read_rows(rows_files, csv_safe)
    if not rows:
        raise fail(f"{', '.join(printable(str(p)) for p in rows_files)}: no rows", EXIT_USAGE)
    scorer = scorer_for(rows, allow_mixed, options) if explain_worst else None
    with progress_bar(quiet) as progress:
        made = Report(
            rows,
            scorer=scorer,
            explain_worst=explain_worst,
            heatmaps=heatmaps,
            extremes=extremes,
            allow_mixed=allow_mixed,
            title=title,
            sources=[str(p) for p in rows_files],
            on_progress=stage_progress(progress),
        )
    try:
        made.save(out_path)
    except OSError as exc:
        raise fail(f"{printable(str(out_path))}: {exc.strerror or exc}", EXIT_OUTPUT) from None
    if not quiet:
        err.print(
            f"{printable(str(out_path))}: {made.counts['scored']} scored, {made.counts['failed']} failed"
            + ("" if made.self_contained else f"; thumbnails in {printable(out_path.stem)}_files/"),
            highlight=False,
        )
    raise typer.Exit(EXIT_OK)


def scorer_for(rows: list[dict], allow_mixed: bool, options: ScorerOptions):
    """The model for --explain-worst, set up as the run was (crops, positions, seed from its rows), refused when
    its weights are not the ones that scored the run: the panels would explain other scores."""
    from dgiqa_cli.report import check_one_run

    settings = check_one_run(rows, allow_mixed)
    try:
        crops, seed = int(settings["crops"]), int(settings["seed"])
    except ValueError:
        raise fail("--explain-worst needs the rows' crops and seed (one run, not --allow-mixed)", EXIT_USAGE) from None
    weights = options.weights or settings["model"] or None
    crop_mode = settings["crop_mode"] or DEFAULT_CROP_MODE
    options = dataclasses.replace(options, weights=weights, crops=crops, seed=seed, crop_mode=crop_mode)
    scorer = options.build()
    if settings["weights_sha256"] and scorer.settings["weights_sha256"] != settings["weights_sha256"]:
        raise fail(
            f"--explain-worst: these weights (sha256 {scorer.settings['weights_sha256'][:12]}…) did not score the "
            f"rows (sha256 {settings['weights_sha256'][:12]}…); give the run's --weights",
            EXIT_USAGE,
        )
    return scorer
