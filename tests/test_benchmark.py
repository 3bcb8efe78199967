"""The throughput benchmark runs end to end (CI-sized: a handful of images, one crop, CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert "ratio (batch / sequential):" in proc.stdout
    report = json.loads(report_path.read_text())
    assert report["rounds"] == 2
    assert report["sequential"]["images"] == 2 and report["batch"]["images"] == 4  # 1 and 2, twice
    assert report["sequential"]["images_per_s"] > 0 and report["batch"]["images_per_s"] > 0
    assert report["ratio"] == pytest.approx(report["batch"]["images_per_s"] / report["sequential"]["images_per_s"])
    assert report["batch"]["precision"] == "fp32"  # the suite's DGIQA_PRECISION (conftest)
