"""A file's sha256 (and what else reading it in full tells), once per version of the file, not on every start.

Hashing a checkpoint (0.1 to 1.3 GB) cost every ``dgiqa score`` a second or more. A small record in dgiqa's
cache (``$DGIQA_CACHE/hashes/<digest of the path>.json``) keeps the sha256 with what identifies that version
of the file: its resolved path, size, mtime_ns, inode and ctime_ns. When any of them differs the file is
hashed in full again. ctime changes on every write, rename or ``utime`` and cannot be set back, so weights
rewritten in place with their size and mtime restored are still caught. A record that cannot be read or
does not hold a sha256 is ignored and rewritten; one that cannot be written costs the next start its speed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from dgiqa_cli.io.atomic import atomic_write

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def sha256_of(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in full."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


CACHE_ENV = "DGIQA_CACHE"


def cache_root() -> Path:
    """``$DGIQA_CACHE``, else the per-user cache folder (``~/.cache/dgiqa`` on Linux), as the environment says now:
    downloads, compiled networks, depth maps and these records all live under it."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    from platformdirs import user_cache_path

    return user_cache_path("dgiqa", appauthor=False)


def hashes_dir() -> Path:
    return cache_root() / "hashes"


def _identity(path: Path) -> dict:
    status = os.stat(path)
    return {
        "path": str(path),
        "size": status.st_size,
        "mtime_ns": status.st_mtime_ns,
        "inode": status.st_ino,
        "ctime_ns": status.st_ctime_ns,
    }


def record_path(path: str | os.PathLike) -> Path:
    """Where the record of ``path``'s sha256 lives."""
    resolved = str(Path(path).resolve())
    return hashes_dir() / f"{hashlib.sha256(resolved.encode()).hexdigest()[:32]}.json"


def remembered(path: str | os.PathLike, fact: str, compute: Callable[[Path], str], valid=None) -> str:
    """A fact about one version of a file (``sha256``; ``arch``, the architecture a bare checkpoint's tensors
    hold): from the file's record when the file is the version recorded (and ``valid(value)``), else
    ``compute(path)``, recorded beside the file's other facts."""
    resolved = Path(path).resolve()
    identity = _identity(resolved)
    record = record_path(resolved)
    try:
        saved = json.loads(record.read_text(encoding="utf-8"))
        facts = {k: v for k, v in saved.items() if k != "identity"} if saved["identity"] == identity else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        facts = {}  # no record, or a damaged one: computed below and written anew
    value = facts.get(fact)
    if isinstance(value, str) and (valid is None or valid(value)):
        return value
    value = compute(resolved)
    if _identity(resolved) == identity:  # a file that changed while it was read is not recorded
        try:
            record.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(record, "w") as fh:
                json.dump({**facts, fact: value, "identity": identity}, fh)
        except OSError:
            pass
    return value


def file_sha256(path: str | os.PathLike) -> str:
    """``path``'s sha256: from its record when the file is the version recorded, else hashed (and recorded)."""
    return remembered(path, "sha256", sha256_of, valid=_SHA256.match)
