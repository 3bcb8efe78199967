"""`dgiqa score` as a user meets it: output formats, exit codes, and bad inputs that never stop a run."""

from __future__ import annotations

import io
import json
import shutil

import cv2
import numpy as np
import pytest
from conftest import FIXTURES
from PIL import Image
from typer.testing import CliRunner

from dgiqa_cli.cli import app
from dgiqa_cli.io.rows import read_csv

runner = CliRunner()
GOOD = FIXTURES / "synthetic_480x640.png"


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def make_bad_and_odd_inputs(folder):
    """One file of every awkward kind; returns {path: expected error fragment, or None if it must score}."""
    rgb = cv2.cvtColor(cv2.imread(str(GOOD)), cv2.COLOR_BGR2RGB)
    cases = {}

    def add(name, expected, writer):
        path = folder / name
        writer(path)
        cases[path] = expected

    add("фото ü.png", None, lambda p: shutil.copy(GOOD, p))
    add("alpha.png", None, lambda p: Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 9, np.uint8)])).save(p))
    add("gray.png", None, lambda p: Image.fromarray(rgb[..., 1]).save(p))
    add("palette.png", None, lambda p: Image.fromarray(rgb).convert("P").save(p))
    add("deep16.png", None, lambda p: cv2.imwrite(str(p), rgb[..., ::-1].astype(np.uint16) * 257))
    add("cmyk.jpg", None, lambda p: Image.fromarray(rgb).convert("CMYK").save(p, quality=95))
    add("empty.jpg", "empty file (0 bytes)", lambda p: p.write_bytes(b""))
    add("notes.jpg", "not an image", lambda p: p.write_text("shopping list\n" * 40))
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG")
    add("cut.jpg", "truncated JPEG", lambda p: p.write_bytes(buf.getvalue()[:5000]))
    add("strip.png", "too thin to score (20000x30", lambda p: Image.new("RGB", (20000, 30)).save(p))
    add("tiny.png", "too small to score (3x3", lambda p: Image.new("RGB", (3, 3)).save(p))
    (folder / "a folder.png").mkdir()
    cases[folder / "a folder.png"] = "is a directory"
    cases[folder / "missing.png"] = "no such file"
    return cases


@pytest.mark.slow
def test_bad_inputs_each_get_a_result_and_the_run_goes_on(tmp_path, weight_args, scorer):
    cases = make_bad_and_odd_inputs(tmp_path)
    result = invoke("score", *cases, *weight_args, "--crops", "1", "--json", "--max-pixels", "100000000")
    assert result.exit_code == 1, result.stderr
    rows = {row["path"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {str(p) for p in cases}
    for path, expected_error in cases.items():
        row = rows[str(path)]
        if expected_error is None:
            assert row["error"] is None, (path, row)
            assert 0.0 <= row["score"] <= 1.0
        else:
            assert row["score"] is None and expected_error in row["error"], (path, row)
            assert f"failed: {path}: {expected_error}" in " ".join(result.stderr.split()), path
    # odd modes give exactly the score of the pixels OpenCV decodes them to
    good = scorer.score(GOOD).score
    assert rows[str(tmp_path / "фото ü.png")]["score"] == pytest.approx(good, abs=1e-6)
    assert rows[str(tmp_path / "alpha.png")]["score"] == pytest.approx(good, abs=1e-6)
    assert rows[str(tmp_path / "deep16.png")]["score"] == pytest.approx(good, abs=1e-6)
    palette = np.asarray(Image.open(tmp_path / "palette.png").convert("RGB"))
    assert rows[str(tmp_path / "palette.png")]["score"] == pytest.approx(scorer.score(palette).score, abs=1e-6)
    gray = np.asarray(Image.open(tmp_path / "gray.png"))
    assert rows[str(tmp_path / "gray.png")]["score"] == pytest.approx(scorer.score(gray).score, abs=1e-6)


def test_huge_pictures_are_refused_before_decoding(tmp_path, weight_args):
    Image.new("RGB", (4000, 3000)).save(tmp_path / "big.png")
    result = invoke("score", tmp_path / "big.png", *weight_args, "--max-pixels", "1000000", "--json")
    assert result.exit_code == 1
    (row,) = json.loads(result.stdout)
    assert row["error"] == "too large: 4000x3000 = 12 megapixels exceeds the limit of 1 (raise it with --max-pixels)"


@pytest.mark.slow
def test_table_and_csv_output(tmp_path, weight_args, pictures):
    csv_path = tmp_path / "scores.csv"
    result = invoke("score", *pictures, *weight_args, "--crops", "1", "--csv", csv_path)
    assert result.exit_code == 0, result.stderr
    assert "synthetic_480x640.png" in result.stdout and "score (0-1)" in result.stdout
    rows = read_csv(csv_path)
    assert [r["path"] for r in rows] == [str(p) for p in pictures]
    assert all(r["error"] is None and 0 < r["score"] < 1 and r["crops"] == 1 for r in rows)
    assert rows[0]["width"] == 640 and rows[0]["height"] == 480 and rows[0]["depth_model"] == "vits"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--crops", "0"], "Invalid value for '--crops'"),
        (["--crop-mode", "center"], "Invalid value for '--crop-mode'"),
        (["--precision", "fp8"], "Invalid value for '--precision'"),
        (["--weights", "dgiqa-nope"], "'dgiqa-nope' is not a registry name"),
        (["--weights", "nothing/here.pth"], "nothing/here.pth: no such weights file"),
        (["--csv", "no/such/dir/out.csv"], "the folder no/such/dir does not exist"),
    ],
)
def test_usage_errors_exit_2_with_a_clear_message(args, message):
    result = invoke("score", GOOD, *args)
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.split())
    assert result.stdout == ""


def test_missing_gpu_is_a_usage_error(weight_args):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    args = [a for a in weight_args if a not in ("--device", "cpu")]
    result = invoke("score", GOOD, *args, "--device", "cuda")
    assert result.exit_code == 2
    assert "PyTorch sees no CUDA GPU" in result.stderr


def test_help_teaches():
    result = invoke("score", "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for fragment in ("--weights", "DGIQA_Koniq10k.pth", "--crops", "--crop-mode", "--json", "--precision"):
        assert fragment in text
    top = invoke("--help")
    assert "dgiqa score photo.jpg" in top.stdout
