"""Shared fixtures: the golden numbers, and stand-in weights in the authors' file formats.

The real checkpoints cannot be downloaded here, so every end-to-end test runs
on the seeded stand-in weights the golden outputs were computed with
(``dgiqa_cli.models.seeded_weights``), saved as the authors save theirs: a plain state dict
in a ``.pth`` file.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from dgiqa_cli.models.seeded_weights import seeded_state

# The reference implementation (PyTorch) scores unless a test asks for OpenVINO (tests/test_backends.py,
# tests/test_openvino_cli.py); DGIQA_BACKEND=openvino runs the whole suite on the fast path instead.
os.environ.setdefault("DGIQA_BACKEND", "torch")
# Compiled networks and downloads go to a scratch cache, never the user's (subprocesses inherit it).
if "DGIQA_CACHE" not in os.environ:
    os.environ["DGIQA_CACHE"] = tempfile.mkdtemp(prefix="dgiqa-test-cache-")
    atexit.register(shutil.rmtree, os.environ["DGIQA_CACHE"], ignore_errors=True)  # compiled networks: ~0.5 GB

# The authors' release links (Dropbox) are never requested from a test: a closed local port stands in
# for the host, and tests that download serve the archive themselves (tests/test_first_run.py).
os.environ.setdefault("DGIQA_MIRROR", "http://127.0.0.1:9")

FIXTURES = Path(__file__).parent / "fixtures"
PICTURES = ("synthetic_480x640.png", "synthetic_600x400.png")


def load_json(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(scope="session", autouse=True)
def networks_built_once():
    """Every in-process scorer (``Scorer``, ``dgiqa score/batch/eval/explain`` through CliRunner) takes its
    networks from a small cache keyed by the weights file's identity, so the suite builds each stand-in
    network once instead of once per command. The cache holds the real networks ``load_network`` returned
    (scoring never changes them); a file that changes (size, mtime, inode) is loaded afresh, and names that
    resolve through a registry or a download always go the real way. Training builds its own (it changes them).
    """
    from collections import OrderedDict

    from dgiqa_cli.inference import model as scorer_module

    real = scorer_module.load_network
    cache: OrderedDict = OrderedDict()

    def load_network(spec, kind="model", *, arch=None, local_only=False):
        path = Path(os.fspath(spec))
        if not path.is_file():
            return real(spec, kind, arch=arch, local_only=local_only)
        info = path.stat()
        key = (os.fspath(spec), kind, arch, local_only, info.st_ino, info.st_size, info.st_mtime_ns)
        if key not in cache:
            cache[key] = real(spec, kind, arch=arch, local_only=local_only)
            while len(cache) > 4:  # a DGIQA network is 0.5 GB: keep the few the suite shares
                cache.popitem(last=False)
        cache.move_to_end(key)
        return cache[key]

    patch = pytest.MonkeyPatch()
    patch.setattr(scorer_module, "load_network", load_network)
    yield cache
    patch.undo()


@pytest.fixture(scope="session")
def golden() -> dict:
    return load_json("golden.json")


@pytest.fixture(scope="session")
def dgiqa_state(golden) -> dict:
    return seeded_state(load_json("manifest_dgiqa.json")["tensors"], golden["pipeline"]["dgiqa_weights_seed"])


@pytest.fixture(scope="session")
def depth_state(golden) -> dict:
    return seeded_state(
        load_json("manifest_depth_anything_vits14.json")["tensors"], golden["pipeline"]["depth_weights_seed"]
    )


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory, dgiqa_state, depth_state) -> Path:
    """DGIQA and ViT-S depth stand-in weights as the authors ship them: ``.pth`` state dicts."""
    folder = tmp_path_factory.mktemp("weights")
    torch.save(dgiqa_state, folder / "DGIQA_standin.pth")
    torch.save(depth_state, folder / "depth_anything_vits14.pth")
    return folder


@pytest.fixture(scope="session")
def weight_args(weights_dir) -> list[str]:
    """Command-line options that select the stand-in weights."""
    return [
        "--weights",
        str(weights_dir / "DGIQA_standin.pth"),
        "--depth-model",
        "vits",
        "--depth-weights",
        str(weights_dir / "depth_anything_vits14.pth"),
        "--device",
        "cpu",
    ]


@pytest.fixture(scope="session")
def scorer(weights_dir):
    """A CPU Scorer on the stand-in weights, one crop per image (fast), shared by the tests."""
    from dgiqa_cli import Scorer

    return Scorer(
        weights_dir / "DGIQA_standin.pth",
        depth_model="vits",
        depth_weights=weights_dir / "depth_anything_vits14.pth",
        crops=1,
        device="cpu",
    )


@pytest.fixture
def pictures(tmp_path) -> list[Path]:
    """Copies of the two fixture pictures in a scratch folder."""
    out = []
    for name in PICTURES:
        shutil.copy(FIXTURES / name, tmp_path / name)
        out.append(tmp_path / name)
    return out


def run_interrupted(command: list, event: str, count: int, signal_name: str, timeout: float = 300, **kwargs):
    """Run ``command`` in its own process group until it signals itself at ``event`` number ``count``
    (:mod:`dgiqa_cli.io.interrupts`); whatever it left running is killed. Returns the CompletedProcess."""
    import signal
    import subprocess

    from dgiqa_cli.io import interrupts

    env = {**os.environ, **kwargs.pop("env", {}), **interrupts.at(event, count, signal_name)}
    proc = subprocess.Popen(
        [str(c) for c in command],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # workers the run started, if any outlived it
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def prefill_hub_cache(cache: Path, repo: str, filename: str, source: Path, revision: str = "main") -> Path:
    """Lay a file out as huggingface_hub's cache does (blobs, snapshots, refs), as a past download would."""
    import hashlib

    commit = hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()
    folder = cache / f"models--{repo.replace('/', '--')}"
    data = source.read_bytes()
    blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    snapshot = folder / "snapshots" / commit / filename
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    snapshot.symlink_to(blob)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / revision).write_text(commit)
    return snapshot


@pytest.fixture(scope="session")
def life_iqa_file(tmp_path_factory, golden) -> Path:
    """Life-IQA stand-in weights (golden recipe: seeded, then backbone twins made equal) as an authors' .pth."""
    from dgiqa_cli.models.life_iqa import twin_key

    state = seeded_state(load_json("manifest_life_iqa.json")["tensors"], golden["life_iqa_forward"]["weights_seed"])
    for key in state:
        if key.startswith("backbone_stages."):
            state[key] = state[twin_key(key)]
    path = tmp_path_factory.mktemp("life") / "life_iqa_koniq_standin.pth"
    torch.save(state, path)
    return path
