"""The CPU fast path through the real command line: same scores as PyTorch, rows that say so, files to deploy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import FIXTURES, PICTURES, cli_weight_args
from typer.testing import CliRunner

from dgiqa_cli.cli import app
from dgiqa_cli.io.rows import read_csv

pytestmark = pytest.mark.full_size  # the OpenVINO export of the real architectures is what users run

pytest.importorskip("openvino")
runner = CliRunner()
GOOD = FIXTURES / PICTURES[0]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.slow
def test_openvino_scores_equal_pytorch_scores_in_exact_mode(tmp_path, weight_args):
    pictures = [FIXTURES / name for name in PICTURES]
    scores = {}
    for backend in ("torch", "openvino"):
        result = invoke("score", *pictures, *weight_args, "--crops", "3", "--backend", backend, "--json")
        assert result.exit_code == 0, result.stderr
        scores[backend] = [row["score"] for row in json.loads(result.stdout)]
    assert np.abs(np.subtract(scores["torch"], scores["openvino"])).max() < 1e-4

    out = tmp_path / "rows.csv"
    result = invoke("batch", *pictures, *weight_args, "--crops", "3", "--backend", "openvino", "--csv", out)
    assert result.exit_code == 0, result.stderr
    rows = read_csv(out)
    assert [r["backend"] for r in rows] == ["openvino", "openvino"] and rows[0]["precision"] == "fp32"
    assert [r["score"] for r in rows] == pytest.approx(scores["openvino"], abs=1e-6)
    # a resume with the other backend would mix numbers made differently: refused
    again = invoke("batch", *pictures, *weight_args, "--crops", "3", "--backend", "torch", "--csv", out, "--resume")
    assert again.exit_code == 2 and "backend=openvino" in " ".join(again.stderr.split())


def test_export_writes_graphs_onnx_runtime_reproduces(tmp_path, small_weights):
    """The command's plumbing on the small networks (their IR is in the session's cache already): the same
    operators as the real ones, whose conversion test_backends.py checks number by number."""
    from dgiqa_cli.weights import load_network

    onnxruntime = pytest.importorskip("onnxruntime")
    args = [a for a in cli_weight_args(small_weights["model"], small_weights["depth"]) if a not in ("--device", "cpu")]
    result = invoke("export", tmp_path / "deploy", *args, "--format", "onnx", "--json")
    assert result.exit_code == 0, result.stderr
    card = json.loads(result.stdout)
    assert [n["arch"] for n in card["networks"]] == ["dgiqa", "depth-anything-vits"]
    assert card["networks"][0]["inputs"][0]["shape"] == ["batch", 3, 224, 224]
    session = onnxruntime.InferenceSession(str(tmp_path / "deploy" / "dgiqa.onnx"))
    g = torch.Generator().manual_seed(0)
    rgb, depth = torch.randn(2, 3, 224, 224, generator=g), torch.randn(2, 3, 224, 224, generator=g)
    model = load_network(small_weights["model"]).network
    with torch.no_grad():
        expected = model(rgb, depth).numpy()
    (got,) = session.run(None, {"rgb": rgb.numpy(), "depth": depth.numpy()})
    assert np.abs(got.reshape(-1) - expected.reshape(-1)).max() < 1e-4

    again = invoke("export", tmp_path / "deploy", *args, "--format", "onnx")
    assert again.exit_code == 2 and "--force" in again.stderr
