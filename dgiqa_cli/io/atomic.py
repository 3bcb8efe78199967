"""Writing a file so that a reader sees the old one or the new one, never half of one: the package's one way.

The new content goes to a temporary file with a unique name in the target's folder (two writers never share
one), is flushed to disk, and replaces the target in one ``os.replace``. The result keeps the target's mode,
or for a new file gets what ``open()`` would give it (0o666 less the umask, never ``mkstemp``'s 0600). On any
exception the temporary file is removed and the target is left as it was.

:func:`atomic_write` yields an open file; :func:`atomic_path` yields the temporary path, for writers that
want a path (``torch.save``, pyarrow); :class:`PendingFile` is the same for a file written over a whole run
(Parquet's streaming writer), committed or discarded by hand.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


class PendingFile:
    """An empty temporary file beside ``path`` (``temp``), which :meth:`commit` puts in its place.

    ``prefix`` names it, so that a later run can recognise what a killed one left (``.rows.parquet.partial-*``).
    """

    def __init__(self, path: str | os.PathLike, prefix: str | None = None):
        self.path = Path(path)
        prefix = prefix if prefix is not None else f".{self.path.name}."
        for _ in range(100):
            temp = self.path.with_name(f"{prefix}{secrets.token_hex(4)}.tmp")
            try:
                # O_EXCL: a name no other writer holds; 0o666: the kernel applies the umask, as open() does.
                os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666))
            except FileExistsError:
                continue
            self.temp = temp
            return
        raise FileExistsError(f"{self.path.parent}: no free temporary name for {self.path.name}")

    def commit(self) -> Path:
        """Flush the temporary file to disk, give it the target's mode, and move it over the target."""
        try:
            fd = os.open(self.temp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.chmod(self.temp, stat.S_IMODE(os.stat(self.path).st_mode))  # an existing file keeps its mode
            os.replace(self.temp, self.path)
        except BaseException:
            self.discard()
            raise
        return self.path

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.temp)


@contextmanager
def atomic_path(path: str | os.PathLike, prefix: str | None = None) -> Iterator[Path]:
    """A temporary path to write the new ``path`` to; it replaces ``path`` when the block ends without error."""
    pending = PendingFile(path, prefix)
    try:
        yield pending.temp
    except BaseException:
        pending.discard()
        raise
    pending.commit()


@contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "wb", *, encoding: str | None = None, newline: str | None = None
) -> Iterator[IO]:
    """An open file (``mode`` "wb" or "w") whose content replaces ``path`` when the block ends without error."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes a whole new file: mode 'w' or 'wb', not {mode!r}")
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as temp, open(temp, mode, encoding=encoding, newline=newline) as file:
        yield file
