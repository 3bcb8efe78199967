"""``dgiqa eval``: scores against human ratings, with bootstrap intervals and the protocol beside every number."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from dgiqa_cli.cli.common import (
    DatasetsArg,
    GroupColumnOpt,
    LabelsOpt,
    LowerIsBetterOpt,
    MosColumnOpt,
    PathColumnOpt,
    QuietOpt,
    RootOpt,
    SpaqResizeOpt,
    SplitColumnOpt,
    app,
    busy,
    err,
    fail,
    out,
    progress_bar,
    run_outcome,
    setup_logging,
)
from dgiqa_cli.cli.options import ScorerOptions, with_options
from dgiqa_cli.cli.running import load_labelled, save_report
from dgiqa_cli.errors import EXIT_FAILED, EXIT_OK, EXIT_OUTPUT, EXIT_USAGE
from dgiqa_cli.evaluation.metrics import MIN_UNITS
from dgiqa_cli.io.names import printable

SCORES_FILE = "scores.csv"  # dgiqa batch's rows, written as pictures finish: what --resume reads back


@app.command("eval")
@with_options()
def evaluate_command(
    datasets: DatasetsArg = None,
    *,
    labels: LabelsOpt = None,
    root: RootOpt = None,
    path_column: PathColumnOpt = "path",
    mos_column: MosColumnOpt = None,
    split_column: SplitColumnOpt = "split",
    group_column: GroupColumnOpt = "group",
    lower_is_better: LowerIsBetterOpt = False,
    split: Annotated[
        str | None,
        typer.Option(
            help="Which part to evaluate: test, validation, train or all. Default: the official test split "
            "where the set has one (KonIQ-10k; a split column), else all.",
            show_default=False,
        ),
    ] = None,
    predictions: Annotated[
        Path | None,
        typer.Option(
            help="Evaluate these scores instead of scoring: a dgiqa batch CSV/JSONL, or any CSV with path and "
            "score columns (another model's, say). Joined to the ratings on the picture's path.",
            show_default=False,
        ),
    ] = None,
    score_column: Annotated[str, typer.Option(help="Column of --predictions holding the scores.")] = "score",
    spaq_resize: SpaqResizeOpt = True,
    resamples: Annotated[
        int, typer.Option(min=0, help="Bootstrap resamples for the 95% intervals (0: no intervals).")
    ] = 1000,
    bootstrap_seed: Annotated[int, typer.Option(help="Seed of the bootstrap resampling.")] = 0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the results as JSON, and nothing else, on stdout.")
    ] = False,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write metrics.json, predictions.csv (path, mos, score, error), scatter.png and the scoring "
            "rows (scores.csv, for --resume) into this folder; one sub-folder per set when there are several.",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Keep the pictures already scored in --out and score only the rest.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace the results already in --out.")] = False,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Images per device batch. Default: 32 GPU, 1 CPU.", show_default=False)
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=0, help="Threads preparing images ahead of the device. Default: 1 on CPU.", show_default=False
        ),
    ] = None,
    options: ScorerOptions,
    quiet: QuietOpt = False,
) -> None:
    """Check scores against human ratings: SRCC, KRCC, PLCC, RMSE (raw and after the VQEG logistic fit), with
    seeded bootstrap 95% intervals and the protocol (data, split, weights by sha256, settings) beside them.

    Pictures that fail or are missing are counted and listed, never silently dropped; exit code 1 if any.

    [dim]Examples:[/]

      dgiqa eval /data/koniq10k --out results/koniq        (official test split, 20 crops)

      dgiqa eval /data/kadid10k /data/livec --weights dgiqa-koniq     (cross-data-set table)

      dgiqa eval --labels mine.csv --split all --lower-is-better

      dgiqa eval --labels mine.csv --predictions pyiqa_scores.csv     (any model's scores, no scoring)
    """
    from dgiqa_cli.evaluation.protocol import evaluate_predictions
    from dgiqa_cli.io.rows import lock_outputs

    setup_logging(quiet)
    sets = load_labelled(
        datasets, labels, root, path_column, mos_column, split_column, group_column, lower_is_better, spaq_resize
    )
    parts = [s.select(split if split is not None else s.default_split()) for s in sets]
    folders = output_folders(out_dir, parts, resume, overwrite)
    if predictions is not None:
        if not predictions.is_file():
            raise fail(f"--predictions {printable(str(predictions))}: no such file", EXIT_USAGE)
        reports = [
            evaluate_predictions(
                predictions,
                part,
                split=part.split,
                path_column=path_column,
                score_column=score_column,
                resamples=resamples,
                seed=bootstrap_seed,
            )
            for part in parts
        ]
    else:
        rows = [None if folder is None else folder / SCORES_FILE for folder in folders]
        kept = (
            "the scored pictures are kept in --out; run again with --resume to finish"
            if out_dir
            else "nothing was kept: give --out DIR to make a long evaluation resumable"
        )
        with run_outcome(kept), lock_outputs(rows):
            scorer = options.build()
            reports = [
                score_part(scorer, part, rows_file, resume, batch_size, workers, resamples, bootstrap_seed, quiet)
                for part, rows_file in zip(parts, rows, strict=True)
            ]
    if out_dir is not None:
        write_outputs(out_dir, folders, reports)
        write_reports(folders, reports, quiet)
    if as_json:
        sys.stdout.write(json.dumps([r.as_json() for r in reports], indent=2, ensure_ascii=False) + "\n")
    else:
        out.print(results_table(reports))
        out.print(protocol_lines(reports), highlight=False)
    left_out = [f for r in reports for f in r.failures]
    if not quiet:
        for failure in left_out:
            err.print(
                f"[red]{failure['status']}:[/] {escape(printable(failure['path']))}: {escape(str(failure['error']))}",
                highlight=False,
            )
    raise typer.Exit(EXIT_FAILED if left_out else EXIT_OK)


def score_part(scorer, part, rows_file, resume, batch_size, workers, resamples, seed, quiet):
    """Score one labelled set with a progress bar; failures are printed as they happen."""
    from dgiqa_cli.evaluation.protocol import evaluate_scorer, present_and_missing

    todo, _ = present_and_missing(part)
    with progress_bar(quiet) as progress:
        task = progress.add_task(f"Scoring {part.name}", total=len(todo), current="")

        def advance(result) -> None:
            progress.update(task, advance=1, current=printable(Path(result.path).name))

        report = evaluate_scorer(
            scorer,
            part,
            split=part.split,
            rows=rows_file,
            resume=resume,
            batch_size=batch_size,
            workers=workers,
            resamples=0,
            seed=seed,
            on_result=advance,
        )
    if resamples:  # the bootstrap refits the logistic 1000 times: seconds, worth a spinner
        from dgiqa_cli.evaluation.protocol import report as make_report

        with busy("Bootstrapping 95% intervals…", quiet):
            report = make_report(part, report.outcomes, report.protocol, resamples, seed)
    return report


def output_folders(out_dir: Path | None, parts, resume: bool, overwrite: bool) -> list[Path | None]:
    """Where each set's files go: ``--out`` itself for one set, a sub-folder per set (named dataset-split) for several.
    Existing results need --resume or --overwrite (exit 2)."""
    if out_dir is None:
        return [None] * len(parts)
    if out_dir.exists() and not out_dir.is_dir():
        raise fail(f"--out {printable(str(out_dir))}: exists and is not a folder", EXIT_USAGE)
    if len(parts) == 1:
        folders = [out_dir]
    else:
        names: list[str] = []
        for part in parts:
            name = f"{part.name}-{part.split}"
            while name in names:
                name += "-2"
            names.append(name)
        folders = [out_dir / name for name in names]
    existing = [f for f in folders if (f / SCORES_FILE).exists() or (f / "metrics.json").exists()]
    if existing and not (resume or overwrite):
        raise fail(
            f"{printable(str(existing[0]))} holds results already; add --resume to score only what it lacks, "
            "or --overwrite to start again",
            EXIT_USAGE,
        )
    try:
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
            if overwrite and not resume and (folder / SCORES_FILE).exists():
                (folder / SCORES_FILE).unlink()
    except OSError as exc:
        raise fail(f"--out {printable(str(out_dir))}: {exc.strerror or exc}", EXIT_OUTPUT) from None
    return folders


def write_outputs(out_dir: Path, folders: list[Path], reports) -> None:
    """metrics.json, predictions.csv and scatter.png per set; with several sets, all metrics also in out_dir."""
    from dgiqa_cli.evaluation.plots import scatter_plot
    from dgiqa_cli.evaluation.protocol import write_metrics, write_predictions

    try:
        for folder, report in zip(folders, reports, strict=True):
            write_metrics([report], folder / "metrics.json")
            write_predictions(report, folder / "predictions.csv")
            scatter_plot(report, folder / "scatter.png", score_name=score_axis(report))
        if len(reports) > 1:
            write_metrics(reports, out_dir / "metrics.json")
    except OSError as exc:
        raise fail(f"--out {printable(str(out_dir))}: {exc.strerror or exc}", EXIT_OUTPUT) from None


def write_reports(folders: list[Path], reports, quiet: bool) -> None:
    """report.html per set that was scored here (its scores.csv): the gallery, with the metrics and the scatter."""
    from dgiqa_cli.report import RowsError, read_rows

    for folder, report in zip(folders, reports, strict=True):
        if not (folder / SCORES_FILE).is_file():
            continue  # --predictions: no rows of ours to show
        try:
            rows = read_rows([folder / SCORES_FILE])
        except RowsError as exc:
            err.print(f"[bold red]error:[/] no report: {escape(str(exc))}", highlight=False)
            continue
        scatter = folder / "scatter.png"
        save_report(
            folder / "report.html",
            rows,
            quiet,
            title=f"dgiqa eval: {report.dataset} ({report.split})",
            evaluation=report.as_json(),
            scatter_png=scatter.read_bytes() if scatter.is_file() else None,
        )


def score_axis(report) -> str:
    model = report.protocol.get("model")
    return f"score ({Path(model).name})" if model else "score"


def _cell(report, key: str, interval: bool = True) -> str:
    value = report.metrics[key]
    if value is None or value != value:
        return "–"
    text = f"{value:.4f}"
    ci = report.metrics["ci95"].get(key)
    if interval and ci:
        text += f" [dim]\\[{ci[0]:.3f}, {ci[1]:.3f}][/]"
    return text


ROWS = (
    ("srcc", "SRCC"),
    ("krcc", "KRCC"),
    ("plcc", "PLCC"),
    ("rmse", "RMSE"),
    ("plcc_logistic", "PLCC (logistic)"),
    ("rmse_logistic", "RMSE (logistic)"),
)


def results_table(reports) -> Table:
    """Metrics down, data sets across (so several sets compare side by side), each value with its 95% interval."""
    table = Table(title="Agreement with human ratings", header_style="bold", title_style="bold")
    table.add_column("")
    for report in reports:
        table.add_column(f"{escape(report.dataset)}\n{report.split}", justify="right")
    for key, label in ROWS:
        table.add_row(label, *(_cell(report, key) for report in reports))
    table.add_section()
    table.add_row("scored", *(str(r.counts["scored"]) for r in reports))
    table.add_row("failed / missing", *(f"{r.counts['failed']} / {r.counts['missing']}" for r in reports))
    return table


def protocol_lines(reports) -> str:
    """The protocol under the table: what was scored, with what, and how the intervals were made."""
    lines = []
    for report in reports:
        p = report.protocol
        notes = "; ".join(p.get("notes") or [])
        lines.append(
            f"{report.dataset} ({report.split}, {p['split_size']} listed): {p['labels']}"
            + (f" — {notes}" if notes else "")
        )
    p = reports[0].protocol
    if "predictions" in p:
        made = ", ".join(f"{k} {p[k]}" for k in ("model", "weights_sha256", "crops", "precision") if k in p)
        lines.append(f"scores: {p['predictions']}" + (f" ({made})" if made else " (settings not recorded)"))
    else:
        lines.append(
            f"scores: {p['model']} ({p['arch']}, sha256 {p['weights_sha256'][:12]}…), depth {p['depth_model']}, "
            f"{p['crops']} crops ({p['crop_mode']}, seed {p['seed']}), {p['precision']}, {p['backend']}, "
            f"dgiqa {p['dgiqa']}; scale {p['score_scale']}"
        )
    boot = reports[0].metrics["bootstrap"]
    if boot["resamples"]:
        units = {r.metrics["bootstrap"]["unit"] for r in reports}
        by = units.pop() if len(units) == 1 else "group where the set has groups, else by image"
        lines.append(
            f"[..]: 95% percentile bootstrap, {boot['resamples']} resamples by {by}, seed {boot['seed']} "
            f"(none with fewer than {MIN_UNITS} units); logistic: VQEG 4-parameter, least squares"
        )
    return "\n".join(escape(line) for line in lines)
