"""The default precision: bf16 where the hardware computes it (GPUs, CPUs with AVX-512 BF16 or AMX), fp32 on other
CPUs; ``fp32`` stays the exact mode. The rest of the suite runs with ``DGIQA_PRECISION=fp32`` (conftest): here the
variable is removed, so the default is what a user gets."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import FIXTURES, PICTURES
from typer.testing import CliRunner

from dgiqa_cli.cli import app
from dgiqa_cli.errors import UsageError
from dgiqa_cli.inference import runtime
from dgiqa_cli.io.rows import read_csv

runner = CliRunner()
CPU = torch.device("cpu")
NATIVE = runtime.cpu_computes_bf16()


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("DGIQA_PRECISION", raising=False)


def test_native_bf16_is_what_pytorch_and_openvino_report():
    """Read from the kernel's CPU flags where there are some, so that choosing imports no PyTorch; PyTorch's CPU
    checks and OpenVINO's capabilities say the same."""
    from dgiqa_cli.inference.backends.openvino_runtime import cpu_capabilities

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    assert any(getattr(torch.cpu, check, lambda: False)() for check in checks) == NATIVE
    assert ("BF16" in cpu_capabilities()) == NATIVE


CHOOSE = """
import sys
from dgiqa_cli.inference.runtime import pick_device, pick_precision
device = pick_device("auto")
print(device, device.type, pick_precision("auto", device), "torch" in sys.modules)
"""


@pytest.mark.skipif(
    sys.platform != "linux" or any(map(os.path.exists, runtime.GPU_DEVICE_FILES)), reason="a GPU driver is present"
)
def test_choosing_the_cpu_and_its_precision_imports_no_pytorch(no_env):
    """PyTorch sees no GPU where no GPU driver left its device files: then auto is the CPU, and finding that
    out costs no PyTorch import (1-3 s)."""
    done = subprocess.run([sys.executable, "-c", CHOOSE], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["cpu", "cpu", "bf16" if NATIVE else "fp32", "False"]
    assert not torch.cuda.is_available()  # what PyTorch itself says here


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_on_the_cpu_is_bf16_only_where_it_is_native(no_env, monkeypatch, native, expected):
    monkeypatch.setattr(runtime, "cpu_computes_bf16", lambda: native)
    assert runtime.pick_precision("auto", CPU) == expected
    assert runtime.pick_precision(None, CPU) == expected
    assert runtime.pick_precision("fp32", CPU) == "fp32"  # the exact mode, whatever the CPU
    assert runtime.pick_precision("bf16", CPU) == "bf16"  # asked for: runs (emulated where not native)


def test_the_environment_sets_the_default_and_an_argument_wins(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_computes_bf16", lambda: True)
    monkeypatch.setenv("DGIQA_PRECISION", "fp32")
    assert runtime.pick_precision(None, CPU) == "fp32"
    assert runtime.pick_precision("bf16", CPU) == "bf16"
    monkeypatch.setenv("DGIQA_PRECISION", "fp64")
    with pytest.raises(UsageError, match="unknown precision 'fp64'"):
        runtime.pick_precision(None, CPU)


def test_the_command_line_default_on_this_cpu(no_env, tmp_path, weight_args, scorer):
    """The default rows say what ran; on a CPU with native bf16 the scores stay near the exact mode's."""
    pictures = [FIXTURES / name for name in PICTURES]
    exact = [scorer.score(p).score for p in pictures]  # the session's scorer: fp32
    out = tmp_path / "rows.csv"
    result = runner.invoke(app, ["batch", *map(str, pictures), *weight_args, "--crops", "1", "--csv", str(out)])
    assert result.exit_code == 0, result.stderr
    rows = read_csv(out)
    expected = "bf16" if NATIVE else "fp32"
    assert [r["precision"] for r in rows] == [expected, expected]
    drift = max(abs(r["score"] - e) for r, e in zip(rows, exact, strict=True))
    if NATIVE:
        assert 0 < drift < 1e-2  # bf16 really ran, and stays near (the stand-ins' own scale)
    else:
        assert drift < 1e-6
    # a resume in the other precision would mix numbers made differently: refused
    other = "fp32" if NATIVE else "bf16"
    again = runner.invoke(
        app,
        [
            "batch",
            *map(str, pictures),
            *weight_args,
            "--crops",
            "1",
            "--csv",
            str(out),
            "--resume",
            "--precision",
            other,
        ],
    )
    assert again.exit_code == 2 and f"precision={expected}" in " ".join(again.stderr.split())

    single = runner.invoke(
        app, ["score", str(pictures[0]), *weight_args, "--crops", "1", "--precision", "fp32", "--json"]
    )
    assert single.exit_code == 0, single.stderr
    assert json.loads(single.stdout)[0]["score"] == pytest.approx(exact[0], abs=1e-6)
