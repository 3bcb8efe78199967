"""Which files a batch run scores: folders walked in a fixed order, or a list of paths."""

from __future__ import annotations

import fnmatch
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from dgiqa_cli.io.images import is_image_path

log = logging.getLogger("dgiqa")


def walk_images(root: Path, recursive: bool = True, pattern: str | None = None) -> Iterator[str]:
    """Image files under ``root``, sorted by name folder by folder, so every run sees the same order.

    Symbolic links to folders are followed, but each real folder is visited
    once, so a link loop ends the walk there instead of never. A folder that
    cannot be read is reported on stderr and skipped; the rest is walked.
    """
    seen: set[tuple[int, int]] = set()

    def warn(error: OSError) -> None:
        log.warning("cannot read folder %s: %s", error.filename, error.strerror or error)

    for folder, subfolders, files in os.walk(root, onerror=warn, followlinks=True):
        try:
            info = os.stat(folder)
        except OSError as error:
            warn(error)
            subfolders[:] = []
            continue
        if (info.st_dev, info.st_ino) in seen:
            log.warning("skipping %s: a link back to a folder already walked", folder)
            subfolders[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        subfolders[:] = sorted(subfolders) if recursive else []
        for name in sorted(files):
            if is_image_path(name) and (pattern is None or _matches(folder, root, name, pattern)):
                yield os.path.join(folder, name)


def _matches(folder: str, root: Path, name: str, pattern: str) -> bool:
    """``--glob`` matches the file name, or the path below the root when the pattern has a slash."""
    if "/" in pattern:
        return fnmatch.fnmatch(os.path.relpath(os.path.join(folder, name), root), pattern)
    return fnmatch.fnmatch(name, pattern)


def read_path_list(source: str) -> list[str]:
    """Paths from a file (one a line; blank lines and ``#`` comments skipped), or stdin for ``-``.

    Read as bytes and decoded like the names ``os.listdir`` gives (``os.fsdecode``), so a name that is not
    valid UTF-8 arrives as the same str discovery would yield for it. A list holding NUL bytes
    (``find -print0``) is split on NUL instead, taken verbatim: the only way to list names holding newlines.
    """
    if source == "-":
        stdin = getattr(sys.stdin, "buffer", None)
        data = stdin.read() if stdin is not None else os.fsencode(sys.stdin.read())
    else:
        data = Path(source).read_bytes()
    data = data.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark some Windows editors write
    if b"\0" in data:
        return [os.fsdecode(name) for name in data.split(b"\0") if name]
    paths = []
    for line in data.splitlines():
        line = line.strip()
        if line and not line.startswith(b"#"):
            paths.append(os.fsdecode(line))
    return paths


def collect_inputs(
    roots: list[Path], recursive: bool = True, pattern: str | None = None, from_list: str | None = None
) -> list[str]:
    """Every input of a run, in order, without duplicates. Files named directly are kept whatever their suffix."""
    paths: list[str] = []
    if from_list is not None:
        paths.extend(read_path_list(from_list))
    for root in roots:
        if root.is_dir():
            paths.extend(walk_images(root, recursive, pattern))
        else:
            paths.append(str(root))  # a file (or a missing one: its row will say so)
    return list(dict.fromkeys(paths))
