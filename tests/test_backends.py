"""The OpenVINO CPU backend and the ONNX / IR export, on real runtimes and the stand-in weights.

Each network is converted once per session (tens of seconds each on 2 cores);
the tests then compare numbers against PyTorch fp32: DGIQA scores within 1e-4
in fp32 (the exact mode's promise), depth maps at several shapes through one
dynamic graph, ONNX Runtime on the exported files.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from dgiqa_cli.inference.backends import OpenVINONetwork, accelerate, pick_backend, supports_precision
from dgiqa_cli.inference.backends.export import export_networks
from dgiqa_cli.inference.backends.graphs import traceable_pos_embed
from dgiqa_cli.inference.backends.openvino_runtime import (
    _verified,
    core,
    default_cache_dir,
    entry_fields,
    entry_folder,
)
from dgiqa_cli.models import build_model
from dgiqa_cli.weights import load_network

pytest.importorskip("openvino")


def crops(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Picture-like normalised crops: smooth gradients plus noise, not pure noise."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(-1.5, 1.5, 224)
    base = ramp[None, None, :, None] * torch.rand(n, 3, 1, 1, generator=g) + ramp[None, None, None, :] * 0.5
    rgb = base + 0.3 * torch.randn(n, 3, 224, 224, generator=g)
    depth = (ramp[None, None, :, None] * torch.rand(n, 1, 1, 1, generator=g)).expand(n, 3, 224, 224)
    return rgb.contiguous(), (depth + 0.05 * torch.randn(n, 3, 224, 224, generator=g)).contiguous()


@pytest.fixture(scope="session")
def cache() -> Path:
    """The session's own dgiqa cache ($DGIQA_CACHE, a scratch folder): the networks converted here under the
    stand-in files' real hashes are the ones the command-line tests (test_openvino_cli.py) then find there,
    so each network is converted once per session, as on a user's machine."""
    return default_cache_dir()


@pytest.fixture(scope="session")
def shas(weights_dir) -> dict[str, str]:
    from dgiqa_cli.weights.digests import sha256_of

    return {
        "dgiqa": sha256_of(weights_dir / "DGIQA_standin.pth"),
        "depth-anything-vits": sha256_of(weights_dir / "depth_anything_vits14.pth"),
    }


@pytest.fixture(scope="session")
def dgiqa_module(dgiqa_state):
    model = build_model("dgiqa")
    model.load_state_dict(dgiqa_state)
    return model


@pytest.fixture(scope="session")
def depth_module(depth_state):
    model = build_model("depth-anything-vits")
    model.load_state_dict(depth_state)
    return model


@pytest.fixture(scope="module")
def small(small_weights, cache) -> dict[str, tuple[torch.nn.Module, str]]:
    """The networks in miniature (``SMALL_CONFIGS``), as the session's small weights files load them, with those
    files' sha256, for the cache's and the export's plumbing (the real networks' conversions are checked above,
    number by number). Converted into the session's cache, under the keys the small models of the other tests
    (test_startup.py) look up: each is converted once per session."""
    networks = {}
    for kind, arch in (("model", "dgiqa"), ("depth", "depth-anything-vits")):
        loaded = load_network(small_weights[kind], kind)
        fast = accelerate(loaded.network, arch, precision="fp32", weights_sha256=loaded.sha256, cache_dir=cache)
        assert isinstance(fast, OpenVINONetwork), "conversion fell back to PyTorch"
        networks[arch] = (loaded.network, loaded.sha256)
    return networks


@pytest.fixture(scope="session")
def ov_dgiqa(dgiqa_module, cache, shas) -> OpenVINONetwork:
    network = accelerate(dgiqa_module, "dgiqa", precision="fp32", weights_sha256=shas["dgiqa"], cache_dir=cache)
    assert isinstance(network, OpenVINONetwork), "conversion fell back to PyTorch"
    return network


@pytest.fixture(scope="session")
def ov_depth(depth_module, cache, shas) -> OpenVINONetwork:
    network = accelerate(
        depth_module,
        "depth-anything-vits",
        precision="fp32",
        weights_sha256=shas["depth-anything-vits"],
        cache_dir=cache,
    )
    assert isinstance(network, OpenVINONetwork), "conversion fell back to PyTorch"
    return network


def test_fp32_scores_within_1e4_of_pytorch(ov_dgiqa, dgiqa_module):
    assert "float32" in str(ov_dgiqa.compiled.get_property("INFERENCE_PRECISION_HINT"))  # set, not bf16 by default
    for n, seed in ((1, 0), (7, 1)):  # one graph, any number of crops
        rgb, depth = crops(n, seed)
        with torch.inference_mode():
            expected = dgiqa_module(rgb, depth)
        got = ov_dgiqa(rgb, depth)
        assert got.dtype == torch.float32 and got.shape == (n,)
        assert (got - expected).abs().max().item() < 1e-4


def test_attention_requests_go_to_pytorch(ov_dgiqa, dgiqa_module):
    rgb, depth = crops(1, 3)
    scores, maps = ov_dgiqa(rgb, depth, return_attention=True)
    with torch.inference_mode():
        expected, expected_maps = dgiqa_module(rgb, depth, return_attention=True)
    torch.testing.assert_close(scores, expected)
    torch.testing.assert_close(maps["cross"], expected_maps["cross"])


def test_traceable_pos_embed_matches_dinov2(depth_module):
    encoder = depth_module.pretrained
    with torch.no_grad():
        for grid in ((37, 28), (37, 37), (49, 37), (37, 66)):
            expected = encoder.interpolate_pos_embed(*grid)
            torch.testing.assert_close(traceable_pos_embed(encoder.pos_embed, *grid), expected, atol=2e-6, rtol=0)


def test_depth_one_graph_for_every_shape(ov_depth, depth_module):
    g = torch.Generator().manual_seed(5)
    for shape in ((1, 3, 518, 392), (1, 3, 518, 518), (2, 3, 294, 224)):  # landscape, 37 x 37 (no resize), portrait
        x = torch.randn(shape, generator=g)
        with torch.inference_mode():
            expected = depth_module(x)
        got = ov_depth(x)
        assert got.shape == expected.shape
        assert (got - expected).abs().max().item() < 1e-4 * max(1.0, expected.abs().max().item())


def test_second_start_reads_the_cache(ov_dgiqa, dgiqa_module, cache, shas):
    again = accelerate(dgiqa_module, "dgiqa", precision="fp32", weights_sha256=shas["dgiqa"], cache_dir=cache)
    assert ov_dgiqa.source == "converted" and again.source == "cache"
    rgb, depth = crops(3, 4)
    torch.testing.assert_close(again(rgb, depth), ov_dgiqa(rgb, depth), atol=0, rtol=0)
    entries = list((cache / "ir").iterdir())
    assert all(not e.name.startswith(".") for e in entries), "a staging folder was left behind"


@pytest.mark.skipif(not supports_precision("bf16"), reason="this CPU has no native bf16")
def test_bf16_fast_mode(ov_dgiqa, dgiqa_module, cache, shas):
    fast = accelerate(dgiqa_module, "dgiqa", precision="bf16", weights_sha256=shas["dgiqa"], cache_dir=cache)
    assert fast.source == "cache", "fp32 and bf16 share one converted graph"
    assert "bfloat16" in str(fast.compiled.get_property("INFERENCE_PRECISION_HINT"))
    rgb, depth = crops(8, 6)
    with torch.inference_mode():
        expected = dgiqa_module(rgb, depth)
    drift = (fast(rgb, depth) - expected).abs().max().item()
    assert 0 < drift < 5e-3  # bf16 really ran, and stays near the reference


@pytest.mark.parametrize(
    "damage",
    [
        lambda f: (f / "model.bin").write_bytes((f / "model.bin").read_bytes()[:1000]),  # truncated weights
        lambda f: (f / "model.xml").write_text("<net>garbage"),
        lambda f: (f / "entry.json").write_text("{not json"),
        lambda f: (f / "model.xml").unlink(),
    ],
    ids=["truncated-bin", "garbage-xml", "garbage-entry", "missing-xml"],
)
def test_damaged_cache_entry_is_never_trusted(ov_dgiqa, dgiqa_module, cache, tmp_path, damage, shas):
    import shutil

    folder = entry_folder("dgiqa", shas["dgiqa"], cache)
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    fields = entry_fields("dgiqa", shas["dgiqa"])
    assert _verified(copy, fields) and core().read_model(str(copy / "model.xml")) is not None
    damage(copy)
    assert not _verified(copy, fields)


def test_damaged_cache_entry_is_rebuilt(small, cache, tmp_path):
    import shutil

    arch = "depth-anything-vits"
    depth_module, sha = small[arch]
    folder = entry_folder(arch, sha, tmp_path)
    shutil.copytree(entry_folder(arch, sha, cache), folder)
    weights = bytearray((folder / "model.bin").read_bytes())
    weights[len(weights) // 2 : len(weights) // 2 + 64] = b"\x7f" * 64  # silent corruption: same size, wrong numbers
    (folder / "model.bin").write_bytes(bytes(weights))
    rebuilt = accelerate(depth_module, arch, precision="fp32", weights_sha256=sha, cache_dir=tmp_path)
    assert isinstance(rebuilt, OpenVINONetwork) and rebuilt.source == "converted"
    x = torch.randn(1, 3, 518, 392)
    with torch.inference_mode():
        expected = depth_module(x)
    assert (rebuilt(x) - expected).abs().max().item() < 1e-4 * max(1.0, expected.abs().max().item())
    again = accelerate(depth_module, arch, precision="fp32", weights_sha256=sha, cache_dir=tmp_path)
    assert again.source == "cache"


# -- falling back to PyTorch -------------------------------------------------------------------------


def test_pick_backend():
    assert pick_backend("auto", "cpu") == "openvino"
    assert pick_backend("openvino", torch.device("cpu")) == "openvino"
    assert pick_backend("torch", "cpu") == "torch"
    assert pick_backend("auto", "cuda") == "torch"
    assert pick_backend("auto", "mps") == "torch"
    with pytest.raises(ValueError, match="unknown backend"):
        pick_backend("tensorrt", "cpu")


def test_openvino_asked_on_a_gpu_keeps_pytorch_with_one_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="dgiqa"):
        assert pick_backend("openvino", "cuda:1") == "torch"
        assert pick_backend("openvino", "cuda:1") == "torch"
    assert len([r for r in caplog.records if "CPU only" in r.getMessage()]) <= 1


class Unconvertible(torch.nn.Module):
    """Its forward turns a tensor into Python numbers: no tracer can follow it."""

    def forward(self, rgb, depth, return_attention=False):
        return torch.tensor([float(v) for v in rgb.flatten(1).mean(1).tolist()]) + depth.mean()


def test_failed_conversion_keeps_the_pytorch_module(tmp_path, caplog):
    module = Unconvertible()
    with caplog.at_level(logging.WARNING, logger="dgiqa"):
        got = accelerate(module, "dgiqa", precision="fp32", weights_sha256="f" * 64, cache_dir=tmp_path)
        again = accelerate(module, "dgiqa", precision="fp32", weights_sha256="f" * 64, cache_dir=tmp_path)
    assert got is module and again is module
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "running it with PyTorch" in warnings[0].getMessage()


def test_unknown_architecture_and_unsupported_precision_keep_pytorch(dgiqa_module, tmp_path):
    assert accelerate(dgiqa_module, "resnet", precision="fp32", cache_dir=tmp_path) is dgiqa_module
    if "FP16" not in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        assert accelerate(dgiqa_module, "dgiqa", precision="fp16", cache_dir=tmp_path) is dgiqa_module


def test_broken_openvino_install_falls_back(tmp_path):
    """A real broken install: an ``openvino`` package that fails on import shadows the installed one."""
    fake = tmp_path / "shadow" / "openvino"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('libopenvino.so.2540: cannot open shared object file')\n")
    script = textwrap.dedent(
        """
        import logging, torch
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        from dgiqa_cli.inference.backends import accelerate, pick_backend
        from dgiqa_cli.models import build_model
        from dgiqa_cli.models.seeded_weights import SMALL_CONFIGS
        module = build_model("life-iqa", **SMALL_CONFIGS["life-iqa"])
        print("backend", pick_backend("auto", "cpu"))
        print("same", accelerate(module, "life-iqa", precision="fp32", weights_sha256="e" * 64) is module)
        """
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake.parent), str(root)]), "DGIQA_CACHE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "backend torch" in done.stdout and "same True" in done.stdout
    assert done.stderr.count("WARNING") == 1, done.stderr  # one warning, not one per network


def test_default_cache_dir_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DGIQA_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c" / "openvino"
    monkeypatch.delenv("DGIQA_CACHE")
    assert default_cache_dir().parts[-2:] == ("dgiqa", "openvino")


# -- export ----------------------------------------------------------------------------------------


def test_export_reproduces_pytorch_in_onnx_runtime(small, cache, tmp_path):
    """The export's plumbing (IR from the cache, ONNX, card) on the small networks; the real ones' conversion is
    checked above."""
    (dgiqa_module, dgiqa_sha), (depth_module, depth_sha) = small["dgiqa"], small["depth-anything-vits"]
    shas = {"dgiqa": dgiqa_sha, "depth-anything-vits": depth_sha}
    ort = pytest.importorskip("onnxruntime")
    networks = [
        (dgiqa_module, "dgiqa", shas["dgiqa"]),
        (depth_module, "depth-anything-vits", shas["depth-anything-vits"]),
    ]
    card = export_networks(tmp_path, networks, cache_dir=cache)  # IR from the cache the fixture filled
    assert json.loads((tmp_path / "card.json").read_text()) == card
    assert [n["arch"] for n in card["networks"]] == ["dgiqa", "depth-anything-vits"]
    dgiqa_card, depth_card = card["networks"]
    assert dgiqa_card["weights_sha256"] == shas["dgiqa"]
    assert [i["name"] for i in dgiqa_card["inputs"]] == ["rgb", "depth"]
    assert dgiqa_card["inputs"][0]["shape"] == ["batch", 3, 224, 224]
    assert depth_card["inputs"][0]["shape"] == ["batch", 3, "height", "width"]

    session = ort.InferenceSession(str(tmp_path / "dgiqa.onnx"), providers=["CPUExecutionProvider"])
    rgb, depth = crops(5, 9)
    with torch.inference_mode():
        scores = dgiqa_module(rgb, depth).numpy()
    got = session.run(None, {"rgb": rgb.numpy(), "depth": depth.numpy()})[0]
    assert np.abs(got - scores).max() < 1e-4

    session = ort.InferenceSession(str(tmp_path / "depth-anything-vits.onnx"), providers=["CPUExecutionProvider"])
    for shape in ((1, 3, 518, 392), (2, 3, 280, 238)):
        x = torch.randn(shape, generator=torch.Generator().manual_seed(shape[2]))
        with torch.inference_mode():
            expected = depth_module(x).numpy()
        got = session.run(None, {"image": x.numpy()})[0]
        assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4 * max(1, np.abs(expected).max())

    compiled = core().compile_model(str(tmp_path / "dgiqa.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert np.abs(compiled([rgb.numpy(), depth.numpy()])[0] - scores).max() < 1e-4
