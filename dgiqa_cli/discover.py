"""Which files a batch run scores: folders walked in a fixed order, or a list of paths."""

from __future__ import annotations

import fnmatch
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from .images import is_image_path

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
    """Paths from a file (one a line; blank lines and ``#`` comments skipped), or stdin for ``-``."""
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    lines = text.splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


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
