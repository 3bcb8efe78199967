"""Weights from a release link (not the Hub), e.g. the authors' Dropbox folder: downloaded once, kept, checked.

The dgiqa cache sits beside the Hugging Face cache: ``$DGIQA_CACHE`` (default: the
per-user cache folder ``platformdirs`` gives, ``~/.cache/dgiqa`` on Linux)::

    weights/NAME/FILE        the weights file, e.g. weights/dgiqa-koniq/DGIQA_Koniq10k.pth
    weights/NAME/FILE.json   its record: sha256, size, the link, where it was fetched from, when
    weights/.locks/          one lock file per weights file (two processes never fetch the same file)

A download goes to a temporary file in the same folder and is renamed into place
(:mod:`dgiqa_cli.io.atomic`) only once complete and checked; a failed one leaves nothing. A
source that serves an archive (a Dropbox folder link with ``dl=1`` gives a zip of
the folder) is saved, the one member is streamed out of it, and the archive is
deleted. Neither a transfer nor a member may exceed :data:`MAX_FILE_BYTES` (a
hostile or broken mirror must not fill the disk): beyond it the download stops at
once and leaves nothing. The registry knows no sha256 for the authors' files, so the first
download's hash is recorded and every later use checks the file against it.

Environment, read at call time: ``DGIQA_CACHE``; ``DGIQA_MIRROR`` (a base URL that
replaces the release link: ``$DGIQA_MIRROR/<archive or file name>``);
``DGIQA_DOWNLOAD_TIMEOUT`` (seconds to wait for a connection, default 10; data
may pause three times as long); ``HF_HUB_OFFLINE`` (no request at all; only cached files are used). The HTTP
transfer is pooch's ``HTTPDownloader`` (requests underneath, no retries).
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urlsplit

from dgiqa_cli.errors import WeightsError
from dgiqa_cli.io.atomic import PendingFile, atomic_write
from dgiqa_cli.weights.digests import CACHE_ENV, cache_root, sha256_of
from dgiqa_cli.weights.registry import RegistryEntry, Source

ENV_MIRROR = "DGIQA_MIRROR"
ENV_TIMEOUT = "DGIQA_DOWNLOAD_TIMEOUT"
DEFAULT_TIMEOUT = 10.0
_CHUNK = 1 << 20
#: The most bytes a release download or an archive member may have: the largest weights (ViT-L depth, DGIQA)
#: are about 1.4 GB, and the authors' folder zip about 2 GB.
MAX_FILE_BYTES = 4 * 1024**3


class TooLargeError(WeightsError):
    """A transfer or an archive member beyond :data:`MAX_FILE_BYTES`."""


@dataclass(frozen=True)
class ReleaseFile:
    """A checked release file in the dgiqa cache."""

    path: Path
    sha256: str
    verified: str  # what the hash was checked against: "registry" (the registry's sha256) or "recorded"
    record: dict  # the record beside the file (see :func:`record_path`)
    status: str  # "downloaded" or "cached"


# -- where things are -----------------------------------------------------------------------------


def weights_cache_dir() -> Path:
    return cache_root() / "weights"


def release_path(entry: RegistryEntry, source: Source) -> Path:
    """Where the cache keeps ``source``'s file for ``entry`` (whether or not it is there)."""
    return weights_cache_dir() / entry.name / source.filename


def record_path(path: Path) -> Path:
    """The record kept beside a cached release file: ``FILE.json``."""
    return path.with_name(path.name + ".json")


def _lock_path(entry: RegistryEntry, source: Source) -> Path:
    return weights_cache_dir() / ".locks" / f"{entry.name}--{source.filename}.lock"


def offline() -> bool:
    """``HF_HUB_OFFLINE``, read now: no request of any kind, to the Hub or to a release host."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dgiqa")
    except PackageNotFoundError:
        return "dev"


def mirror() -> str:
    return os.environ.get(ENV_MIRROR, "").strip()


def release_url(source: Source) -> str:
    """The URL to fetch: the registry's link, or ``$DGIQA_MIRROR/<archive or file name>`` when a mirror is set."""
    base = mirror()
    if not base:
        return source.url
    return f"{base.rstrip('/')}/{quote(source.mirror_name or source.filename)}"


def download_timeout() -> float:
    try:
        value = float(os.environ.get(ENV_TIMEOUT) or DEFAULT_TIMEOUT)
    except ValueError:
        raise WeightsError(f"{ENV_TIMEOUT}={os.environ[ENV_TIMEOUT]!r} is not a number of seconds") from None
    return value if value > 0 else DEFAULT_TIMEOUT


def expected_sha256(entry: RegistryEntry, source: Source) -> str | None:
    """The registry's hash of the file this source yields, when it has one."""
    if source.sha256:
        return source.sha256.lower()
    if entry.source_sha256 and entry.source_file and entry.source_file == source.filename:
        return entry.source_sha256.lower()
    return None


# -- records --------------------------------------------------------------------------------------


def read_record(path: Path) -> dict | None:
    try:
        record = json.loads(record_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("sha256"), str) else None


def _write_json_atomic(path: Path, data: dict) -> None:
    with atomic_write(path, "w") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")


def cached_record(entry: RegistryEntry, source: Source) -> tuple[Path, dict] | None:
    """The cached file and its record, if both are there and the record is for this link (no hashing)."""
    path = release_path(entry, source)
    record = read_record(path)
    if record is None or not path.is_file() or record.get("source") != source.url:
        return None
    return path, record


def cached_release(entry: RegistryEntry) -> Path | None:
    """The first of ``entry``'s release files that the cache holds, without reading it (``None``: none)."""
    for source in entry.release_sources:
        found = cached_record(entry, source)
        if found is not None:
            return found[0]
    return None


def release_info(entry: RegistryEntry, *, check: bool = True) -> dict | None:
    """What ``dgiqa weights info`` says about a cached release file (``None``: none cached).

    ``{"path", "sha256", "verified": "registry" | "recorded", "recorded": "first download on DATE",
    "source", "downloaded_from", "ok"}``; ``ok`` (the file still hashes to it) is ``None`` unless ``check``.
    """
    for source in entry.release_sources:
        found = cached_record(entry, source)
        if found is None:
            continue
        path, record = found
        expected = expected_sha256(entry, source)
        sha = expected or record["sha256"]
        return {
            "path": str(path),
            "sha256": sha,
            "verified": "registry" if expected else "recorded",
            "recorded": f"first download on {record.get('downloaded_at', '?')[:10]}",
            "source": source.url,
            "downloaded_from": record.get("downloaded_from", source.url),
            "ok": (sha256_of(path) == sha) if check else None,
        }
    return None


# -- fetching -------------------------------------------------------------------------------------


def fetch_release(
    entry: RegistryEntry, source: Source, *, force: bool = False, local_only: bool = False
) -> ReleaseFile:
    """The checked file of a release source: from the cache (no request at all), else downloaded once.

    ``force``: download again even if cached; ``local_only``: never touch the network (nor
    when ``HF_HUB_OFFLINE`` is set). Raises :class:`WeightsError` in one line that says what to do.
    """
    from filelock import FileLock, Timeout

    if not force:
        found = cached_record(entry, source)
        if found is not None:
            return verify_cached(entry, source, *found)
    if offline() or local_only:
        raise WeightsError(_not_cached_message(entry, source))
    lock_file = _lock_path(entry, source)
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"{weights_cache_dir()}: cannot write to the dgiqa cache ({exc}); set {CACHE_ENV}") from None
    lock = FileLock(str(lock_file))
    try:
        lock.acquire(timeout=0.5)
    except Timeout:
        import logging

        logging.getLogger("dgiqa").warning(
            "waiting for another dgiqa process that is downloading %s", release_path(entry, source)
        )
        lock.acquire()
    try:
        if not force:  # another process may have fetched it while this one waited
            found = cached_record(entry, source)
            if found is not None:
                return verify_cached(entry, source, *found)
        _remove_stale_temporaries(entry, source)
        return _download(entry, source)
    finally:
        lock.release()


def _remove_stale_temporaries(entry: RegistryEntry, source: Source) -> None:
    """Temporary files of a download that was killed (this process holds the lock: none is in progress)."""
    path = release_path(entry, source)
    if path.parent.is_dir():
        for stale in path.parent.glob(f".{path.name}.*"):
            if stale.suffix in (".part", ".member", ".tmp"):
                stale.unlink(missing_ok=True)


def verify_cached(entry: RegistryEntry, source: Source, path: Path, record: dict) -> ReleaseFile:
    actual = sha256_of(path)
    expected = expected_sha256(entry, source)
    again = f"`dgiqa weights download {entry.name} --force`"
    if expected and actual != expected:
        raise WeightsError(
            f"{path}: not the release the registry knows (sha256 {actual}, expected {expected}); "
            f"delete it and run again, or download it again: {again}"
        )
    if actual != record["sha256"]:
        when = record.get("downloaded_at", "?")[:10]
        raise WeightsError(
            f"{path}: the cached file changed since its first download on {when} (sha256 {actual}, "
            f"recorded {record['sha256']}), so it is truncated or altered; delete it and run again, "
            f"or download it again: {again}"
        )
    return ReleaseFile(path, actual, "registry" if expected else "recorded", record, "cached")


def _download(entry: RegistryEntry, source: Source) -> ReleaseFile:
    path = release_path(entry, source)
    url = release_url(source)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"{path.parent}: cannot write to the dgiqa cache ({exc}); set {CACHE_ENV}") from None
    pending: list[PendingFile] = []
    try:
        fetched = PendingFile(path, prefix=f".{path.name}.part-")
        pending.append(fetched)
        _transfer(entry, source, url, fetched.temp)
        if source.archive:
            out = PendingFile(path)
            pending.append(out)
            try:
                member, sha, size = _extract(entry, source, url, fetched.temp, out.temp)
            except TooLargeError as exc:
                raise TooLargeError(f"{exc}; {_what_to_do(entry, source, url)}") from None
            fetched.discard()  # the archive is not kept: only the member
        else:
            out, member = fetched, ""
            sha, size = sha256_of(out.temp), out.temp.stat().st_size
        expected = expected_sha256(entry, source)
        if expected and sha != expected:
            raise WeightsError(
                f"{entry.name}: the file downloaded from {url} is not the release the registry knows "
                f"(sha256 {sha}, expected {expected}); {_what_to_do(entry, source, url)}"
            )
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        record = {
            "file": path.name,
            "sha256": sha,
            "size": size,
            "source": source.url,
            "downloaded_from": url,
            "archive_member": member,
            "downloaded_at": now,
            "registry_sha256": expected,
        }
        _write_json_atomic(record_path(path), record)
        out.commit()
    except OSError as exc:
        raise WeightsError(f"{path.parent}: cannot write to the dgiqa cache ({exc}); set {CACHE_ENV}") from None
    finally:
        for leftover in pending:
            leftover.discard()  # a no-op for the one committed
    return ReleaseFile(path, sha, "registry" if expected else "recorded", record, "downloaded")


def _transfer(entry: RegistryEntry, source: Source, url: str, target: Path) -> None:
    """Fetch ``url`` into ``target`` with pooch's HTTP downloader: a progress bar, short timeouts, no retries."""
    import pooch
    import requests

    from dgiqa_cli.weights import progress

    timeout = download_timeout()
    host = urlsplit(url).netloc or url
    bar = None if progress.is_quiet() else progress.bar(f"{source.filename} ({host})")
    downloader = pooch.HTTPDownloader(
        progressbar=bar or False,
        chunk_size=_CHUNK,
        timeout=(timeout, 3 * timeout),
        headers={"User-Agent": f"dgiqa/{_version()}"},
    )
    try:
        with open(target, "wb") as file:
            downloader(url, _CappedFile(file, f"{entry.name}: the download from {url}"), None)
        return
    except TooLargeError as exc:
        raise TooLargeError(f"{exc}; {_what_to_do(entry, source, url)}") from None
    except requests.exceptions.HTTPError as exc:
        response = exc.response
        reason = f"HTTP {response.status_code} {response.reason}" if response is not None else str(exc)
    except requests.exceptions.Timeout:
        allowed = f"{ENV_TIMEOUT}={timeout:g} s to connect, {3 * timeout:g} s for data"
        reason = f"no answer within the time allowed ({allowed})"
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError):
        got = target.stat().st_size if target.exists() else 0
        reason = f"the connection broke off after {got} bytes (a truncated download)"
    except requests.exceptions.ConnectionError:
        reason = f"cannot connect to {host}"
    except requests.exceptions.RequestException as exc:
        reason = f"{type(exc).__name__}: {exc}"
    finally:
        if bar is not None:
            bar.close()
    raise WeightsError(
        f"{entry.name}: could not download {source.filename} from {url}: {reason}; {_what_to_do(entry, source, url)}"
    )


def _extract(entry: RegistryEntry, source: Source, url: str, archive: Path, out: Path) -> tuple[str, str, int]:
    """Stream ``source.member`` out of the archive into ``out``; return (its path in the archive, sha256, size).

    The member is found by its file name, in any folder of the archive (a folder's zip may nest it).
    """
    kind = source.archive.lower()

    def broken(what: str) -> WeightsError:
        return WeightsError(f"{entry.name}: the download from {url} {what}; {_what_to_do(entry, source, url)}")

    if kind == "zip":
        try:
            with zipfile.ZipFile(archive) as zf:
                files = [info for info in zf.infolist() if not info.is_dir()]
                matches = [info for info in files if PurePosixPath(info.filename).name == source.member]
                if len(matches) != 1:
                    raise broken(_member_problem(source.member, [info.filename for info in files], len(matches)))
                what = f"{entry.name}: {matches[0].filename} in the download from {url}"
                _check_size(matches[0].file_size, what)  # declared: refused before a byte is written
                with zf.open(matches[0]) as src:
                    sha, size = _copy(src, out, what)
                return matches[0].filename, sha, size
        except zipfile.BadZipFile as exc:
            raise broken(f"is not a readable zip archive ({_looks_like(archive, exc)})") from None
    if kind.startswith("tar"):
        names = []
        try:
            with tarfile.open(archive, mode="r|*") as tf:  # one pass, in order: nothing else is unpacked
                for info in tf:
                    if not info.isfile():
                        continue
                    names.append(info.name)
                    if PurePosixPath(info.name).name == source.member:
                        what = f"{entry.name}: {info.name} in the download from {url}"
                        _check_size(info.size, what)
                        sha, size = _copy(tf.extractfile(info), out, what)
                        return info.name, sha, size
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise broken(f"is not a readable tar archive ({_looks_like(archive, exc)})") from None
        raise broken(_member_problem(source.member, names, 0))
    raise WeightsError(f"{entry.name}: the registry names an archive type {source.archive!r}; dgiqa reads zip and tar")


def _member_problem(member: str, names: list[str], found: int) -> str:
    if found > 1:
        return f"holds {found} files named {member}"
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return f"holds no {member} (it holds: {shown or 'nothing'})"


def _looks_like(path: Path, exc: Exception) -> str:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(24)
    return f"{size} bytes starting {head!r}: an error page, or a truncated download? {exc}"


def _copy(src, out: Path, what: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(out, "wb") as dst:
        for block in iter(lambda: src.read(_CHUNK), b""):
            size += len(block)
            _check_size(size, what)  # actual: a header may understate what inflates
            digest.update(block)
            dst.write(block)
    return digest.hexdigest(), size


def _check_size(size: int, what: str) -> None:
    if size > MAX_FILE_BYTES:
        raise TooLargeError(
            f"{what} is larger than any weights file ({size} bytes or more; at most {MAX_FILE_BYTES} are accepted): "
            "refused, nothing kept"
        )


class _CappedFile:
    """The file a transfer writes to, refusing to grow beyond :data:`MAX_FILE_BYTES` (pooch writes to any
    object with ``write``)."""

    def __init__(self, file, what: str):
        self._file, self._what, self._size = file, what, 0

    def write(self, data: bytes) -> int:
        self._size += len(data)
        _check_size(self._size, self._what)
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()


# -- messages -------------------------------------------------------------------------------------


def by_hand(entry: RegistryEntry, source: Source) -> str:
    option = "--depth-weights" if entry.kind == "depth" else "--weights"
    page = entry.source or source.url
    return f"download {source.filename} by hand (see {page}) and pass {option} /path/to/{source.filename}"


def _what_to_do(entry: RegistryEntry, source: Source, url: str) -> str:
    base = mirror()
    if base:
        return (
            f"check that the mirror serves {source.mirror_name or source.filename} ({ENV_MIRROR}={base}), "
            f"unset {ENV_MIRROR} to use the original link, or {by_hand(entry, source)}"
        )
    host = urlsplit(url).netloc or url
    return (
        f"try again later; if {host} cannot be reached from here, set {ENV_MIRROR} to a server that holds "
        f"{source.mirror_name or source.filename} (see the README, 'Weights'), or {by_hand(entry, source)}"
    )


def _not_cached_message(entry: RegistryEntry, source: Source) -> str:
    where = release_path(entry, source)
    if offline():
        reason = "offline mode is on (HF_HUB_OFFLINE)"
        todo = (
            f"unset HF_HUB_OFFLINE so that dgiqa downloads it, run `dgiqa weights download {entry.name}` "
            "where there is internet and copy the cache folder here, or "
        )
    else:
        reason = "this command does not download"
        todo = f"run `dgiqa weights download {entry.name}` (or score once), or "
    return f"{entry.name}: {source.filename} is not in the dgiqa cache ({where}) and {reason}; {todo}" + by_hand(
        entry, source
    )
