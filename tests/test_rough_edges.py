"""Issue 10/11's smaller items, each through the real code: odd weights files, names, inputs, devices, messages."""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import FIXTURES, PICTURES
from PIL import Image
from typer.testing import CliRunner

from dgiqa_cli.cli import app

runner = CliRunner()
GOOD = FIXTURES / PICTURES[0]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def squash(text: str) -> str:
    return " ".join(text.split())


def test_a_fifo_or_device_as_weights_is_named_and_never_read(tmp_path):
    fifo = tmp_path / "weights.pth"
    os.mkfifo(fifo)
    done = subprocess.run(
        [sys.executable, "-m", "dgiqa_cli", "score", str(GOOD), "--weights", str(fifo)],
        capture_output=True,
        text=True,
        timeout=120,  # a FIFO that were opened would block here forever: hence a process of its own
    )
    assert done.returncode == 2, done.stderr
    assert "is a FIFO (named pipe), not a weights file" in squash(done.stderr) and "Traceback" not in done.stderr
    device = invoke("score", GOOD, "--weights", "/dev/null")  # reading a device would not block: in process
    assert device.exit_code == 2, device.stderr
    assert "is a character device" in squash(device.stderr) and "Traceback" not in device.stderr


def test_a_hub_folder_naming_a_fifo_says_so(tmp_path):
    folder = tmp_path / "w"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"format": "dgiqa-weights", "architecture": "dgiqa", "weights_file": "model.safetensors"})
    )
    os.mkfifo(folder / "model.safetensors")
    result = invoke("score", GOOD, "--weights", folder)
    assert result.exit_code == 3
    assert "is a FIFO (named pipe), not a weights file" in squash(result.stderr)


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_refusals_never_advise_weights_only_false(tmp_path, monkeypatch):
    monkeypatch.setenv("DGIQA_HOME", str(tmp_path / "home"))
    with open(tmp_path / "evil.pth", "wb") as fh:
        pickle.dump({"fc.weight": Payload()}, fh, protocol=2)
    result = invoke("weights", "import", tmp_path / "evil.pth", "--name", "evil")
    assert result.exit_code == 3 and "refused to load" in result.stderr
    assert "weights_only" not in result.stderr and "Unsupported global" in squash(result.stderr)
    name = invoke("weights", "import", tmp_path / "evil.pth", "--name", "nl\n")
    assert name.exit_code == 2 and "is not a usable name" in squash(name.stderr)


def test_the_python_api_takes_pil_images_tensors_bytes_and_arrays(scorer):
    reference = scorer.score(GOOD).score
    rgb = np.asarray(Image.open(GOOD).convert("RGB"))
    inputs = {
        "PIL image": Image.open(GOOD),
        "HWC uint8 tensor": torch.from_numpy(rgb.copy()),
        "CHW float tensor": torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255,
        "encoded bytes": GOOD.read_bytes(),
        "array": rgb,
    }
    results = scorer.score_many(list(inputs.values()))
    for (what, _), result in zip(inputs.items(), results, strict=True):
        assert result.ok, (what, result.error)
        assert result.score == pytest.approx(reference, abs=1e-6), what
    bad = scorer.score(torch.full((3, 32, 32), 2.0))
    assert not bad.ok and "[0, 1]" in bad.error and bad.path == "<tensor>"


def test_fp16_on_the_cpu_warns(caplog):
    from dgiqa_cli.inference.runtime import pick_precision

    with caplog.at_level(logging.WARNING, logger="dgiqa"):
        assert pick_precision("fp16", torch.device("cpu")) == "fp16"
    assert "slower than fp32" in caplog.text


def test_cuda_devices_by_number(weight_args):
    args = [a for a in weight_args if a not in ("--device", "cpu")]
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    cases = [("cuda:x", "numbered from 0"), ("tpu", "unknown device")]
    if gpus == 0:
        cases.append(("cuda:0", "PyTorch sees no CUDA GPU"))
    if gpus <= 7:
        cases.append(("cuda:7", f"PyTorch sees {gpus} CUDA GPU(s), numbered from 0" if gpus else "no CUDA GPU"))
    for device, message in cases:
        result = invoke("score", GOOD, *args, "--device", device)
        assert result.exit_code == 2, (device, result.stderr)
        assert message in squash(result.stderr), (device, result.stderr)


def test_a_gpu_number_beyond_the_gpus_present_is_named(monkeypatch):
    """The numbering message itself, on any machine: two GPUs present, the eighth asked for."""
    from dgiqa_cli.inference.runtime import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=r"^device cuda:7: PyTorch sees 2 CUDA GPU\(s\), numbered from 0"):
        pick_device("cuda:7")
    assert pick_device("cuda:1") == "cuda:1" and torch.device(pick_device("cuda:1")) == torch.device("cuda:1")
    assert (pick_device("cuda:1").type, pick_device("cuda:1").index, pick_device("cuda").index) == ("cuda", 1, None)


def test_messages_are_never_hard_wrapped_when_stderr_is_not_a_terminal(tmp_path, weight_args):
    missing = tmp_path / ("a_very_long_folder_name_" * 6) / "missing_picture.png"
    result = invoke("score", missing, *weight_args, "--crops", "1")
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("failed:")]
    assert len(lines) == 1 and str(missing) in lines[0] and len(lines[0]) > 120
