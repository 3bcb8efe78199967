"""Issue 10 through the real command line: odd files, odd names, failing outputs, two runs, SIGTERM."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import FIXTURES, PICTURES, run_interrupted
from typer.testing import CliRunner

from dgiqa_cli.cli import app
from dgiqa_cli.io.rows import lock_outputs, read_csv, read_jsonl

runner = CliRunner()
GOOD = FIXTURES / PICTURES[0]


def invoke(*args):
    return runner.invoke(app, [os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in args])


def odd_folder(folder):
    """A good picture, a FIFO and a link to /dev/zero named like pictures, a non-UTF-8 name, a broken .ico."""
    folder.mkdir()
    shutil.copy(GOOD, folder / "a_good.png")
    os.mkfifo(folder / "b_fifo.jpg")
    os.symlink("/dev/zero", folder / "c_zero.jpg")
    latin1 = os.fsencode(folder) + b"/d_caf\xe9.png"
    shutil.copy(GOOD, latin1)
    (folder / "e_odd.tif").write_bytes(b"\x00\x00\x01\x00\x01\x00\x10\x10" + b"\xff" * 40)
    return os.fsdecode(latin1)


@pytest.mark.slow
def test_odd_folder_gives_a_row_for_every_file_and_resumes(tmp_path, weight_args):
    odd_name = odd_folder(tmp_path / "odd")
    csv_path, jsonl_path = tmp_path / "rows.csv", tmp_path / "rows.jsonl"
    args = ("batch", tmp_path / "odd", *weight_args, "--crops", "1", "--csv", csv_path, "--jsonl", jsonl_path)
    started = time.perf_counter()
    result = invoke(*args)
    assert time.perf_counter() - started < 120  # nothing hangs on the FIFO or reads /dev/zero forever
    assert result.exit_code == 1, result.stderr
    for rows in (read_csv(csv_path), read_jsonl(jsonl_path)):
        by_name = {os.path.basename(r["path"]): r for r in rows}
        assert len(rows) == 5 and os.path.basename(odd_name) in by_name  # the non-UTF-8 name round-trips
        assert by_name["a_good.png"]["score"] == pytest.approx(by_name[os.path.basename(odd_name)]["score"])
        assert by_name["a_good.png"]["decoder"] == "opencv"
        assert "FIFO" in by_name["b_fifo.jpg"]["error"] and "character device" in by_name["c_zero.jpg"]["error"]
        assert by_name["e_odd.tif"]["error"] and by_name["e_odd.tif"]["score"] is None
        assert all(r["crops"] == 1 and r["weights_sha256"] and r["precision"] == "fp32" for r in rows)
    csv_path.read_bytes().decode("utf-8")  # valid UTF-8, for every reader
    assert "d_caf\\xe9.png" in csv_path.read_text()
    assert "\x1b" not in result.stderr

    again = invoke(*args, "--resume")
    assert again.exit_code == 0, again.stderr
    assert "0 scored, 0 failed, 5 skipped" in " ".join(again.stderr.split())
    assert len(read_csv(csv_path)) == 5 and len(read_jsonl(jsonl_path)) == 5


@pytest.mark.slow
def test_score_keeps_the_good_result_beside_odd_files(tmp_path, weight_args):
    odd_name = odd_folder(tmp_path / "odd")
    result = invoke("score", GOOD, tmp_path / "odd" / "e_odd.tif", odd_name, *weight_args, "--crops", "1", "--json")
    assert result.exit_code == 1
    rows = json.loads(result.stdout.encode("utf-8"))  # valid UTF-8 JSON
    assert rows[0]["score"] is not None and rows[1]["error"] and rows[1]["score"] is None
    assert rows[2]["path"].endswith("d_caf\\xe9.png") and rows[2]["score"] == pytest.approx(rows[0]["score"])
    assert "Traceback" not in result.stderr


def test_resume_refuses_rows_made_with_other_settings(tmp_path, weight_args):
    out = tmp_path / "rows.csv"
    out.write_text(
        "path,score,width,height,crops,arch,model,depth_model,scale,error,weights_sha256,crop_mode,seed,"
        "precision,backend,decoder\n"
        '/x/a.png,0.5,640,480,3,dgiqa,w.pth,vits,"0 to 1, higher is better",,abc,official,42,fp32,torch,opencv\n'
    )
    started = time.perf_counter()
    result = invoke("batch", FIXTURES, *weight_args, "--crops", "1", "--csv", out, "--resume")
    assert result.exit_code == 2
    text = " ".join(result.stderr.split())
    assert "crops=3" in text and "crops=1" in text
    assert time.perf_counter() - started < 5  # refused before any model is loaded


def test_a_second_run_on_the_same_output_fails_at_once(tmp_path, weight_args):
    out = tmp_path / "rows.csv"
    with lock_outputs([out]):  # the first run holds the output
        started = time.perf_counter()
        result = invoke("batch", FIXTURES, *weight_args, "--csv", out, "--overwrite")
    assert result.exit_code == 75
    assert "being written by another dgiqa run" in " ".join(result.stderr.split())
    assert time.perf_counter() - started < 5


def test_dash_means_stdout(tmp_path, weight_args, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("batch", GOOD, *weight_args, "--crops", "1", "--jsonl", "-", "--quiet")
    assert result.exit_code == 0, result.stderr
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["path"] == str(GOOD) and 0 < row["score"] < 1
    assert not (tmp_path / "-").exists()
    both = invoke("batch", GOOD, *weight_args, "--jsonl", "-", "--csv", "-")
    assert both.exit_code == 2


def test_a_full_device_is_refused_in_one_line(tmp_path, weight_args):
    result = invoke("batch", GOOD, *weight_args, "--csv", "/dev/full")
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def copies_of_good(folder, count: int):
    """A folder of ``count`` copies of the good picture, ``p0.png`` ... (a run long enough to stop halfway)."""
    folder.mkdir()
    for i in range(count):
        shutil.copy(GOOD, folder / f"p{i}.png")
    return folder


def _run_limited(command, limit):
    """Run ``command`` with a file-size limit: writes past it fail (EFBIG) as on a full disk."""

    def limit_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(command, capture_output=True, text=True, preexec_fn=limit_files, timeout=300)


@pytest.mark.slow
def test_disk_filling_mid_run_exits_74_with_whole_rows(tmp_path, weight_args):
    pics = copies_of_good(tmp_path / "pics", 4)
    out = tmp_path / "rows.csv"
    command = [shutil.which("dgiqa"), "batch", str(pics), *weight_args, "--crops", "1", "--csv", str(out)]
    done = _run_limited(command, 700)  # the header and a row or two fit, not four rows
    assert done.returncode == 74, done.stderr
    assert "Traceback" not in done.stderr and "rows.csv" in done.stderr
    rows = read_csv(out)
    assert 1 <= len(rows) < 4 and all(r["score"] is not None for r in rows)
    assert out.read_text().endswith("\n")  # no torn row


@pytest.mark.slow
def test_sigterm_keeps_rows_and_says_how_to_resume(tmp_path, weight_args):
    pics = copies_of_good(tmp_path / "pics", 6)
    out = tmp_path / "rows.csv"
    command = [shutil.which("dgiqa"), "batch", str(pics), *weight_args, "--crops", "1", "--csv", str(out)]
    done = run_interrupted(command, "row", 1, "SIGTERM")  # terminated as its first row is written
    assert done.returncode == 143
    assert "--resume" in done.stderr and "Traceback" not in done.stderr
    assert len(read_csv(out)) == 1
    result = invoke("batch", pics, *weight_args, "--crops", "1", "--csv", out, "--resume")
    assert result.exit_code == 0, result.stderr
    assert sorted(os.path.basename(r["path"]) for r in read_csv(out)) == [f"p{i}.png" for i in range(6)]


def test_every_help_renders():
    import typer

    def commands(group, prefix: tuple = ()):
        for name, command in group.commands.items():
            yield (*prefix, name)
            if hasattr(command, "commands"):  # a group of subcommands (``weights``)
                yield from commands(command, (*prefix, name))

    found = sorted(commands(typer.main.get_command(app)))
    expected = {("score",), ("batch",), ("explain",), ("eval",), ("finetune",), ("export",), ("weights",)}
    expected |= {("weights", c) for c in ("list", "download", "import", "info", "push")}
    assert expected <= set(found), found  # every command found, so the loop below cannot pass on nothing
    for command in [(), *found]:
        result = invoke(*command, "--help")
        assert result.exit_code == 0, (command, result.output)
        assert "Usage" in result.output and f"dgiqa {' '.join(command)}".strip() in " ".join(result.output.split())


def test_public_decoding_api(tmp_path):
    from dgiqa_cli import ImageError, load_image

    rgb = load_image(GOOD)
    assert rgb.shape == (480, 640, 3) and rgb.dtype.name == "uint8"
    with pytest.raises(ImageError, match="not an image"):
        load_image(FIXTURES / "golden.json")
    assert sys.modules["dgiqa_cli"].load_image is load_image
