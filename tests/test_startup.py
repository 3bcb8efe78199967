"""No start-up tax (issue 21): the weights' sha256 is hashed once per version of the file, and a model whose
compiled OpenVINO networks are cached scores without building its PyTorch networks."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from dgiqa_cli.weights import digests
from dgiqa_cli.weights.files import verify_sha256


@pytest.fixture
def hashed(monkeypatch, tmp_path):
    """A 3 MB file in a scratch cache, and the list of files the hashing function read in full."""
    monkeypatch.setenv("DGIQA_CACHE", str(tmp_path / "cache"))
    reads: list[str] = []
    real = digests.sha256_of

    def counting(path):
        reads.append(os.fspath(path))
        return real(path)

    monkeypatch.setattr(digests, "sha256_of", counting)
    path = tmp_path / "weights.pth"
    path.write_bytes(np.random.default_rng(0).bytes(3 << 20))
    return path, reads


def test_second_start_does_not_hash_the_weights(hashed):
    path, reads = hashed
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digests.file_sha256(path) == expected and len(reads) == 1
    assert digests.file_sha256(path) == expected and len(reads) == 1  # from the record
    verify_sha256(path, expected)  # a known checksum is checked through the record too
    assert len(reads) == 1
    assert json.loads(digests.record_path(path).read_text())["sha256"] == expected


def _touch(path):
    status = path.stat()
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000_000))


def _replace(path):  # a new file of the same size moved over the old one (a new inode)
    other = path.with_name("new.pth")
    other.write_bytes(path.read_bytes()[::-1])
    os.replace(other, path)


def _rewrite_restoring_mtime(path):  # same size, same mtime, same inode: only ctime tells
    status = path.stat()
    data = bytearray(path.read_bytes())
    data[1000:1064] = b"\x7f" * 64
    with open(path, "r+b") as fh:
        fh.write(bytes(data))
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (status.st_size, status.st_mtime_ns, status.st_ino)


@pytest.mark.parametrize("change", [_touch, _replace, _rewrite_restoring_mtime], ids=lambda f: f.__name__[1:])
def test_a_changed_file_is_hashed_again(hashed, change):
    path, reads = hashed
    before = digests.file_sha256(path)
    change(path)
    now = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digests.file_sha256(path) == now and len(reads) == 2
    if change is not _touch:
        assert now != before
        with pytest.raises(Exception, match="checksum mismatch"):
            verify_sha256(path, before)
    assert digests.file_sha256(path) == now and len(reads) == 2  # the new version is recorded


@pytest.mark.parametrize("damage", ["{not json", '{"identity": 1}', "[]", "", "SHA"])
def test_a_damaged_record_is_ignored_and_rewritten(hashed, damage):
    path, reads = hashed
    expected = digests.file_sha256(path)
    record = digests.record_path(path)
    if damage == "SHA":  # the file's identity, but no sha256 in it
        saved = json.loads(record.read_text())
        damage = json.dumps({**saved, "sha256": "not a digest"})
    record.write_text(damage)
    assert digests.file_sha256(path) == expected and len(reads) == 2
    assert json.loads(record.read_text())["sha256"] == expected
    assert digests.file_sha256(path) == expected and len(reads) == 2


def test_an_unwritable_cache_costs_speed_not_the_hash(hashed, monkeypatch, tmp_path):
    path, reads = hashed
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("DGIQA_CACHE", str(blocker))  # hashes/ cannot be made under a file
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digests.file_sha256(path) == digests.file_sha256(path) == expected and len(reads) == 2


# -- the OpenVINO path ---------------------------------------------------------------------------------


@pytest.fixture
def builds(monkeypatch):
    """Every PyTorch network built through the weights loader, by architecture. The real loader, not the test
    session's cache of loaded networks (``conftest.networks_built_once``), whose networks may be built already."""
    from dgiqa_cli import models, weights
    from dgiqa_cli.inference import model

    monkeypatch.setattr(model, "load_network", weights.load_network)

    built: list[str] = []
    real = models.build_model

    def counting(arch, **config):
        built.append(arch)
        return real(arch, **config)

    monkeypatch.setattr(models, "build_model", counting)
    return built


def _openvino_model(small_weights, crops=3):
    from dgiqa_cli import create_model

    return create_model(
        small_weights["model"],
        depth_model="vits",
        depth_weights=small_weights["depth"],
        device="cpu",
        backend="openvino",
        crops=crops,
    )


@pytest.fixture(scope="module")
def converted(small_weights):
    """The small networks converted once into the session's cache, and their scores of two pictures."""
    model = _openvino_model(small_weights)
    assert model.backend == "openvino"
    pictures = np.random.default_rng(1).integers(0, 256, (2, 300, 400, 3), dtype=np.uint8)
    return pictures, model(pictures).numpy()


def test_cached_networks_score_without_building_pytorch(converted, small_weights, builds, caplog):
    pictures, expected = converted
    with caplog.at_level("WARNING", logger="dgiqa"):
        model = _openvino_model(small_weights)
    assert builds == [] and model.network.source == model.depth.source == "cache"
    assert not [r for r in caplog.records if "converting" in r.getMessage()]
    np.testing.assert_array_equal(model(pictures).numpy(), expected)
    assert builds == []
    # What only PyTorch gives (explain's attention maps) builds the network then, once.
    prepared = model.prepare(_decoded(pictures[0]))
    frame = model.depth_frame(prepared, model.depth_map(prepared.depth_input))
    from dgiqa_cli.inference import preprocess as pp

    depth_crops = pp.cut_crops(frame, prepared.positions)
    scores, attention = model.score_crops(prepared.rgb_crops, depth_crops, return_attention=True)
    assert builds == ["dgiqa"] and set(attention) == {"cross", "refine"}
    np.testing.assert_allclose(scores.mean().item(), expected[0], atol=1e-4)
    model.score_crops(prepared.rgb_crops, depth_crops, return_attention=True)
    assert builds == ["dgiqa"]


def test_damaged_cached_network_is_rebuilt_not_trusted(converted, small_weights, builds, caplog):
    from dgiqa_cli.inference.backends import default_cache_dir
    from dgiqa_cli.inference.backends.openvino_runtime import entry_folder
    from dgiqa_cli.weights import load_network

    pictures, expected = converted
    sha = load_network(small_weights["depth"], "depth", lazy=True).sha256
    weights = entry_folder("depth-anything-vits", sha) / "model.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\x7f" * 64  # same size, wrong numbers
    weights.write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="dgiqa"):
        model = _openvino_model(small_weights)
    assert model.network.source == "cache" and model.depth.source == "converted"
    assert builds == ["depth-anything-vits"]
    assert [r.getMessage() for r in caplog.records if "converting" in r.getMessage()] == [
        f"converting {small_weights['depth']} (depth-anything-vits) for OpenVINO: once for these weights on this "
        f"machine, then cached in {default_cache_dir()}"
    ]
    np.testing.assert_allclose(model(pictures).numpy(), expected, atol=1e-5)
    assert _openvino_model(small_weights).depth.source == "cache"


def _decoded(rgb):
    from dgiqa_cli.io.images import decoded_from_array

    return decoded_from_array(rgb, "<test>")


def test_damaged_compiled_blob_is_compiled_again_not_trusted(converted, small_weights):
    """OpenVINO runs a damaged compiled blob silently (wrong scores): ours are checked against their sha256."""
    pictures, expected = converted
    _openvino_model(small_weights)  # a start from the cache saves the compiled blobs
    blobs = _blobs_of(small_weights)
    damaged = {}
    for blob in blobs:
        data = bytearray(blob.read_bytes())
        data[len(data) // 2 : len(data) // 2 + 4096] = b"\x7f" * 4096
        blob.write_bytes(bytes(data))
        damaged[blob] = bytes(data)
    model = _openvino_model(small_weights)
    assert model.network.source == "cache"
    np.testing.assert_array_equal(model(pictures).numpy(), expected)
    for blob, data in damaged.items():  # compiled again and saved anew
        now = blob.read_bytes()
        assert now != data
        assert json.loads(blob.with_suffix(".json").read_text())["sha256"] == hashlib.sha256(now).hexdigest()


def _blobs_of(small_weights, batches=(None,)):
    """The compiled blobs ``_openvino_model(small_weights)`` runs (the session's cache holds other tests'
    too): DGIQA's in its streams, for each of ``batches``, and Depth Anything's dynamic one."""
    from dgiqa_cli.inference.backends.openvino_runtime import (
        compile_config,
        compiled_blob,
        entry_folder,
        scoring_streams,
    )
    from dgiqa_cli.weights import load_network

    def folder(kind, arch):
        return entry_folder(arch, load_network(small_weights[kind], kind, lazy=True).sha256)

    scoring = compile_config("fp32", streams=scoring_streams())
    blobs = [compiled_blob(folder("model", "dgiqa"), scoring, batch) for batch in batches]
    blobs.append(compiled_blob(folder("depth", "depth-anything-vits"), compile_config("fp32")))
    assert all(blob.exists() for blob in blobs), blobs
    return blobs


def test_a_pictures_crops_run_in_a_graph_of_their_own_batch(converted, small_weights):
    """One picture's crops (the CPU's batch) are split between the scoring network's streams, each part run in
    a graph compiled for exactly its batch: OpenVINO plans the shape once (5% faster), and the parts run at once
    with no waiting on each other inside a layer (8%). Other batches take the dynamic graph, compiled when first
    needed; the scores agree."""
    pictures, expected = converted
    model = _openvino_model(small_weights, crops=4)
    streams = model.network.streams
    assert streams == min(2, os.cpu_count() or 1) and model.depth.streams == 1  # depth: one picture at a time
    assert model.network.fixed_batch == 4 // streams and model.depth.fixed_batch is None
    assert model.network.compiled_batches == [4 // streams]
    one = [model(pictures[i : i + 1]).numpy()[0] for i in range(2)]
    assert model.network.compiled_batches == [4 // streams]
    both = model(pictures).numpy()  # eight crops in one batch
    assert model.network.compiled_batches == [4 // streams, None]
    np.testing.assert_allclose(one, both, atol=1e-6)
    crops = np.random.default_rng(4).standard_normal((5, 3, 224, 224), dtype=np.float32)
    one_stream = np.concatenate([model.network(crops[i : i + 1], crops[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(model.network(crops, crops), one_stream, atol=1e-6)  # parts joined in order
    _blobs_of(small_weights, batches=(4 // streams, None))  # both saved for the next start
    assert f"batch {4 // streams}" in repr(model.network)


# -- no PyTorch on the way from the cache to a score --------------------------------------------------------

NO_TORCH = """
import runpy, sys
sys.argv = ["dgiqa", *sys.argv[1:]]
try:
    runpy.run_module("dgiqa_cli", run_name="__main__")
except SystemExit as exc:
    assert not exc.code, exc.code
print("imported:", " ".join(sorted(m for m in ("torch", "timm", "scipy") if m in sys.modules)))
"""


@pytest.mark.parametrize("command", ["score", "batch"])
def test_a_start_from_the_cache_never_imports_pytorch(converted, small_weights, tmp_path, command):
    """PyTorch's import (1-3 s) was most of a warm start: `dgiqa score` and `dgiqa batch` with cached networks
    score without it, and give the scores the PyTorch-built model gives."""
    import subprocess
    import sys

    import cv2

    from dgiqa_cli.io.rows import read_csv

    pictures, expected = converted
    for i, picture in enumerate(pictures):
        cv2.imwrite(str(tmp_path / f"picture{i}.png"), picture[..., ::-1])
    outputs = {"score": [tmp_path / "picture0.png", "--json"], "batch": [tmp_path, "--csv", tmp_path / "rows.csv"]}
    args = [*outputs[command], "--weights", small_weights["model"], "--depth-model", "vits"]
    args += ["--depth-weights", small_weights["depth"]]
    args += ["--crops", "3", "--device", "auto"]
    env = {**os.environ, "DGIQA_BACKEND": "openvino"}
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH, command, *map(str, args)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("imported:")  # neither torch nor timm nor scipy
    if command == "score":
        rows = json.loads(done.stdout[: done.stdout.rindex("imported:")])
    else:
        rows = sorted(read_csv(tmp_path / "rows.csv"), key=lambda row: row["path"])
    assert [row["error"] or None for row in rows] == [None] * len(rows)
    scores = [float(row["score"]) for row in rows]
    assert scores == pytest.approx([float(e) for e in expected[: len(rows)]], abs=1e-5)


def test_a_bare_checkpoints_architecture_is_read_once_per_version(small_weights, tmp_path, monkeypatch):
    """A bare ``.pth`` names no architecture: its tensors tell, once per version of the file (kept beside its
    sha256), so that later starts need not read it (nor import PyTorch to)."""
    import torch

    from dgiqa_cli.weights import WeightsError, files, load_network
    from dgiqa_cli.weights.files import read_state_dict

    monkeypatch.setenv("DGIQA_CACHE", str(tmp_path / "cache"))
    bare = tmp_path / "bare.pth"
    torch.save(read_state_dict(small_weights["model"] / "model.safetensors"), bare)
    looks: list[str] = []
    real = files.read_state_dict

    def counting(path, mmap=False):
        looks.append(os.fspath(path))
        return real(path, mmap)

    monkeypatch.setattr(files, "read_state_dict", counting)
    assert load_network(bare, lazy=True).arch == "dgiqa" and len(looks) == 1
    assert load_network(bare, lazy=True).arch == "dgiqa" and len(looks) == 1  # from the record
    assert json.loads(digests.record_path(bare).read_text())["arch"] == "dgiqa"
    bare.write_bytes(b"not a checkpoint")  # a new version of the file is looked at again, and refused
    with pytest.raises(WeightsError, match="bare.pth: refused to load"):
        load_network(bare, lazy=True)
    assert len(looks) == 2


def test_openvino_networks_give_what_they_are_given(converted, small_weights):
    """Arrays in, arrays out (the scoring path, which never imports PyTorch); tensors in, tensors out."""
    import torch

    network = _openvino_model(small_weights).network
    crops = np.random.default_rng(2).standard_normal((2, 3, 224, 224), dtype=np.float32)
    as_array = network(crops, crops)
    as_tensor = network(torch.from_numpy(crops), torch.from_numpy(crops))
    assert type(as_array) is np.ndarray and as_array.dtype == np.float32 and as_array.shape == (2,)
    assert isinstance(as_tensor, torch.Tensor)
    np.testing.assert_array_equal(as_tensor.numpy(), as_array)


def test_a_cache_that_cannot_be_written_costs_speed_not_the_run(converted, small_weights, tmp_path, monkeypatch):
    """A full or read-only cache: the converted network runs from memory, in both of its batches, scoring as the
    cached one does. (The conversion itself is the one the session cached, read back, as tracing again would
    only cost time; it is still checked against PyTorch.)"""
    from dgiqa_cli.inference.backends import accelerate, openvino_runtime
    from dgiqa_cli.weights import load_network

    loaded = load_network(small_weights["model"])
    entry = openvino_runtime.entry_folder("dgiqa", loaded.sha256)
    monkeypatch.setattr(
        openvino_runtime, "convert", lambda graph: openvino_runtime.core().read_model(str(entry / "model.xml"))
    )
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    network = accelerate(loaded.network, "dgiqa", precision="fp32", cache_dir=blocker / "cache", fixed_batch=3)
    assert network.source == "converted" and not (blocker / "cache").exists()
    cached = _openvino_model(small_weights).network
    crops = np.random.default_rng(3).standard_normal((4, 3, 224, 224), dtype=np.float32)
    for batch in (3, 4):  # the fixed batch, then the dynamic graph
        np.testing.assert_allclose(
            network(crops[:batch], crops[:batch]), cached(crops[:batch], crops[:batch]), atol=1e-6
        )
    assert network.compiled_batches == [3, None]
