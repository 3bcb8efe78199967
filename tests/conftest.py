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
# ... in the exact mode (fp32), whose numbers the goldens pin; the default's choice of bf16 on CPUs that compute
# it is tested on its own (tests/test_precision_default.py).
os.environ.setdefault("DGIQA_PRECISION", "fp32")
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
    (scoring never changes them); a file, or a file in a Hub-format folder, that changes (size, mtime, inode)
    is loaded afresh, and names that resolve through a registry or a download always go the real way.
    Training builds its own (it changes them).
    """
    from collections import OrderedDict

    from dgiqa_cli.inference import model as scorer_module

    real = scorer_module.load_network
    cache: OrderedDict = OrderedDict()

    def load_network(spec, kind="model", *, arch=None, local_only=False, lazy=False):
        path = Path(os.fspath(spec))
        if not (path.is_file() or path.is_dir()):
            return real(spec, kind, arch=arch, local_only=local_only, lazy=lazy)
        files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())  # a Hub folder
        identity = tuple((p.name, p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
        key = (os.fspath(spec), kind, arch, local_only, lazy, identity)
        if key not in cache:  # a lazy entry builds its network once, when first asked for
            cache[key] = real(spec, kind, arch=arch, local_only=local_only, lazy=lazy)
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


def cli_weight_args(model: Path, depth: Path) -> list[str]:
    """Command-line options that select DGIQA weights ``model`` with ViT-S depth weights ``depth`` on the CPU."""
    return ["--weights", str(model), "--depth-model", "vits", "--depth-weights", str(depth), "--device", "cpu"]


def write_hub_folder(folder: Path, arch: str, state: dict, model_config: dict, **config) -> Path:
    """Weights in the Hub format (``config.json`` + ``model.safetensors``): the way a non-default model
    configuration reaches ``build_model`` through the normal loading path."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors")
    config = {"format": "dgiqa-weights", "architecture": arch, "model_config": model_config, **config}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


@pytest.fixture(scope="session")
def small_weights(tmp_path_factory, golden) -> dict[str, Path]:
    """DGIQA and ViT-S depth stand-ins in miniature (``seeded_weights.SMALL_CONFIGS``: the same code paths at a
    hundredth of the cost), as Hub-format folders, for tests of plumbing rather than numbers."""
    from dgiqa_cli.models.seeded_weights import SMALL_CONFIGS, small_state

    folder = tmp_path_factory.mktemp("small-weights")
    seeds = golden["pipeline"]["dgiqa_weights_seed"], golden["pipeline"]["depth_weights_seed"]
    return {
        "model": write_hub_folder(
            folder / "dgiqa-small", "dgiqa", small_state("dgiqa", seeds[0]), SMALL_CONFIGS["dgiqa"], depth_model="vits"
        ),
        "depth": write_hub_folder(
            folder / "depth-small",
            "depth-anything-vits",
            small_state("depth-anything-vits", seeds[1]),
            SMALL_CONFIGS["depth-anything-vits"],
        ),
    }


def full_size_weights(weights_dir: Path) -> dict[str, Path]:
    """The real-size stand-in weights: ``{"model": ..., "depth": ...}``."""
    return {"model": weights_dir / "DGIQA_standin.pth", "depth": weights_dir / "depth_anything_vits14.pth"}


def full_size(request) -> bool:
    """Whether the requesting module is marked ``full_size`` (it checks numbers of the real architectures)."""
    return request.node.get_closest_marker("full_size") is not None


@pytest.fixture(scope="module")
def standin_weights(request, weights_dir, small_weights) -> dict[str, Path]:
    """The stand-in weights a test module scores with: ``{"model": ..., "depth": ...}``, small unless the
    module is marked ``full_size``."""
    return full_size_weights(weights_dir) if full_size(request) else small_weights


@pytest.fixture(scope="module")
def weight_args(standin_weights) -> list[str]:
    """Command-line options that select the module's stand-in weights."""
    return cli_weight_args(standin_weights["model"], standin_weights["depth"])


def one_crop_scorer(weights: dict[str, Path]):
    from dgiqa_cli import Scorer

    return Scorer(weights["model"], depth_model="vits", depth_weights=weights["depth"], crops=1, device="cpu")


@pytest.fixture(scope="session")
def full_size_scorer(weights_dir):
    """A CPU Scorer on the real-size stand-in weights, one crop per image."""
    return one_crop_scorer(full_size_weights(weights_dir))


@pytest.fixture(scope="session")
def small_scorer(small_weights):
    """A CPU Scorer on the small stand-in weights, one crop per image."""
    return one_crop_scorer(small_weights)


@pytest.fixture(scope="module")
def scorer(request):
    """A CPU Scorer on the module's stand-in weights (small unless marked ``full_size``), one crop per image,
    shared by the tests: it scores what ``weight_args`` selects on the command line."""
    return request.getfixturevalue("full_size_scorer" if full_size(request) else "small_scorer")


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


@pytest.fixture(scope="session")
def small_life_iqa(tmp_path_factory, golden) -> Path:
    """Life-IQA in miniature (``seeded_weights.SMALL_CONFIGS``) as a Hub-format folder, backbone twins equal as in
    ``life_iqa_file``; stored once per twin pair (safetensors refuses shared tensors), as ``weights import`` does."""
    from dgiqa_cli.models.seeded_weights import SMALL_CONFIGS, small_state

    state = small_state("life-iqa", golden["life_iqa_forward"]["weights_seed"])
    state = {key: value for key, value in state.items() if not key.startswith("backbone_stages.")}
    folder = tmp_path_factory.mktemp("small-life") / "life-iqa-small"
    return write_hub_folder(folder, "life-iqa", state, SMALL_CONFIGS["life-iqa"])


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray instance (2 CPUs, no dashboard) for the session: Ray Data and Ray Serve tests share it, as
    Ray takes seconds to start on two cores. Yields its GCS address, for commands run in other processes."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
