"""The first-run path, offline: weights that fetch themselves from the authors' release and the Hub.

Nothing is mocked: a release host (``hub_server.FileServer``, reached through the
documented mirror setting ``DGIQA_MIRROR``) serves a zip of the authors' Dropbox
folder holding the DGIQA stand-in as ``DGIQA_Koniq10k.pth``, and a local Hub
(``hub_server.HubServer``, through ``HF_ENDPOINT``) serves the ViT-S depth model.
The tests read the servers' request logs and the files that land in the caches.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import threading
import time
import zipfile

import pytest
import torch
from conftest import FIXTURES
from hub_server import FileServer, HubServer
from PIL import Image
from typer.testing import CliRunner

from dgiqa_cli.cli import app
from dgiqa_cli.errors import EXIT_WEIGHTS
from dgiqa_cli.weights import WeightsError
from dgiqa_cli.weights.registry import RegistryEntry, Source, model_entries
from dgiqa_cli.weights.release import fetch_release, record_path, release_info
from dgiqa_cli.weights.resolve import resolve_weights

pytestmark = pytest.mark.full_size  # the release archive holds the real-size .pth the default weights resolve to

runner = CliRunner()
ARCHIVE = "mirror/DGIQA_weights.zip"  # what $DGIQA_MIRROR/DGIQA_weights.zip serves
WEIGHTS_EXIT = EXIT_WEIGHTS  # the exit code of a weights error


def squash(text: str) -> str:
    return "".join(text.split())


def score(*args):
    return runner.invoke(app, ["score", *map(str, args)], catch_exceptions=False)


def folder_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:  # stored, as Dropbox does for .pth files
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Empty caches (Hugging Face and dgiqa), online, no token, no mirror."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("DGIQA_CACHE", str(tmp_path / "dgiqa-cache"))
    monkeypatch.setenv("DGIQA_HOME", str(tmp_path / "dgiqa-home"))
    for name in ("HF_HUB_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HOME", "DGIQA_MIRROR"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _small_checkpoint() -> bytes:
    buffer = io.BytesIO()
    torch.save({"unrelated.weight": torch.zeros(20000)}, buffer)
    return buffer.getvalue()


SMALL = _small_checkpoint()  # in the place of DGIQA_Koniq10k.pth, where only the transfer matters


@pytest.fixture
def release(env, monkeypatch):
    """The authors' Dropbox folder as a zip (another checkpoint first), served under the mirror URL."""
    with FileServer(env / "release") as server:
        archive = server.root / ARCHIVE
        archive.parent.mkdir(parents=True)
        archive.write_bytes(folder_zip({"DGIQA_KADID10k.pth": b"another checkpoint", "DGIQA_Koniq10k.pth": SMALL}))
        monkeypatch.setenv("DGIQA_MIRROR", f"{server.url}/mirror")
        yield server


@pytest.fixture
def hub(env, monkeypatch):
    """An empty local Hub: any request to it is logged (and none should be made for unpublished entries)."""
    with HubServer(env / "hub") as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.open(FIXTURES / "synthetic_480x640.png").convert("RGB").save(path, quality=92)
    return path


def cache_files(env) -> list[str]:
    """Every file in the dgiqa cache but the lock files."""
    root = env / "dgiqa-cache"
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and ".locks" not in p.parts)


def test_first_run_downloads_the_release_once_then_never_again(env, release, hub, photo, scorer, weights_dir):
    standin = (weights_dir / "DGIQA_standin.pth").read_bytes()
    release.root.joinpath(ARCHIVE).write_bytes(
        folder_zip({"DGIQA_KADID10k.pth": b"another checkpoint", "DGIQA_Koniq10k.pth": standin})
    )
    expected = scorer.score(photo).score  # the stand-in file, scored directly
    depth = ("--depth-model", "vits", "--depth-weights", weights_dir / "depth_anything_vits14.pth")
    args = (photo, "--crops", "1", *depth, "--device", "cpu", "--json")

    first = score(*args)
    assert first.exit_code == 0, first.stderr
    assert json.loads(first.stdout)[0]["score"] == pytest.approx(expected, abs=1e-6)
    # the release came through the mirror, once; the Hub copy is unpublished: never requested
    assert release.gets() == [f"/{ARCHIVE}"]
    assert hub.requests == []
    assert "DGIQA_Koniq10k.pth" in first.stderr  # the download's progress line

    # the cache holds the member (not the archive, no partial file) and the record of its hash
    assert cache_files(env) == ["weights/dgiqa-koniq/DGIQA_Koniq10k.pth", "weights/dgiqa-koniq/DGIQA_Koniq10k.pth.json"]
    cached = env / "dgiqa-cache" / "weights" / "dgiqa-koniq" / "DGIQA_Koniq10k.pth"
    assert cached.read_bytes() == standin
    record = json.loads(record_path(cached).read_text())
    assert record["sha256"] == hashlib.sha256(standin).hexdigest()
    assert record["downloaded_from"] == f"{release.url}/{ARCHIVE}" and record["archive_member"] == "DGIQA_Koniq10k.pth"
    info = release_info(model_entries()["dgiqa-koniq"])
    assert info["verified"] == "recorded" and info["ok"] is True and info["sha256"] == record["sha256"]
    assert info["recorded"] == f"first download on {record['downloaded_at'][:10]}"
    listed = {row["name"]: row for row in json.loads(runner.invoke(app, ["weights", "list", "--json"]).stdout)}
    assert listed["dgiqa-koniq"]["cached"] is True and listed["dgiqa-koniq"]["path"] == str(cached)

    # a second run asks nobody: the server is stopped
    release.stop()
    second = score(*args)
    assert second.exit_code == 0, second.stderr
    assert json.loads(second.stdout)[0]["score"] == pytest.approx(expected, abs=1e-6)
    assert release.gets() == [f"/{ARCHIVE}"] and hub.requests == []

    # a cached file that changed is caught by its recorded hash, before anything is loaded
    data = bytearray(standin)
    data[len(data) // 2] ^= 0xFF
    cached.write_bytes(bytes(data))
    started = time.perf_counter()
    broken = score(*args)
    assert time.perf_counter() - started < 10
    assert broken.exit_code == WEIGHTS_EXIT
    message = squash(broken.stderr)
    assert squash(f"{cached}: the cached file changed since its first download") in message
    assert squash(f"recorded {record['sha256']}") in message
    assert squash("`dgiqa weights download dgiqa-koniq --force`") in message
    assert release_info(model_entries()["dgiqa-koniq"])["ok"] is False


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("500", "HTTP 500"),
        ("garbage", "is not a readable zip archive"),
        ("truncated", "the connection broke off after"),
        ("no-member", "holds no DGIQA_Koniq10k.pth (it holds: DGIQA_KADID10k.pth)"),
    ],
)
def test_a_broken_download_is_one_line_and_leaves_nothing(env, release, hub, fault, says):
    archive = release.root / ARCHIVE
    if fault == "no-member":
        archive.write_bytes(folder_zip({"DGIQA_KADID10k.pth": b"another checkpoint"}))
    else:
        release.fault(ARCHIVE, fault)
    started = time.perf_counter()
    with pytest.raises(WeightsError) as caught:
        resolve_weights("dgiqa-koniq")
    assert time.perf_counter() - started < 5
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"dgiqa-koniq: could not download DGIQA_Koniq10k.pth from {release.url}/{ARCHIVE}: ") or (
        message.startswith(f"dgiqa-koniq: the download from {release.url}/{ARCHIVE} ")
    ), message
    assert says in message and "DGIQA_MIRROR" in message and "--weights /path/to/DGIQA_Koniq10k.pth" in message
    assert cache_files(env) == []  # no partial file, no archive, no record
    assert hub.requests == []  # the Hub copy is unpublished: no fallback to it

    # once the host serves the archive again, the next run gets it
    release.fault(ARCHIVE, None)
    archive.write_bytes(folder_zip({"DGIQA_Koniq10k.pth": SMALL}))
    assert resolve_weights("dgiqa-koniq").path.read_bytes() == SMALL


def test_a_stalled_host_times_out_and_a_killed_download_leaves_nothing(env, release, monkeypatch):
    cache = env / "dgiqa-cache" / "weights" / "dgiqa-koniq"
    cache.mkdir(parents=True)
    (cache / ".DGIQA_Koniq10k.pth.k1ll3d.part").write_bytes(b"half of a download killed with SIGKILL")
    monkeypatch.setenv("DGIQA_DOWNLOAD_TIMEOUT", "0.5")
    release.fault(ARCHIVE, "stall")
    started = time.perf_counter()
    with pytest.raises(WeightsError, match=r"no answer within the time allowed \(DGIQA_DOWNLOAD_TIMEOUT=0.5 s"):
        resolve_weights("dgiqa-koniq")
    assert time.perf_counter() - started < 4
    assert cache_files(env) == []  # the stale temporary file of the killed download is gone too


def test_offline_with_empty_caches_fails_at_once_without_a_request(env, release, hub, photo, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    result = score(photo, "--crops", "1", "--depth-model", "vits", "--device", "cpu")
    assert time.perf_counter() - started < 5
    assert result.exit_code == WEIGHTS_EXIT
    message = squash(result.stderr)
    for fragment in (
        "dgiqa-koniq: DGIQA_Koniq10k.pth is not in the Hugging Face cache",
        "and offline mode is on (HF_HUB_OFFLINE). Unset HF_HUB_OFFLINE and dgiqa downloads it",
        "--weights /path/to/DGIQA_Koniq10k.pth",
    ):
        assert squash(fragment) in message, result.stderr
    assert release.requests == [] and hub.requests == []


def test_unpublished_hub_entries_are_never_requested(env, hub):
    started = time.perf_counter()
    with pytest.raises(WeightsError, match="'life-iqa-koniq' is not on the Hugging Face Hub yet"):
        resolve_weights("life-iqa-koniq")  # no release link either: nothing to try
    assert time.perf_counter() - started < 2
    assert hub.requests == []


def test_two_downloads_at_once_fetch_the_file_once(env, release):
    """The second waits on the first's lock, then finds the file in the cache."""
    release.fault(ARCHIVE, "slow")
    results, errors = [], []

    def fetch():
        try:
            results.append(resolve_weights("dgiqa-koniq").path)
        except WeightsError as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(set(results)) == 1 and results[0].read_bytes() == SMALL
    assert release.gets() == [f"/{ARCHIVE}"]


def test_tar_archives_nested_members_and_known_hashes(env, tmp_path):
    """A release as a .tar.gz with the file in a subfolder; a registry sha256 is checked before the file is kept."""
    payload = b"weights" * 1000
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in (("release/README.txt", b"read me"), ("release/ckpt/model.pth", payload)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with FileServer(tmp_path / "files") as server:
        (server.root / "release.tar.gz").write_bytes(buffer.getvalue())
        url = f"{server.url}/release.tar.gz"

        def entry(sha256):
            source = Source("url", url=url, archive="tar", member="model.pth", sha256=sha256)
            return RegistryEntry(
                "t", "model", "dgiqa", repo="", filename="model.pth", published=False, sources=(source,)
            )

        wrong = entry("0" * 64)
        with pytest.raises(WeightsError, match="is not the release the registry knows"):
            fetch_release(wrong, wrong.sources[0])
        assert cache_files(env) == []

        right = entry(hashlib.sha256(payload).hexdigest())
        got = fetch_release(right, right.sources[0])
        assert got.path.read_bytes() == payload and got.verified == "registry" and got.status == "downloaded"
        assert got.record["archive_member"] == "release/ckpt/model.pth"
        again = fetch_release(right, right.sources[0])
        assert again.status == "cached" and server.gets() == ["/release.tar.gz", "/release.tar.gz"]


def test_the_progress_bar_is_on_stderr_and_quiet_silences_it(env, release, photo):
    """SMALL holds no DGIQA tensors: the run fails after the download, which is all this test needs."""
    loud = score(photo, "--device", "cpu")
    assert f"DGIQA_Koniq10k.pth (127.0.0.1:{release.port})" in loud.stderr and loud.stdout == ""
    shutil.rmtree(env / "dgiqa-cache")
    quiet = score(photo, "--device", "cpu", "--quiet")
    assert release.gets() == [f"/{ARCHIVE}"] * 2
    assert "127.0.0.1" not in quiet.stderr and "do not fit the dgiqa architecture" in quiet.stderr  # no bar


def test_a_mirror_that_would_fill_the_disk_is_refused_and_leaves_nothing(env, release, monkeypatch):
    """A member that inflates beyond the cap (a zip bomb) is refused from its declared size before a byte is
    written; a transfer beyond the cap stops at the cap. Both: one line, exit code 3, nothing in the cache."""
    from dgiqa_cli.weights import release as release_module

    monkeypatch.setattr(release_module, "MAX_FILE_BYTES", 100_000)
    archive = release.root / ARCHIVE
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("DGIQA_Koniq10k.pth", bytes(1_000_000))  # 1 MB of zeros: a 1 kB download
    archive.write_bytes(buffer.getvalue())
    assert archive.stat().st_size < 100_000
    with pytest.raises(WeightsError) as bomb:
        resolve_weights("dgiqa-koniq")
    message = str(bomb.value)
    assert "\n" not in message and bomb.value.exit_code == 3
    assert "DGIQA_Koniq10k.pth in the download from" in message and "(1000000 bytes or more" in message
    assert "at most 100000 are accepted): refused, nothing kept" in message and "DGIQA_MIRROR" in message
    assert cache_files(env) == []

    archive.write_bytes(folder_zip({"DGIQA_Koniq10k.pth": torch.randint(0, 255, (300_000,)).byte().numpy().tobytes()}))
    with pytest.raises(WeightsError) as huge:
        resolve_weights("dgiqa-koniq")
    assert "\n" not in str(huge.value) and huge.value.exit_code == 3
    assert str(huge.value).startswith(f"dgiqa-koniq: the download from {release.url}/{ARCHIVE} is larger than any")
    assert cache_files(env) == []
