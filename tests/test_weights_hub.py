"""`dgiqa weights download` and `push` against a local Hub (tests/hub_server.py), through huggingface_hub itself.

Nothing is mocked: huggingface_hub sends real HTTP requests to a server on
127.0.0.1 that lays out repositories the way the Hub does; the tests read the
server's request log and the files that land in the cache.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from hub_server import HubServer
from typer.testing import CliRunner

from dgiqa_cli.cli.weights import weights_app
from dgiqa_cli.weights import WeightsError
from dgiqa_cli.weights.digests import sha256_of
from dgiqa_cli.weights.files import read_state_dict
from dgiqa_cli.weights.registry import local_entries
from dgiqa_cli.weights.resolve import resolve_weights

runner = CliRunner()
TOKEN = "hf_test_write_token"
VITS_REPO, VITS_FILE = "LiheYoung/depth_anything_vits14", "pytorch_model.bin"


def weights(*args):
    return runner.invoke(weights_app, [str(a) for a in args], catch_exceptions=False)


def squash(text: str) -> str:
    """Text without any whitespace: rich wraps long lines at the console width, anywhere."""
    return "".join(text.split())


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A fresh Hugging Face cache and dgiqa home; no token, online."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("DGIQA_HOME", str(tmp_path / "dgiqa-home"))
    for name in ("HF_HUB_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def hub(env, monkeypatch):
    with HubServer(env / "hub", token=TOKEN) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def test_download_once_then_cache_hit_stopped_server_and_offline(hub, weights_dir, monkeypatch):
    source = weights_dir / "depth_anything_vits14.pth"
    commit = hub.commit(VITS_REPO, {VITS_FILE: source})

    first = weights("download", "vits", "--json")
    assert first.exit_code == 0, first.stderr
    (row,) = json.loads(first.stdout)
    assert row["status"] == "downloaded" and row["commit"] == commit
    cached = row["path"]
    assert cached.endswith(f"models--LiheYoung--depth_anything_vits14/snapshots/{commit}/{VITS_FILE}")
    assert sha256_of(cached) == sha256_of(source)
    assert len(hub.requests_for("GET", f"/resolve/main/{VITS_FILE}")) == 1

    second = weights("download", "vits", "--json")
    assert second.exit_code == 0, second.stderr
    assert json.loads(second.stdout)[0] | {"status": None} == row | {"status": None}
    assert json.loads(second.stdout)[0]["status"] == "cached"
    # the second call found the registry's file in the cache and sent no request at all (no HEAD, no GET)
    assert len(hub.requests_for("HEAD", f"/resolve/main/{VITS_FILE}")) == 1
    assert len(hub.requests_for("GET", f"/resolve/main/{VITS_FILE}")) == 1

    hub.stop()
    stopped = weights("download", "vits", "--json")
    assert stopped.exit_code == 0, stopped.stderr
    assert json.loads(stopped.stdout)[0]["status"] == "cached"

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(hub.requests)
    offline = weights("download", "vits")
    assert offline.exit_code == 0, offline.stderr
    assert "cached" in offline.stdout
    resolved = resolve_weights("vits", kind="depth")
    assert str(resolved.path) == cached
    assert read_state_dict(resolved.path).keys() == torch.load(source, weights_only=True).keys()
    assert len(hub.requests) == before  # offline: not one request

    listed = {r["name"]: r for r in json.loads(weights("list", "--json").stdout)}
    assert listed["vits"]["cached"] is True and listed["vits"]["size"] == source.stat().st_size
    assert listed["vitl"]["cached"] is False and listed["vitl"]["size"] is None


def test_revision_pinning(hub):
    old = hub.commit(VITS_REPO, {VITS_FILE: b"release one"})
    hub.tag(VITS_REPO, "v1", old)
    new = hub.commit(VITS_REPO, {VITS_FILE: b"release two"})

    for revision, commit, content in (
        ("v1", old, b"release one"),
        (old, old, b"release one"),
        ("main", new, b"release two"),
    ):
        result = weights("download", "vits", "--revision", revision, "--json")
        assert result.exit_code == 0, result.stderr
        (row,) = json.loads(result.stdout)
        assert row["commit"] == commit
        assert Path(row["path"]).read_bytes() == content
    # a commit hash already in the cache needs no request at all
    before = len(hub.requests)
    assert weights("download", "vits", "--revision", old).exit_code == 0
    assert len(hub.requests) == before


def test_missing_repository_file_or_revision_are_clear_errors(hub):
    hub.commit("someone/weights", {"model.safetensors": b"x"})
    cases = {
        "hf://nobody/nothing/model.safetensors": "error: hf://nobody/nothing/model.safetensors: "
        "nobody/nothing/model.safetensors: no such repository on the Hub (or it is private: log in with "
        "`hf auth login`).",
        "hf://someone/weights/missing.bin": "error: hf://someone/weights/missing.bin: someone/weights/missing.bin: "
        "the repository has no file 'missing.bin'.",
        "hf://someone/weights/model.safetensors@v9": "error: hf://someone/weights/model.safetensors@v9: "
        "someone/weights/model.safetensors@v9: no such revision in the repository.",
    }
    for spec, message in cases.items():
        result = weights("download", spec)
        assert result.exit_code == 3
        assert squash(message) in squash(result.stderr), result.stderr

    # a registry entry whose Hub copy does not exist is fetched from the authors' release (here: a mirror that
    # cannot be reached), never from the Hub; the error says where the authors publish the file
    before = len(hub.requests)
    result = weights("download", "dgiqa-koniq")
    assert result.exit_code == 3
    text = squash(result.stderr)
    assert squash("error: dgiqa-koniq: could not download DGIQA_Koniq10k.pth from http://127.0.0.1:9/") in text
    assert squash("download DGIQA_Koniq10k.pth by hand (see https://github.com/uf-robopi/DGIQA") in text
    assert len(hub.requests) == before

    # a name that is not in any registry is a usage error, before anything is downloaded
    before = len(hub.requests)
    result = weights("download", "vits", "dgiqa-spaq")
    assert result.exit_code == 2
    names = "dgiqa-koniq, dgiqa-kadid, life-iqa-koniq, vits, vitb, vitl"
    assert squash(f"error: 'dgiqa-spaq' is not a registry name ({names})") in squash(result.stderr)
    assert len(hub.requests) == before


def test_weights_that_fail_their_checksum_are_refused(hub, env):
    """config.json records the sha256 of model.safetensors; a file that differs is an error naming both hashes."""
    good = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "  # an empty safetensors file
    config = {
        "format": "dgiqa-weights",
        "format_version": 1,
        "architecture": "dgiqa",
        "weights_file": "model.safetensors",
        "sha256": hashlib.sha256(good).hexdigest(),
        "depth_model": "vits",
        "score_range": [0, 1],
    }
    hub.commit("someone/dgiqa", {"config.json": json.dumps(config).encode(), "model.safetensors": good})
    # a bad upload: the Hub's copy is not the file config.json describes
    hub.commit("someone/broken", {"config.json": json.dumps(config).encode(), "model.safetensors": good[:-3]})

    def mismatch(spec, path):
        return (
            f"error: {spec}: {path}: checksum mismatch (sha256 {sha256_of(path)}, expected {config['sha256']}); "
            "the file is truncated, altered or not the release it claims to be. "
            f"Download it again: `dgiqa weights download {spec} --force`."
        )

    result = weights("download", "hf://someone/broken")
    assert result.exit_code == 3
    broken = next((env / "hf-cache").rglob("models--someone--broken/snapshots/*/model.safetensors"))
    assert squash(mismatch("hf://someone/broken", broken)) in squash(result.stderr), result.stderr

    # a good download whose cached copy is later truncated on disk: caught on the next download and on load
    assert weights("download", "hf://someone/dgiqa").exit_code == 0
    cached = next((env / "hf-cache").rglob("models--someone--dgiqa/snapshots/*/model.safetensors"))
    cached.write_bytes(good[:-3])
    result = weights("download", "hf://someone/dgiqa")
    assert result.exit_code == 3
    assert squash(mismatch("hf://someone/dgiqa", cached)) in squash(result.stderr), result.stderr

    from dgiqa_cli.models import build_model
    from dgiqa_cli.weights.files import load_into

    resolved = resolve_weights("hf://someone/dgiqa")  # what `dgiqa score --weights hf://someone/dgiqa` loads
    assert resolved.entry.arch == "dgiqa" and resolved.sha256 == config["sha256"]
    with pytest.raises(WeightsError) as info:  # the checksum is checked before any tensor is read
        load_into(build_model("depth-anything-vits"), "dgiqa", resolved)
    assert f"{cached}: checksum mismatch" in str(info.value)
    assert f"expected {config['sha256']}" in str(info.value)

    # --force fetches it again, and it passes
    result = weights("download", "hf://someone/dgiqa", "--force", "--json")
    assert result.exit_code == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["status"] == "downloaded" and row["sha256_checked"] is True
    assert cached.read_bytes() == good


@pytest.fixture(scope="module")
def imported_vits(tmp_path_factory, weights_dir):
    """The depth stand-in imported once (as a user would) into a dgiqa home shared by this module's tests."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DGIQA_HOME", str(home))
        # The stand-in is no release (its hash proves nothing), so the user states the licence.
        args = ("--name", "my-vits", "--license", "Apache-2.0")
        result = weights("import", weights_dir / "depth_anything_vits14.pth", *args)
        assert result.exit_code == 0, result.stderr
    return home


def test_push_dry_run_shows_files_sizes_and_card_without_network(env, imported_vits, monkeypatch):
    monkeypatch.setenv("DGIQA_HOME", str(imported_vits))
    server = HubServer(env / "hub")  # never started: nothing listens on HF_ENDPOINT
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    folder = imported_vits / "models" / "my-vits"
    result = weights("push", "my-vits", "--repo", "me/vits", "--private", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    sizes = {f["path"]: f["size"] for f in plan["files"]}
    assert sizes == {
        "config.json": (folder / "config.json").stat().st_size,
        "model.safetensors": (folder / "model.safetensors").stat().st_size,
        "README.md": len(plan["card"].encode()),
    }
    assert plan["repo"] == "me/vits" and plan["private"] is True and plan["endpoint"] == "http://127.0.0.1:9"
    config = json.loads((folder / "config.json").read_text())
    card = plan["card"]
    assert card.startswith("---\nlicense: apache-2.0\nlibrary_name: dgiqa\n")
    for fragment in (
        "| architecture | `depth-anything-vits` |",
        f"sha256 `{config['sha256']}`",
        f"Source file: `depth_anything_vits14.pth` (sha256 `{config['source']['sha256']}`)",
        "Licence of the source weights: Apache-2.0.",
        "dgiqa score photo.jpg --depth-model vits --depth-weights hf://me/vits",
        "read with torch.load(weights_only=True)",
        "Depth Anything: Unleashing the Power of Large-Scale Unlabeled Data",
    ):
        assert fragment in card, fragment
    assert not (folder / "README.md").exists()  # a dry run writes nothing
    assert server.requests == []

    table = weights("push", "my-vits", "--repo", "me/vits", "--dry-run")
    assert table.exit_code == 0
    assert squash("Would create the public model repository me/vits on http://127.0.0.1:9") in squash(table.stdout)
    assert "model.safetensors" in table.stdout and "# vits" in table.stdout
    assert "dry run: nothing was sent" in table.stderr


def test_push_uploads_the_folder_and_hf_uri_reads_it_back(hub, imported_vits, monkeypatch):
    monkeypatch.setenv("DGIQA_HOME", str(imported_vits))
    folder = imported_vits / "models" / "my-vits"

    refused = weights("push", "my-vits", "--repo", "me/vits")  # no token
    assert refused.exit_code == 3
    assert squash("log in with a write token") in squash(refused.stderr), refused.stderr
    assert not hub.exists("me/vits")

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    result = weights("push", "my-vits", "--repo", "me/vits", "--private")
    assert result.exit_code == 0, result.stderr
    commit = hub.meta("me/vits")["refs"]["main"]
    assert result.stdout.strip() == f"{hub.url}/me/vits/commit/{commit}"
    assert hub.tree("me/vits") == ["README.md", "config.json", "model.safetensors"]
    assert hub.meta("me/vits")["private"] is True
    for name in ("config.json", "model.safetensors", "README.md"):
        assert hub.file("me/vits", name).read_bytes() == (folder / name).read_bytes(), name
    assert "hf://me/vits" in (folder / "README.md").read_text()
    assert local_entries("depth")["my-vits"].repo == "me/vits"

    # private: anonymous reads are refused; with the token, hf://me/vits reads config.json then the weights
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(WeightsError, match="no such repository on the Hub"):
        resolve_weights("hf://me/vits", kind="depth")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    resolved = resolve_weights("hf://me/vits", kind="depth")
    assert resolved.entry.arch == "depth-anything-vits" and resolved.entry.kind == "depth"
    assert resolved.sha256 == sha256_of(folder / "model.safetensors") == sha256_of(resolved.path)
    assert hub.requests_for("GET", "/me/vits/resolve/main/config.json")
    assert hub.requests_for("GET", f"/me/vits/resolve/{commit}/model.safetensors")  # same commit as config.json
    with pytest.raises(WeightsError, match="holds depth-anything-vits weights \\(a depth model\\); pass it with"):
        resolve_weights("hf://me/vits", kind="model")

    # pushing again is a new commit on the same repository
    again = weights("push", "my-vits", "--repo", "me/vits", "--message", "again")
    assert again.exit_code == 0, again.stderr
    assert hub.meta("me/vits")["log"][-1]["message"] == "again"
