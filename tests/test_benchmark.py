"""The throughput benchmark runs end to end (CI-sized: a handful of images, one crop, CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dgiqa_cli.inference.runtime import cpu_computes_bf16

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "throughput.py"


@pytest.mark.slow
@pytest.mark.benchmark
def test_benchmark_smoke(tmp_path):
    report_path = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--images",
            "2",
            "--sequential-images",
            "1",
            "--crops",
            "1",
            "--device",
            "cpu",
            "--batch-size",
            "2",
            "--json",
            str(report_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| flow | what runs | images | images/s | x authors |" in proc.stdout
    report = json.loads(report_path.read_text())
    assert report["rounds"] == 2
    flows = report["flows"]
    assert list(flows) == ["authors", "torch-fp32", "exact", "default"]
    assert flows["authors"]["images"] == 2 and flows["default"]["images"] == 4  # 1 and 2, twice
    for row in flows.values():
        assert row["images_per_s"] > 0
        assert row["x_authors"] == pytest.approx(row["images_per_s"] / flows["authors"]["images_per_s"])
        assert 0 < row["share_of_limit"] < 1.5
    assert (flows["torch-fp32"]["backend"], flows["torch-fp32"]["precision"]) == ("torch", "fp32")
    assert (flows["exact"]["backend"], flows["exact"]["precision"]) == ("openvino", "fp32")
    assert flows["default"]["precision"] == ("bf16" if cpu_computes_bf16() else "fp32")  # auto, asked explicitly
    assert flows["torch-fp32"]["max_drift_from_authors"] < 1e-5  # the same arithmetic, batched
    assert flows["exact"]["max_drift_from_authors"] < 1e-4  # the exact mode's promise
    assert flows["default"]["max_drift_from_authors"] < 1e-2
