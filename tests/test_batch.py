"""`dgiqa batch`: same scores as `dgiqa score`, resumable after a kill, every bad input a row."""

from __future__ import annotations

import os
import shutil
import signal
import time

import cv2
import numpy as np
import pytest
import torch
from conftest import FIXTURES, PICTURES, run_interrupted
from PIL import Image
from typer.testing import CliRunner

from dgiqa_cli.cli import app
from dgiqa_cli.inference.engine import BatchRunner
from dgiqa_cli.io.discover import collect_inputs
from dgiqa_cli.io.rows import completed_paths, drop_partial_last_row, read_csv, read_jsonl

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def picture_folder(folder, sizes=((480, 640), (600, 400), (480, 640))):
    """Pictures of several sizes (two share a size, so depth maps batch by shape) from the fixtures."""
    folder.mkdir(parents=True, exist_ok=True)
    base = cv2.imread(str(FIXTURES / PICTURES[0]))
    paths = []
    for i, (h, w) in enumerate(sizes):
        path = folder / f"img{i:02d}.png"
        cv2.imwrite(str(path), cv2.resize(base, (w, h), interpolation=cv2.INTER_AREA) if (h, w) != (480, 640) else base)
        paths.append(str(path))
    return paths


@pytest.mark.slow
def test_batch_scores_equal_score_scores_in_fp32(tmp_path, scorer):
    paths = picture_folder(tmp_path / "pics")
    rows = []
    stats = BatchRunner(scorer, batch_size=3, workers=2).run(paths, rows.append)
    assert (stats.scored, stats.failed) == (3, 0)
    assert [r.path for r in rows] == paths  # input order
    for row in rows:
        single = scorer.score(row.path)
        assert row.score == pytest.approx(single.score, abs=1e-5), row.path
        assert row.crop_scores == pytest.approx(single.crop_scores, abs=1e-5)


def test_collects_images_recursively_in_a_fixed_order(tmp_path):
    for rel in ("b/2.jpg", "b/1.PNG", "a.jpg", "a/z.webp", "a/notes.txt", "c/d/e.tif"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "c" / "loop").symlink_to(tmp_path)  # a link loop
    found = [os.path.relpath(p, tmp_path) for p in collect_inputs([tmp_path])]
    assert found == ["a.jpg", "a/z.webp", "b/1.PNG", "b/2.jpg", "c/d/e.tif"]
    assert [os.path.relpath(p, tmp_path) for p in collect_inputs([tmp_path], recursive=False)] == ["a.jpg"]
    assert [os.path.relpath(p, tmp_path) for p in collect_inputs([tmp_path], pattern="*.jpg")] == ["a.jpg", "b/2.jpg"]
    assert [os.path.relpath(p, tmp_path) for p in collect_inputs([tmp_path], pattern="b/*")] == ["b/1.PNG", "b/2.jpg"]
    listing = tmp_path / "list.txt"
    listing.write_text(f"# chosen\n{tmp_path / 'a.jpg'}\n\n{tmp_path / 'gone.jpg'}\n")
    assert collect_inputs([], from_list=str(listing)) == [str(tmp_path / "a.jpg"), str(tmp_path / "gone.jpg")]


@pytest.mark.slow
def test_every_bad_input_becomes_a_row_and_the_run_goes_on(tmp_path, weight_args):
    folder = tmp_path / "mixed"
    good = picture_folder(folder, sizes=((480, 640),))
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.png").write_text("not a picture at all\n" * 30)
    data = (FIXTURES / PICTURES[1]).read_bytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 3])
    rng = np.random.default_rng(0)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    Image.new("RGB", (3000, 2000)).save(folder / "large.png")
    listing = tmp_path / "list.txt"
    listing.write_text(str(tmp_path / "deleted-meanwhile.jpg") + "\n")
    jsonl = tmp_path / "out" / "rows.jsonl"
    jsonl.parent.mkdir()
    result = invoke(
        "batch",
        folder,
        "--from-list",
        listing,
        *weight_args,
        "--crops",
        "1",
        "--jsonl",
        jsonl,
        "--max-pixels",
        "5000000",
        "--summary",
    )
    assert result.exit_code == 1, result.stderr
    rows = {os.path.basename(r["path"]): r for r in read_jsonl(jsonl)}
    expected = {
        "zero.jpg": "empty file (0 bytes)",
        "text.png": "not an image",
        "cut.png": "corrupt or truncated",
        "corrupt.jpg": "truncated JPEG",
        "large.png": "too large: 3000x2000 = 6 megapixels exceeds the limit of 5",
        "deleted-meanwhile.jpg": "no such file",
    }
    assert set(rows) == set(expected) | {os.path.basename(good[0])}
    for name, reason in expected.items():
        assert rows[name]["score"] is None and reason in rows[name]["error"], rows[name]
    assert rows["img00.png"]["error"] is None and 0 < rows["img00.png"]["score"] < 1
    stderr = " ".join(result.stderr.split())
    assert "1 scored, 6 failed, 0 skipped" in stderr
    assert "scores: min" in stderr and "lowest 1:" in stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_permission_denied_is_a_row(tmp_path, scorer):
    path = tmp_path / "locked.png"
    shutil.copy(FIXTURES / PICTURES[0], path)
    path.chmod(0)
    rows = []
    BatchRunner(scorer, batch_size=2, workers=1).run([str(path)], rows.append)
    assert rows[0].error == "permission denied"


def test_unreadable_file_is_a_row_even_for_root(tmp_path, scorer, monkeypatch):
    """The same path as above, by making the open itself fail as it does without permission."""
    target = tmp_path / "x.png"
    shutil.copy(FIXTURES / PICTURES[0], target)
    real_open = os.open

    def refuse(path, *args, **kwargs):
        if os.fspath(path) == str(target):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    rows = []
    BatchRunner(scorer, batch_size=2, workers=1).run([str(target)], rows.append)
    assert rows[0].error == "permission denied"


@pytest.mark.parametrize(
    ("option", "target", "message"),
    [
        ("--csv", "missing/dir/out.csv", "the folder {tmp}/missing/dir does not exist"),
        ("--jsonl", ".", "is a directory, not a file"),
    ],
)
def test_unwritable_output_fails_before_any_work(tmp_path, option, target, message):
    picture_folder(tmp_path / "pics", sizes=((480, 640),))
    started = time.perf_counter()
    result = invoke("batch", tmp_path / "pics", option, tmp_path / target if target != "." else tmp_path)
    assert result.exit_code == 2
    assert message.format(tmp=tmp_path) in " ".join(result.stderr.split())
    assert time.perf_counter() - started < 5  # refused before loading any model


def test_existing_output_needs_resume_or_overwrite(tmp_path):
    (tmp_path / "out.csv").write_text("path,score\n")
    result = invoke("batch", FIXTURES, "--csv", tmp_path / "out.csv")
    assert result.exit_code == 2
    assert "add --resume" in result.stderr and "--overwrite" in result.stderr


def test_a_torn_last_row_is_cut_before_appending(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"path": "a.png", "score": 0.5}\n{"path": "b.png", "sco')
    assert completed_paths(path) == {"a.png"}
    assert path.read_text() == '{"path": "a.png", "score": 0.5}\n'
    drop_partial_last_row(path)  # idempotent
    assert path.read_text().count("\n") == 1


@pytest.mark.slow
def test_resume_after_a_killed_run_scores_every_image_exactly_once(tmp_path, weight_args):
    paths = picture_folder(tmp_path / "pics", sizes=((480, 640), (600, 400), (300, 500), (400, 400), (384, 700)))
    csv_path, jsonl_path = tmp_path / "rows.csv", tmp_path / "rows.jsonl"
    command = [
        shutil.which("dgiqa"),
        "batch",
        str(tmp_path / "pics"),
        *weight_args,
        "--crops",
        "1",
        "--batch-size",
        "1",
        "--workers",
        "1",
        "--csv",
        str(csv_path),
        "--jsonl",
        str(jsonl_path),
    ]
    # Killed right after the second picture's rows are in both files (each picture writes two rows).
    killed = run_interrupted(command, "row", 4, "SIGKILL")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(read_csv(csv_path)) == 2 and len(read_jsonl(jsonl_path)) == 2

    result = invoke(
        "batch", tmp_path / "pics", *weight_args, "--crops", "1", "--csv", csv_path, "--jsonl", jsonl_path, "--resume"
    )
    assert result.exit_code == 0, result.stderr
    for rows in (read_csv(csv_path), read_jsonl(jsonl_path)):
        assert sorted(r["path"] for r in rows) == sorted(paths)  # each exactly once
        assert all(r["error"] is None and 0 < r["score"] < 1 for r in rows)
    assert f"{len(paths) - 2} scored, 0 failed, 2 skipped" in " ".join(result.stderr.split())
    again = invoke("batch", tmp_path / "pics", *weight_args, "--crops", "1", "--csv", csv_path, "--resume")
    assert again.exit_code == 0
    assert f"0 scored, 0 failed, {len(paths)} skipped" in " ".join(again.stderr.split())
    assert len(read_csv(csv_path)) == len(paths)


def test_table_when_no_output_file(tmp_path, weight_args):
    picture_folder(tmp_path / "pics", sizes=((300, 400),))
    result = invoke("batch", tmp_path / "pics", *weight_args, "--crops", "1")
    assert result.exit_code == 0, result.stderr
    assert "img00.png" in result.stdout and "score (0-1)" in result.stdout


class OutOfMemoryAbove:
    """Wraps a real Scorer; its score_batch runs out of 'GPU memory' for batches larger than ``limit``."""

    def __init__(self, scorer, limit):
        self.scorer, self.limit, self.sizes = scorer, limit, []

    def __getattr__(self, name):
        return getattr(self.scorer, name)

    def score_batch(self, batch):
        self.sizes.append(len(batch))
        if len(batch) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.scorer.score_batch(batch)


@pytest.mark.slow
def test_out_of_memory_halves_the_batch_and_the_run_goes_on(tmp_path, scorer):
    paths = picture_folder(tmp_path / "pics", sizes=((300, 400),) * 3)
    flaky = OutOfMemoryAbove(scorer, limit=1)
    batch_runner = BatchRunner(flaky, batch_size=3, workers=1)
    rows = []
    stats = batch_runner.run(paths, rows.append)
    assert stats.scored == 3 and [r.path for r in rows] == paths
    assert batch_runner.batch_size == 1
    assert flaky.sizes == [3, 1, 2, 1, 1]
    assert all(r.score == pytest.approx(rows[0].score, abs=1e-5) for r in rows)  # same picture, same score


@pytest.mark.slow
def test_heatmaps_for_the_worst_images(tmp_path, weight_args):
    paths = picture_folder(tmp_path / "pics" / "sub", sizes=((300, 400), (400, 300)))
    csv_path = tmp_path / "rows.csv"
    args = ["batch", tmp_path / "pics", *weight_args, "--crops", "1", "--csv", csv_path]
    result = invoke(*args, "--heatmaps", tmp_path / "maps", "--heatmaps-worst", "1")
    assert result.exit_code == 0, result.stderr
    worst = min(read_csv(csv_path), key=lambda r: r["score"])
    stem = os.path.splitext(os.path.basename(worst["path"]))[0]
    panels = sorted(p.name for p in (tmp_path / "maps").rglob("*_explain.png"))
    assert panels == [f"{stem}_explain.png"]
    depth_map = next((tmp_path / "maps").rglob(f"{stem}_depth.png"))
    with Image.open(depth_map) as img:
        assert img.size == (worst["width"], worst["height"])
    assert len(paths) == 2
    usage = invoke("batch", tmp_path / "pics", "--heatmaps-worst", "1")
    assert usage.exit_code == 2 and "--heatmaps-worst needs --heatmaps DIR" in usage.stderr


@pytest.mark.slow
def test_half_precision_path_runs_on_cpu_close_to_fp32(standin_weights, scorer):
    """The bf16 autocast path (the default on GPUs) exercised on the CPU: same pipeline, scores close."""
    from dgiqa_cli import Scorer

    half = Scorer(
        standin_weights["model"],
        depth_model="vits",
        depth_weights=standin_weights["depth"],
        crops=1,
        device="cpu",
        precision="bf16",
    )
    assert half.precision == "bf16" and not half.exact
    rows = []
    BatchRunner(half, batch_size=1, workers=1).run([str(FIXTURES / PICTURES[0])], rows.append)
    assert rows[0].ok
    assert rows[0].score == pytest.approx(scorer.score(rows[0].path).score, abs=5e-3)
