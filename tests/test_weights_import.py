"""`dgiqa weights import` / `info` / `list`, and scoring with what was imported (name, folder, hf://).

Checkpoints are the seeded stand-ins saved as the authors save theirs (``.pth``
state dicts); every conversion is written to disk, read back and scored.
"""

from __future__ import annotations

import json
import pickle
import shutil

import pytest
import torch
from conftest import FIXTURES
from hub_server import HubServer
from safetensors import safe_open
from typer.testing import CliRunner

from dgiqa_cli.cli.weights import weights_app
from dgiqa_cli.models import build_model
from dgiqa_cli.weights import WeightsError
from dgiqa_cli.weights.digests import sha256_of
from dgiqa_cli.weights.files import load_into
from dgiqa_cli.weights.registry import local_entries
from dgiqa_cli.weights.resolve import resolve_weights

pytestmark = pytest.mark.full_size  # imports the authors' .pth format (real-size checkpoints)

runner = CliRunner()
PICTURE = FIXTURES / "synthetic_480x640.png"


def weights(*args):
    return runner.invoke(weights_app, [str(a) for a in args], catch_exceptions=False)


def squash(text: str) -> str:
    """Text without any whitespace: rich wraps long lines at the console width, anywhere."""
    return "".join(text.split())


@pytest.fixture(scope="module")
def home(tmp_path_factory, weights_dir):
    """A dgiqa home holding the DGIQA stand-in imported once, as `standin` (depth model: ViT-S)."""
    folder = tmp_path_factory.mktemp("dgiqa-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DGIQA_HOME", str(folder))
        result = weights(
            "import",
            weights_dir / "DGIQA_standin.pth",
            "--name",
            "standin",
            "--depth-model",
            "vits",
            "--trained-on",
            "seeded stand-in",
            "--source",
            "https://example.org/DGIQA_standin.pth",
            "--json",
        )
        assert result.exit_code == 0, result.stderr
    return folder


@pytest.fixture(scope="module")
def original_score(scorer) -> float:
    """The score of the original DGIQA_standin.pth (1 crop, CPU, ViT-S depth), computed once."""
    return scorer.score(PICTURE).score


@pytest.fixture
def env(home, tmp_path, monkeypatch):
    monkeypatch.setenv("DGIQA_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    for name in ("HF_HUB_OFFLINE", "HF_TOKEN", "HF_ENDPOINT", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)
    return home


def test_import_writes_the_hub_format_and_registers_the_name(env, weights_dir, dgiqa_state):
    folder = env / "models" / "standin"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    source = weights_dir / "DGIQA_standin.pth"
    assert {k: config[k] for k in ("format", "format_version", "name", "architecture", "model_config")} == {
        "format": "dgiqa-weights",
        "format_version": 1,
        "name": "standin",
        "architecture": "dgiqa",
        "model_config": {},
    }
    assert config["depth_model"] == "vits" and config["score_range"] == [0.0, 1.0]
    assert config["trained_on"] == "seeded stand-in" and config["dtype"] == "float32"
    assert config["sha256"] == sha256_of(folder / "model.safetensors")
    assert config["size"] == (folder / "model.safetensors").stat().st_size
    assert config["source"] == {
        "file": "DGIQA_standin.pth",
        "sha256": sha256_of(source),
        "size": source.stat().st_size,
        "url": "https://example.org/DGIQA_standin.pth",
        # No release has this hash, so no licence is claimed for it (issue 11: provenance only when proven).
        "license": "unknown: the file matches no known release (pass --license)",
        "verified_release": None,
    }
    assert "Ramesh, Liu, Wang, Islam" in config["citation"]
    assert config["conversion"]["steps"][0].startswith("read with torch.load(weights_only=True)")
    # the tensors are the checkpoint's, bit for bit
    with safe_open(folder / "model.safetensors", "pt") as fh:
        assert set(fh.keys()) == set(dgiqa_state)
        for key in ("depth_guided_cross_attention.multihead_attn.in_proj_weight", next(iter(dgiqa_state))):
            assert torch.equal(fh.get_tensor(key), dgiqa_state[key])

    registry = json.loads((env / "registry.json").read_text())
    assert registry["models"]["standin"]["path"] == "models/standin"  # relative: DGIQA_HOME can move
    entry = local_entries("model")["standin"]
    assert (entry.arch, entry.depth_model, entry.sha256) == ("dgiqa", "vits", config["sha256"])
    assert entry.source_sha256 == sha256_of(source)

    listed = {row["name"]: row for row in json.loads(weights("list", "--json").stdout)}
    assert listed["standin"] | {"path": None} == {
        "name": "standin",
        "kind": "model",
        "origin": "local",
        "architecture": "dgiqa",
        "trained_on": "seeded stand-in",
        "score_range": [0.0, 1.0],
        "depth_model": "vits",
        "repo": None,
        "revision": "main",
        "filename": "model.safetensors",
        "published": True,
        "size": config["size"],
        "sha256": config["sha256"],
        "cached": True,
        "path": None,
    }
    assert listed["standin"]["path"] == str(folder / "model.safetensors")
    table = weights("list")
    assert table.exit_code == 0 and "standin" in table.stdout and "imported" in table.stdout


@pytest.mark.slow
def test_imported_name_scores_like_the_original_pth(env, weights_dir, original_score):
    """`dgiqa score --weights standin` == scoring DGIQA_standin.pth itself (1 crop, CPU, ViT-S depth)."""
    from dgiqa_cli.cli import app

    depth_file = weights_dir / "depth_anything_vits14.pth"
    result = runner.invoke(
        app,
        ["score", str(PICTURE), "--weights", "standin", "--depth-weights", str(depth_file)]
        + ["--crops", "1", "--device", "cpu", "--json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["model"] == "standin" and row["depth_model"] == "vits"  # from config.json: no --depth-model given
    assert row["score"] == original_score
    assert "scores will shift" not in result.stderr  # ViT-S is what these weights say they were trained with


@pytest.mark.slow
def test_folder_and_hf_uri_in_the_hub_format_score_like_the_original(
    env, tmp_path, weights_dir, original_score, monkeypatch
):
    from dgiqa_cli import Scorer

    folder = env / "models" / "standin"
    copy = tmp_path / "standin-folder"
    shutil.copytree(folder, copy)
    resolved = resolve_weights(copy)
    assert resolved.path == copy / "model.safetensors" and resolved.entry.arch == "dgiqa"
    assert resolved.entry.depth_model == "vits" and resolved.entry.score_range == (0.0, 1.0)
    assert resolved.sha256 == sha256_of(copy / "model.safetensors")

    with HubServer(tmp_path / "hub") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        hub.commit("me/standin", {name: folder / name for name in ("config.json", "model.safetensors")})
        scored = Scorer(
            "hf://me/standin",
            depth_weights=weights_dir / "depth_anything_vits14.pth",
            crops=1,
            device="cpu",
        )
        reads = [path for method, path in hub.requests if method == "GET" and "/resolve/" in path]
    commit = hub.meta("me/standin")["refs"]["main"]
    assert reads == ["/me/standin/resolve/main/config.json", f"/me/standin/resolve/{commit}/model.safetensors"]
    assert scored.arch == "dgiqa" and scored.depth_model_name == "vits" and scored.score_range == (0.0, 1.0)
    assert scored.score(PICTURE).score == original_score


def test_info_on_the_original_pth_finds_the_import(env, weights_dir):
    source = weights_dir / "DGIQA_standin.pth"
    result = weights("info", source, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    config = json.loads((env / "models" / "standin" / "config.json").read_text())
    assert report["architecture"] == "dgiqa" and report["loads"] is True
    assert report["parameters"] == config["parameters"] > 50_000_000
    assert report["tensors"] == len(torch.load(source, weights_only=True))
    assert report["dtype"] == "float32" and report["sha256"] == sha256_of(source)
    assert report["checksum"] is None  # a bare file has no expected hash
    assert report["known_release"] == {"name": "standin", "kind": "model", "origin": "local", "as": "its source file"}


def test_altered_or_truncated_weights_fail_with_file_and_expected_hash(env, tmp_path):
    folder = env / "models" / "standin"
    weights_file = folder / "model.safetensors"
    expected = json.loads((folder / "config.json").read_text())["sha256"]
    original = weights_file.read_bytes()
    try:
        # altered by one bit: `info` (and every load) names the file, its hash and the expected one
        weights_file.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        result = weights("info", "standin")
        assert result.exit_code == 3
        assert "checksum       MISMATCH" in result.stdout
        assert "known release  no (its sha256 is not in the registry)" in result.stdout
        message = (
            f"error: {weights_file}: checksum mismatch (sha256 {sha256_of(weights_file)}, expected {expected}); "
            "the file is truncated or altered"
        )
        assert squash(message) in squash(result.stderr)

        # truncated: loading it by name (what `dgiqa score --weights standin` does) is refused before any tensor
        weights_file.write_bytes(original[: len(original) // 2])
        resolved = resolve_weights("standin")
        with pytest.raises(WeightsError) as info:
            load_into(build_model("depth-anything-vits"), "dgiqa", resolved)
        assert str(info.value) == (
            f"{weights_file}: checksum mismatch (sha256 {sha256_of(weights_file)}, expected {expected}); the file "
            "is truncated, altered or not the release it claims to be. Import the checkpoint again: "
            "`dgiqa weights import DGIQA_standin.pth --name standin --force`."
        )
    finally:
        weights_file.write_bytes(original)


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_import_refusals(env, tmp_path, weights_dir, capsys):
    cases = []
    with open(tmp_path / "evil.pth", "wb") as fh:
        pickle.dump({"fc.weight": Payload()}, fh, protocol=2)
    cases.append((["import", tmp_path / "evil.pth", "--name", "evil"], 3, f"error: {tmp_path / 'evil.pth'}: refused"))
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    cases.append(
        (
            ["import", tmp_path / "other.pth", "--name", "other"],
            3,
            f"error: {tmp_path / 'other.pth'}: the weights match none of: dgiqa, depth-anything-vits",
        )
    )
    depth = weights_dir / "depth_anything_vits14.pth"
    cases += [
        (["import", depth, "--name", "dgiqa-koniq"], 2, "error: 'dgiqa-koniq' is a packaged registry name"),
        (["import", depth, "--name", "standin"], 2, "error: 'standin' is already imported; pass --force to replace it"),
        (["import", depth, "--name", "../up"], 2, "error: '../up' is not a usable name"),
        (["import", tmp_path / "none.pth", "--name", "none"], 2, f"error: {tmp_path / 'none.pth'}: no such file"),
        (
            ["import", depth, "--name", "d", "--arch", "dgiqa"],
            3,
            f"error: {depth}: holds depth-anything-vits weights, not dgiqa",
        ),
    ]
    for args, code, message in cases:
        result = weights(*args)
        assert result.exit_code == code, (args, result.stderr)
        assert squash(message) in squash(result.stderr), (args, result.stderr)
    assert "this must never run" not in capsys.readouterr().out
    assert set(local_entries("model")) == {"standin"} and not local_entries("depth")
    assert sorted(p.name for p in (env / "models").iterdir()) == ["standin"]  # nothing half-written


def test_life_iqa_round_trip_stores_one_backbone_copy(env, tmp_path, monkeypatch):
    """safetensors refuses shared tensors: one copy is stored, and checkpoint_filter restores the twins."""
    from dgiqa_cli.models.life_iqa import LifeIQA

    monkeypatch.setenv("DGIQA_HOME", str(tmp_path / "home"))
    torch.manual_seed(0)
    options = {
        "embed_dim": 96,
        "num_queries": 4,
        "num_experts": 2,
        "top_k": 2,
        "depth": 2,
        "backbone": "swin_tiny_patch4_window7_224",
    }
    original = LifeIQA(**options).eval()
    torch.save(original.state_dict(), tmp_path / "life.pth")
    result = weights("import", tmp_path / "life.pth", "--name", "life", "--score-range", "1", "100", "--json")
    assert result.exit_code == 0, result.stderr
    config = json.loads(result.stdout)["config"]
    assert config["architecture"] == "life-iqa" and config["model_config"] == options
    assert config["score_range"] == [1.0, 100.0] and config["depth_model"] is None
    assert any("one copy of" in step for step in config["conversion"]["steps"])

    folder = tmp_path / "home" / "models" / "life"
    with safe_open(folder / "model.safetensors", "pt") as fh:
        stored = set(fh.keys())
    full = set(original.state_dict())
    assert not any(k.startswith("backbone_stages.") for k in stored)
    assert stored == {k for k in full if not k.startswith("backbone_stages.")}

    resolved = resolve_weights("life")
    assert resolved.entry.config == {"model": options}  # what Scorer passes on to build_model
    net = load_into(build_model("life-iqa", **resolved.entry.config["model"]), "life-iqa", resolved)  # strict
    crops = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.equal(net(crops), original(crops))
    assert config["parameters"] == sum(p.numel() for p in original.parameters())


def test_a_release_is_claimed_only_when_the_hash_proves_it(env, dgiqa_state, tmp_path):
    """Weights named like the authors' file, but no known release, get no source, licence or release from the name."""
    impostor = tmp_path / "DGIQA_Koniq10k.pth"
    torch.save({k: v + 1e-3 if v.is_floating_point() else v for k, v in dgiqa_state.items()}, impostor)
    result = weights("import", impostor, "--name", "impostor")
    assert result.exit_code == 0, result.stderr
    config = json.loads((env / "models" / "impostor" / "config.json").read_text())
    assert config["source"]["url"] == "" and config["source"]["verified_release"] is None
    assert config["source"]["license"].startswith("unknown") and "unverified" in config["description"]
    assert config["trained_on"] == ""
    info = json.loads(weights("info", "impostor", "--json").stdout)
    assert info["known_release"]["origin"] == "local"  # it is only its own import, never the authors' release
