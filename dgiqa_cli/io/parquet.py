"""Result rows as Parquet: the CSV's columns (:data:`dgiqa_cli.io.rows.FIELDS`), typed, written atomically.

A Parquet file cannot be appended to, and is unreadable until its footer is written. So rows go, a row group
at a time, to a hidden ``.NAME.partial-*`` beside the output (:class:`dgiqa_cli.io.atomic.PendingFile`), which is
renamed over it when the run closes (normally, or on Ctrl-C / SIGTERM): the output is always either the previous
complete file or the new one. ``--resume`` copies the rows of the existing file into the new one first. A run
killed outright (SIGKILL, power loss) leaves the previous file as it was, and its ``.partial-*`` is discarded by
the next run: the rows of the killed run are scored again, never twice.

A distributed run writes a folder instead: one file per input unit (a shard, a Parquet file, a group of
loose files), each written the same way (:class:`UnitFile`) and only ever present complete, so ``--resume``
skips every unit whose file exists.
"""

from __future__ import annotations

import contextlib
import glob
import os
from pathlib import Path

from dgiqa_cli.io import interrupts
from dgiqa_cli.io.atomic import PendingFile
from dgiqa_cli.io.rows import _FLOATS, _NUMERIC, FIELDS, OutputError, _cells, _decode_paths, row_of

ROW_GROUP_ROWS = 1024  # rows buffered before a row group is written: a killed run loses at most the file's rows
SUFFIX = ".parquet"


def require_pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ImportError("Parquet needs pyarrow, a dgiqa dependency missing here: pip install pyarrow") from None
    return pyarrow


def schema():
    """The Parquet schema of a row: floats for scores, integers for sizes and settings, text for the rest."""
    pa = require_pyarrow()
    kinds = {name: pa.float64() if name in _FLOATS else pa.int64() for name in _NUMERIC}
    return pa.schema([(name, kinds.get(name, pa.string())) for name in FIELDS])


def table_of(rows: list[dict]):
    """Rows (as :func:`dgiqa_cli.io.rows.row_of` gives them) as an Arrow table: paths escaped, text valid UTF-8."""
    pa = require_pyarrow()
    cells = [_cells(row) for row in rows]
    return pa.Table.from_pylist(cells, schema=schema())


def partial_prefix(path: Path) -> str:
    """How the temporary files of a run writing ``path`` begin (``.NAME.partial``), so that the next run finds
    what a killed one left."""
    return f".{path.name}.partial"


class ParquetWriter:
    """A Parquet output for a whole run, with the interface of :class:`dgiqa_cli.io.rows.RowWriter`."""

    def __init__(self, path: str | os.PathLike, append: bool = False, settings: dict | None = None):
        import pyarrow.parquet as pq

        self.path = Path(path)
        self.settings = dict(settings or {})
        self.rows: list[dict] = []
        previous = pq.read_table(self.path) if append and self.path.is_file() and self.path.stat().st_size else None
        try:
            for left in self.path.parent.glob(glob.escape(partial_prefix(self.path)) + "*"):  # what a killed run left
                left.unlink(missing_ok=True)  # (the output's lock keeps two runs off one output)
            self._pending = PendingFile(self.path, prefix=f"{partial_prefix(self.path)}-")
            self.temp = self._pending.temp
        except OSError as error:
            raise OutputError.wrap(self.path, error) from None
        try:
            self._writer = pq.ParquetWriter(self.temp, schema())
            if previous is not None:
                self._writer.write_table(previous.select(list(FIELDS)).cast(schema()))
        except OSError as error:
            self._pending.discard()
            raise OutputError.wrap(self.path, error) from None

    def write(self, result) -> None:
        self.rows.append(row_of(result, self.settings))
        if len(self.rows) >= ROW_GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.rows or self._writer is None:
            return
        try:
            self._writer.write_table(table_of(self.rows))
        except OSError as error:
            raise OutputError.wrap(self.path, error) from None
        self.rows.clear()

    def close(self) -> None:
        """Write what is buffered and put the file in place (see the module docstring)."""
        if self._writer is None:
            return
        try:
            self.flush()
            self._writer.close()
            self._writer = None
            self._pending.commit()
        except OSError as error:
            self._writer = None
            self._pending.discard()
            raise OutputError.wrap(self.path, error) from None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class UnitFile:
    """One unit's rows in a distributed run's output folder: ``FOLDER/UNIT_ID.parquet``, present only complete."""

    def __init__(self, folder: str | os.PathLike, unit_id: str):
        import pyarrow.parquet as pq

        self.path = Path(folder) / f"{unit_id}{SUFFIX}"
        self._pending = PendingFile(self.path, prefix=f"{partial_prefix(self.path)}-")
        self.temp = self._pending.temp
        self._writer = pq.ParquetWriter(self.temp, schema())

    def write_table(self, table) -> None:
        self._writer.write_table(table.select(list(FIELDS)).cast(schema()))

    def commit(self) -> None:
        self._writer.close()
        self._pending.commit()
        interrupts.reached("unit")

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()
        self._pending.discard()


def done_units(folder: str | os.PathLike) -> set[str]:
    """Units whose output file is in ``folder`` (complete, by construction)."""
    folder = Path(folder)
    if not folder.is_dir():
        return set()
    return {p.name[: -len(SUFFIX)] for p in folder.iterdir() if p.name.endswith(SUFFIX) and p.name[0] != "."}


def clean_partials(folder: str | os.PathLike) -> None:
    """Remove the ``.partial`` files a killed run left in an output folder."""
    for p in Path(folder).glob(f".*{SUFFIX}.partial*"):
        with contextlib.suppress(OSError):
            p.unlink()


def read_rows(path: str | os.PathLike) -> list[dict]:
    """The rows of a Parquet output (a file, or a distributed run's folder), paths decoded, blanks ``None``."""
    import pyarrow.parquet as pq

    path = Path(path)
    files = sorted(p for p in path.glob(f"*{SUFFIX}") if not p.name.startswith(".")) if path.is_dir() else [path]
    rows = []
    for file in files:
        rows.extend(_decode_paths(row) for row in pq.read_table(file).to_pylist())
    return rows


def completed_paths(path: str | os.PathLike) -> set[str]:
    path = Path(path)
    if not path.exists() or (path.is_file() and path.stat().st_size == 0):
        return set()
    return {row["path"] for row in read_rows(path)}
