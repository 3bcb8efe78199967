"""`dgiqa eval` end to end: native layouts and labels files, through the real model on stand-in weights."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal

import cv2
import numpy as np
import pytest
import tiny_sets
from conftest import run_interrupted
from typer.testing import CliRunner

from dgiqa_cli.cli import app
from dgiqa_cli.evaluation.metrics import METRICS, evaluate
from dgiqa_cli.io.rows import read_csv

runner = CliRunner()
KEYS = {"dataset", "split", "n", *METRICS, "ci95", "protocol"}


def eval_run(*args, check_code: int | None = 0):
    """``dgiqa eval ARGS`` in this process (models come from the session's cache): stdout, stderr, exit code."""
    done = runner.invoke(app, ["eval", *map(str, args)], catch_exceptions=False)
    if check_code is not None:
        assert done.exit_code == check_code, done.stderr
    return done


@pytest.mark.slow
def test_koniq_layout_outputs_and_the_same_numbers_from_predictions(tmp_path, weight_args, standin_weights):
    root = tiny_sets.koniq(tmp_path / "koniq10k", levels=(0, 1, 2, 3, 4, 5, 6))
    out = tmp_path / "out"
    args = [*weight_args, "--crops", "2", "--resamples", "200"]
    scored = json.loads(eval_run(root, "--split", "all", "--out", out, "--json", *args).stdout)
    assert len(scored) == 1
    report = scored[0]
    assert set(report) >= KEYS and set(report["ci95"]) == set(METRICS)
    assert (report["dataset"], report["split"], report["n"]) == ("koniq10k", "all", 7)
    assert report["counts"] == {"listed": 7, "scored": 7, "failed": 0, "missing": 0}
    protocol = report["protocol"]
    sha = hashlib.sha256((standin_weights["model"] / "model.safetensors").read_bytes()).hexdigest()
    assert protocol["weights_sha256"] == sha
    assert (protocol["crops"], protocol["crop_mode"], protocol["seed"], protocol["depth_model"]) == (
        2,
        "official",
        42,
        "vits",
    )
    assert protocol["precision"] == "fp32" and protocol["backend"] == "torch" and protocol["split_size"] == 7
    assert any("official split" in note for note in protocol["notes"])

    # The files: metrics.json says what --json said; predictions.csv pairs every picture with its rating.
    assert json.loads((out / "metrics.json").read_text()) == scored
    with open(out / "predictions.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [row["path"] for row in table] == [str(root / "1024x768" / f"{1000 + i}.jpg") for i in range(7)]
    assert [float(row["mos"]) for row in table] == [tiny_sets.mos_of(level) for level in range(7)]
    scores = [float(row["score"]) for row in table]
    assert all(float(row["score_ci95_low"]) <= float(row["score"]) <= float(row["score_ci95_high"]) for row in table)
    again = evaluate(scores, [float(row["mos"]) for row in table], resamples=200, seed=0)
    for name in METRICS:
        assert report[name] == pytest.approx(again[name], abs=1e-9), name
        assert report["ci95"][name] == pytest.approx(again["ci95"][name], abs=1e-9), name
    rows = {row["path"]: row["score"] for row in read_csv(out / "scores.csv")}  # dgiqa batch's rows
    assert [rows[row["path"]] for row in table] == pytest.approx(scores, abs=0)
    picture = cv2.imread(str(out / "scatter.png"))
    assert picture is not None and picture.shape[1] >= 1000  # 300 dpi, one paper column wide

    # Evaluating those scores as predictions gives the same numbers, without loading a model.
    from_rows = json.loads(
        eval_run(root, "--split", "all", "--predictions", out / "scores.csv", "--json", "--resamples", "200").stdout
    )[0]
    assert (from_rows["n"], from_rows["counts"]) == (report["n"], report["counts"])
    # Same inputs to the last bit, but another process: the logistic fits (Levenberg-Marquardt, stopping at
    # scipy's ftol = xtol = 1e-8) may end a few ulps apart when BLAS sums in another order, so the numbers they
    # feed agree to ~1e-12, not bit for bit. 1e-9 is far below any difference a reader could see (4 decimals).
    for name in METRICS:
        assert from_rows[name] == pytest.approx(report[name], abs=1e-9), name
        assert from_rows["ci95"][name] == pytest.approx(report["ci95"][name], abs=1e-9), name
    assert from_rows["protocol"]["weights_sha256"] == sha  # read from the rows' own columns

    # Any model's CSV: path relative to the predictions file, score column named otherwise.
    other = tmp_path / "theirs.csv"
    with open(other, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "q"])
        w.writerows([[os.path.relpath(row["path"], tmp_path), row["score"]] for row in table])
    theirs = json.loads(
        eval_run(
            root,
            "--split",
            "all",
            "--predictions",
            other,
            "--path-column",
            "image",
            "--score-column",
            "q",
            "--json",
            "--resamples",
            "200",
        ).stdout
    )[0]
    assert theirs["srcc"] == report["srcc"] and theirs["plcc_logistic"] == pytest.approx(report["plcc_logistic"])
    assert "weights_sha256" not in theirs["protocol"]  # nothing claims what no row recorded


@pytest.mark.slow
def test_missing_and_broken_pictures_are_listed_and_the_rest_evaluated(tmp_path, weight_args):
    sets = ["training", "test", "test", "test", "test", "test", "training"]
    root = tiny_sets.koniq(tmp_path / "koniq10k", levels=(0, 1, 2, 3, 4, 5, 6), sets=sets)
    (root / "1024x768" / "1001.jpg").unlink()
    (root / "1024x768" / "1002.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    done = eval_run(root, "--json", *weight_args, "--crops", "1", "--resamples", "100", check_code=1)
    report = json.loads(done.stdout)[0]
    assert report["split"] == "test"  # KonIQ's official test split by default
    assert report["counts"] == {"listed": 5, "scored": 3, "failed": 1, "missing": 1}
    assert report["n"] == 3 and report["srcc"] is not None
    failures = {os.path.basename(f["path"]): f for f in report["failures"]}
    assert failures["1001.jpg"]["status"] == "missing" and failures["1001.jpg"]["error"] == "no such file"
    assert failures["1002.jpg"]["status"] == "failed" and failures["1002.jpg"]["error"]
    assert "missing:" in done.stderr and "1002.jpg" in done.stderr


@pytest.mark.slow
def test_a_killed_evaluation_resumes_scoring_each_picture_once(tmp_path, weight_args):
    labels = tiny_sets.labels_csv(tmp_path / "ratings.csv", levels=(0, 1, 2, 3, 4, 5, 6, 7))
    out = tmp_path / "out"
    command = ["dgiqa", "eval", "--labels", str(labels), "--out", str(out), *weight_args, "--crops", "1", "-q"]
    killed = run_interrupted(command, "row", 2, "SIGKILL")  # killed as the second row is written
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    rows_file = out / "scores.csv"
    assert len(read_csv(rows_file)) == 2

    again = eval_run("--labels", labels, "--out", out, *weight_args, "--crops", "1", check_code=2)
    assert "--resume" in again.stderr  # existing results are never overwritten silently
    eval_run("--labels", labels, "--out", out, *weight_args, "--crops", "1", "--resume", "--resamples", "100", "-q")
    rows = read_csv(rows_file)
    assert sorted(row["path"] for row in rows) == sorted(str(tmp_path / "pics" / f"p{i}.png") for i in range(8))
    metrics = json.loads((out / "metrics.json").read_text())[0]
    assert metrics["n"] == 8 and metrics["counts"]["scored"] == 8

    other = eval_run("--labels", labels, "--out", out, *weight_args, "--crops", "3", "--resume", check_code=2)
    assert "crops" in other.stderr  # rows made with other settings are never mixed in


@pytest.mark.slow
def test_spaq_photos_are_shrunk_as_the_usual_protocol_does(tmp_path, weight_args):
    root = tiny_sets.spaq(tmp_path / "SPAQ", levels=(0, 2, 4, 6, 8), size=(600, 800))
    out = tmp_path / "out"
    report = json.loads(
        eval_run(root, "--out", out, "--json", *weight_args, "--crops", "1", "--resamples", "0").stdout
    )[0]
    assert report["protocol"]["resize_short_side"] == 512 and report["n"] == 5
    assert report["ci95"]["srcc"] is None  # --resamples 0: no intervals
    rows = read_csv(out / "scores.csv")
    assert {(row["width"], row["height"]) for row in rows} == {(683, 512)}


def test_usage_errors_before_any_model_loads(tmp_path):
    done = eval_run(check_code=2)
    assert "give data-set folders, or ratings with --labels FILE" in done.stderr
    labels = tiny_sets.labels_csv(tmp_path / "ratings.csv", levels=(0, 1))
    done = eval_run("--labels", labels, "--split", "test", "--weights", "no-such-weights", check_code=2)
    assert "no images in split 'test'" in done.stderr
    done = eval_run(tmp_path / "pics", check_code=2)
    assert "not a known data-set layout" in done.stderr


def test_a_falling_ratings_file_is_evaluated_with_positive_agreement(tmp_path):
    """--lower-is-better: DMOS labels; the same predictions give the same SRCC as MOS labels."""
    labels = tiny_sets.labels_csv(tmp_path / "mos.csv", levels=(0, 1, 2, 3, 4, 5))
    dmos = tmp_path / "dmos.csv"
    with open(labels, newline="") as fh, open(dmos, "w", newline="") as out:
        w = csv.writer(out)
        for i, row in enumerate(csv.reader(fh)):
            w.writerow(row if i == 0 else [row[0], 6 - float(row[1])])
    predictions = tmp_path / "scores.csv"
    rng = np.random.default_rng(0)
    with open(predictions, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "score"])
        w.writerows([[f"pics/p{i}.png", 0.9 - 0.1 * i + rng.normal(0, 0.05)] for i in range(6)])
    options = ["--predictions", predictions, "--json", "--resamples", "100"]  # the intervals are not the point
    mos = json.loads(eval_run("--labels", labels, *options).stdout)[0]
    falling = json.loads(eval_run("--labels", dmos, "--lower-is-better", *options).stdout)[0]
    assert falling["srcc"] == pytest.approx(mos["srcc"]) and mos["srcc"] > 0.8
    assert falling["protocol"]["lower_is_better"] is True
