"""Scores against human ratings: score a labelled set (or read existing predictions), join, compute the metrics,
and keep the protocol beside every number.

Each listed picture ends as one :class:`Outcome`: ``scored``, ``failed`` (it exists but could not be scored;
the reason is kept) or ``missing`` (no such file, or no prediction for it). Metrics use the scored ones only,
and the counts of the other two are part of the report, so a number never hides what it left out.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dgiqa_cli.evaluation.labels import LabelledSet
from dgiqa_cli.evaluation.metrics import METRICS, evaluate
from dgiqa_cli.io.atomic import atomic_write
from dgiqa_cli.io.names import decode_path
from dgiqa_cli.version import __version__

SCORED, FAILED, MISSING = "scored", "failed", "missing"


@dataclass
class Outcome:
    """One listed picture: its rating, and its score or why there is none."""

    path: str
    name: str
    mos: float
    score: float | None = None
    error: str | None = None
    status: str = SCORED
    group: str | None = None
    # The spread of the picture's crop scores (blank with one crop, or when predictions do not say).
    score_std: float | None = None
    score_ci95_low: float | None = None
    score_ci95_high: float | None = None


SPREAD = ("score_std", "score_ci95_low", "score_ci95_high")


@dataclass
class EvalReport:
    """Metrics of one labelled set, with the protocol that produced them and every picture's outcome."""

    dataset: str
    split: str
    metrics: dict
    protocol: dict
    outcomes: list[Outcome] = field(repr=False)

    @property
    def counts(self) -> dict[str, int]:
        statuses = [o.status for o in self.outcomes]
        return {"listed": len(statuses), **{s: statuses.count(s) for s in (SCORED, FAILED, MISSING)}}

    @property
    def failures(self) -> list[dict]:
        return [{"path": o.path, "status": o.status, "error": o.error} for o in self.outcomes if o.status != SCORED]

    def as_json(self) -> dict:
        """The report as ``dgiqa eval --json`` prints it (one object per data set)."""
        return {
            "dataset": self.dataset,
            "split": self.split,
            "n": self.metrics["n"],
            **{name: _finite(self.metrics[name]) for name in METRICS},
            "ci95": self.metrics["ci95"],
            "counts": self.counts,
            "logistic": self.metrics["logistic"],
            "bootstrap": self.metrics["bootstrap"],
            "protocol": self.protocol,
            "failures": self.failures,
        }


def _finite(value):
    return None if value is None or value != value else value  # NaN -> null: JSON has no NaN


# -- scoring a labelled set ------------------------------------------------------------------------------------------


def present_and_missing(labelled: LabelledSet) -> tuple[list[str], dict[str, Outcome]]:
    """Paths to score (each once, in label order), and an outcome for each listed picture whose file is absent."""
    todo, missing, seen = [], {}, set()
    for image in labelled.images:
        if image.path in seen:
            continue
        seen.add(image.path)
        if os.path.lexists(image.path):
            todo.append(image.path)
        else:
            missing[image.path] = Outcome(image.path, image.name, image.mos, error="no such file", status=MISSING)
    return todo, missing


def shrinker(labelled: LabelledSet):
    """The per-picture resize a data set's usual protocol asks for (SPAQ), as a batch-engine transform."""
    if labelled.short_side is None:
        return None
    from dgiqa_cli.inference import preprocess as pp

    def shrink(image):
        return dataclasses.replace(image, rgb=pp.shrink_short_side(image.rgb, labelled.short_side))

    return shrink


def evaluate_scorer(
    scorer,
    labelled: LabelledSet,
    *,
    split: str | None = None,
    rows: str | os.PathLike | None = None,
    resume: bool = False,
    batch_size: int | None = None,
    workers: int | None = None,
    resamples: int = 1000,
    seed: int = 0,
    on_result: Callable | None = None,
) -> EvalReport:
    """Score the pictures of ``split`` (default: the official test split, else all) with ``scorer`` and evaluate.

    ``rows``: a CSV that receives each picture's row as it is scored (``dgiqa batch``'s columns); with
    ``resume`` the rows already there are kept and only the pictures they lack are scored, so an interrupted
    evaluation scores every picture once. ``on_result(result)`` is called for each newly scored picture.
    """
    from dgiqa_cli.inference.engine import BatchRunner, default_batch_size, default_workers
    from dgiqa_cli.io.rows import CsvWriter, check_resume, completed_paths, read_rows

    part = labelled.select(split if split is not None else labelled.default_split())
    todo, missing = present_and_missing(part)
    scored: dict[str, dict] = {}  # path -> its row: score, error and the crops' spread
    writer = None
    if rows is not None:
        if resume:
            check_resume(rows, scorer.settings)  # rows of other settings must not be mixed into these metrics
        done = completed_paths(rows) if resume else set()
        if done:
            for row in read_rows(rows):
                scored[row["path"]] = row
        writer = CsvWriter(rows, append=resume, settings=scorer.settings)
    runner = BatchRunner(
        scorer,
        batch_size=batch_size or default_batch_size(scorer.device),
        workers=default_workers(scorer.device) if workers is None else workers,
        transform=shrinker(part),
    )

    def keep(result) -> None:
        if writer is not None:
            writer.write(result)
        scored[result.path] = result.as_dict()
        if on_result is not None:
            on_result(result)

    try:
        runner.run([p for p in todo if p not in scored], keep)
    finally:
        if writer is not None:
            writer.close()
    outcomes = []
    for image in part.images:
        if image.path in missing:
            outcomes.append(dataclasses.replace(missing[image.path], group=image.group))
            continue
        row = scored[image.path]
        status = SCORED if row["error"] is None and row["score"] is not None else FAILED
        spread = {key: row.get(key) for key in SPREAD}
        outcomes.append(
            Outcome(image.path, image.name, image.mos, row["score"], row["error"], status, image.group, **spread)
        )
    return report(part, outcomes, scorer_protocol(scorer, part), resamples, seed)


def scorer_protocol(scorer, part: LabelledSet) -> dict:
    """Everything that made the numbers: the data, the weights (by hash), the scoring settings, the version."""
    settings = scorer.settings
    return {
        **data_protocol(part),
        "model": settings["model"],
        "arch": scorer.arch,
        "weights_sha256": settings["weights_sha256"],
        "depth_model": settings["depth_model"],
        "crops": settings["crops"],
        "crop_mode": settings["crop_mode"],
        "seed": settings["seed"],
        "precision": settings["precision"],
        "backend": settings["backend"],
        "score_scale": scorer.scale,
        "dgiqa": __version__,
    }


def data_protocol(part: LabelledSet) -> dict:
    return {
        "dataset": part.name,
        "split": part.split,
        "split_size": len(part),
        "labels": part.source,
        "lower_is_better": part.lower_is_better,
        "resize_short_side": part.short_side,
        "notes": list(part.notes),
    }


def report(part: LabelledSet, outcomes: list[Outcome], protocol: dict, resamples: int, seed: int) -> EvalReport:
    kept = [o for o in outcomes if o.status == SCORED]
    groups = [o.group for o in kept] if any(o.group is not None for o in kept) else None
    metrics = evaluate(
        [o.score for o in kept],
        [o.mos for o in kept],
        groups=groups,
        resamples=resamples,
        seed=seed,
        lower_is_better=part.lower_is_better,
    )
    return EvalReport(part.name, part.split, metrics, protocol, outcomes)


# -- existing predictions --------------------------------------------------------------------------------------------

#: Settings columns of a ``dgiqa batch`` output, copied into the protocol when every row agrees on them.
_ROW_SETTINGS = ("model", "weights_sha256", "depth_model", "crops", "crop_mode", "seed", "precision", "backend")


def read_predictions(path: str | os.PathLike, path_column: str = "path", score_column: str = "score") -> list[dict]:
    """Rows of a ``dgiqa batch`` CSV/JSONL, or of any CSV with ``path`` and ``score`` columns (blank: failed)."""
    from dgiqa_cli.evaluation.labels import LabelsError
    from dgiqa_cli.io.rows import read_rows

    try:
        rows = read_rows(path)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise LabelsError(f"{path}: cannot read the predictions ({exc})") from None
    if not rows:
        raise LabelsError(f"{path}: no predictions in it")
    for key in (path_column, score_column):
        if key not in rows[0]:
            have = ", ".join(map(str, rows[0]))
            raise LabelsError(f"{path}: no {key} column; it has {have} (--path-column / --score-column)")
    out = []
    for row in rows:
        value, error = row.get(score_column), row.get("error")
        try:
            score = None if value in (None, "") else float(value)
        except (TypeError, ValueError):
            score, error = None, error or f"score {value!r} is not a number"
        out.append({**row, "path": decode_path(str(row[path_column])), "score": score, "error": error})
    return out


def evaluate_predictions(
    predictions: str | os.PathLike,
    labelled: LabelledSet,
    *,
    split: str | None = None,
    path_column: str = "path",
    score_column: str = "score",
    resamples: int = 1000,
    seed: int = 0,
) -> EvalReport:
    """Evaluate scores someone already computed (any model), joined to the labels on the picture's path."""
    part = labelled.select(split if split is not None else labelled.default_split())
    rows = read_predictions(predictions, path_column, score_column)
    found = match_rows(part, rows, Path(predictions).parent)
    outcomes = []
    for image in part.images:
        row = found.get(image.path)
        if row is None:
            outcomes.append(Outcome(image.path, image.name, image.mos, None, "no prediction", MISSING, image.group))
            continue
        ok = row["score"] is not None and not row.get("error")
        error = None if ok else row.get("error") or "no score"
        status = SCORED if ok else FAILED
        spread = {key: _float_or_none(row.get(key)) for key in SPREAD}
        outcomes.append(Outcome(image.path, image.name, image.mos, row["score"], error, status, image.group, **spread))
    protocol = {**data_protocol(part), "predictions": str(predictions), **agreed_settings(rows), "dgiqa": __version__}
    return report(part, outcomes, protocol, resamples, seed)


def match_rows(part: LabelledSet, rows: list[dict], base: Path) -> dict[str, dict]:
    """Prediction rows by the labelled picture they belong to.

    A row's path matches a picture when both name the same file (relative rows read against the working
    folder, the predictions' folder or the labels' root), or when it equals the name the labels give; failing
    both, by file name alone when every picture's file name is unique.
    """
    by_file, by_name, by_base = {}, {}, {}
    for row in rows:
        text = row["path"]
        by_name.setdefault(text, row)
        for root in (Path.cwd(), base, Path(part.root or ".")):  # where a relative path was most likely made
            by_file.setdefault(_canonical(text if os.path.isabs(text) else os.path.join(root, text)), row)
        by_base.setdefault(os.path.basename(text), []).append(row)
    bases = [os.path.basename(image.path) for image in part.images]
    unique_bases = len(set(bases)) == len(bases)
    found = {}
    for image in part.images:
        row = by_file.get(_canonical(image.path)) or by_name.get(image.name) or by_name.get(image.path)
        if row is None and unique_bases:
            candidates = by_base.get(os.path.basename(image.path), [])
            row = candidates[0] if len(candidates) == 1 else None
        if row is not None:
            found[image.path] = row
    return found


def _float_or_none(value) -> float | None:
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def _canonical(path: str) -> str:
    return os.path.normcase(os.path.normpath(os.path.abspath(path)))


def agreed_settings(rows: list[dict]) -> dict:
    """The scoring settings a predictions file records, where all its rows agree (a ``dgiqa batch`` output)."""
    out = {}
    for key in _ROW_SETTINGS:
        values = {row.get(key) for row in rows}
        if len(values) == 1 and None not in values:
            out[key] = values.pop()
    return out


# -- files -----------------------------------------------------------------------------------------------------------

PREDICTION_FIELDS = ("path", "mos", "score", "error", "status", "group", *SPREAD)


def write_predictions(report: EvalReport, path: str | os.PathLike) -> None:
    """The per-picture table (path, mos, score, error, status, group, the crops' spread), written whole then
    moved into place."""
    import csv

    from dgiqa_cli.io.names import encode_path

    def cells(outcome: Outcome) -> list:
        values = dataclasses.asdict(outcome)
        values["path"] = encode_path(outcome.path)
        return ["" if values[k] is None else values[k] for k in PREDICTION_FIELDS]

    _write_atomically(path, lambda fh: csv.writer(fh).writerows([PREDICTION_FIELDS, *map(cells, report.outcomes)]))


def write_metrics(reports: list[EvalReport], path: str | os.PathLike) -> None:
    """``metrics.json``: one object per data set, as ``--json`` prints them."""
    import json

    text = json.dumps([r.as_json() for r in reports], indent=2, ensure_ascii=False)
    _write_atomically(path, lambda fh: fh.write(text + "\n"))


def _write_atomically(path, write) -> None:
    with atomic_write(path, "w", newline="") as fh:
        write(fh)
