"""Rows for a report: read from CSV, JSON Lines or Parquet outputs, and checked to come from one run.

A report is a statement about one run. Rows made with other weights, crops or precision would put two
incomparable score scales in one histogram, so :func:`check_one_run` refuses them, naming each setting that
differs (the caller may allow it, ``--allow-mixed``). A malformed file is a :class:`RowsError` naming the file
and the line, never a traceback.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from dgiqa_cli.errors import UsageError
from dgiqa_cli.io.names import printable
from dgiqa_cli.io.rows import SETTINGS_FIELDS, _decode_paths, _parse


class ReportError(UsageError):
    """A report cannot be made; ``str()`` is one line saying why."""


class RowsError(ReportError):
    """A rows file cannot be read: the message names the file (and the line, where there is one)."""


class MixedRunsError(ReportError):
    """Rows from runs with different settings, each difference named."""


def read_rows(paths: list[str | os.PathLike], csv_safe: bool = False) -> list[dict]:
    """Every row of ``paths``: CSV, JSON Lines (``.jsonl``/``.ndjson`` or a first ``{``), Parquet files, or a
    folder of Parquet files (a ``--ray`` run). ``csv_safe``: the CSVs were written with ``--csv-safe``.
    Raises :class:`RowsError` on a file that is not a rows file."""
    rows: list[dict] = []
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(p for p in path.glob("*.parquet") if not p.name.startswith("."))
            if not files:
                raise RowsError(f"{printable(str(path))}: a folder without Parquet files")
            for file in files:
                rows.extend(read_parquet(file))
        elif not path.is_file():
            raise RowsError(f"{printable(str(path))}: no such file")
        elif path.suffix.lower() == ".parquet" or _starts_with(path, b"PAR1"):
            rows.extend(read_parquet(path))
        elif path.suffix.lower() in (".jsonl", ".ndjson") or _starts_with(path, b"{"):
            rows.extend(read_jsonl(path))
        else:
            rows.extend(read_csv(path, csv_safe))
    return rows


def _starts_with(path: Path, magic: bytes) -> bool:
    with open(path, "rb") as fh:
        return fh.read(len(magic)) == magic


def read_csv(path: Path, csv_safe: bool = False) -> list[dict]:
    """A CSV written by ``dgiqa batch --csv`` (``csv_safe``: with ``--csv-safe``, whose quotes are undone)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            _check_columns(path, reader.fieldnames or [])
            rows = []
            for raw in reader:
                if None in raw or any(value is None for value in raw.values()):
                    raise RowsError(f"{printable(str(path))}, line {reader.line_num}: not as many cells as columns")
                try:
                    rows.append(_parse(raw, csv_safe))
                except ValueError as exc:
                    raise RowsError(f"{printable(str(path))}, line {reader.line_num}: {exc}") from None
            return rows
    except UnicodeDecodeError:
        raise RowsError(f"{printable(str(path))}: not UTF-8 text (is it a rows file?)") from None
    except csv.Error as exc:
        raise RowsError(f"{printable(str(path))}: not a CSV file ({exc})") from None


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise RowsError(f"{printable(str(path))}, line {number}: not JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise RowsError(f"{printable(str(path))}, line {number}: not a JSON object")
                if number == 1:
                    _check_columns(path, list(row))
                rows.append(_checked_numbers(path, number, _decode_paths(row)))
    except UnicodeDecodeError:
        raise RowsError(f"{printable(str(path))}: not UTF-8 text (is it a rows file?)") from None
    return rows


def _checked_numbers(path: Path, number: int, row: dict) -> dict:
    for key in ("score", "score_std", "score_ci95_low", "score_ci95_high"):
        value = row.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise RowsError(f"{printable(str(path))}, line {number}: {key} is not a number ({printable(repr(value))})")
    return row


def read_parquet(path: Path) -> list[dict]:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pyarrow.ArrowException, OSError) as exc:
        raise RowsError(f"{printable(str(path))}: not a Parquet file ({printable(str(exc).splitlines()[0])})") from None
    _check_columns(path, table.column_names)
    return [_decode_paths(row) for row in table.to_pylist()]


def _check_columns(path: Path, columns: list[str]) -> None:
    missing = [c for c in ("path", "score", "error") if c not in columns]
    if missing:
        raise RowsError(
            f"{printable(str(path))}: no {', '.join(missing)} column (not rows written by dgiqa batch or eval)"
        )


def check_one_run(rows: list[dict], allow_mixed: bool = False) -> dict:
    """The run's settings (:data:`~dgiqa_cli.io.rows.SETTINGS_FIELDS`, blank ones included); rows that disagree
    raise :class:`MixedRunsError` naming each differing setting and its values, unless ``allow_mixed`` (then a
    mixed setting reads ``"a, b"``)."""
    seen: dict[str, list[str]] = {key: [] for key in SETTINGS_FIELDS}
    for row in rows:
        for key in SETTINGS_FIELDS:
            value = "" if row.get(key) is None else str(row[key])
            if value not in seen[key]:
                seen[key].append(value)
    differ = {key: values for key, values in seen.items() if len(values) > 1}
    if differ and not allow_mixed:
        named = "; ".join(
            f"{key}: {' vs '.join(printable(v) or '(blank)' for v in values)}" for key, values in differ.items()
        )
        raise MixedRunsError(f"the rows come from different runs ({named}); add --allow-mixed to report them together")
    return {key: ", ".join(values) for key, values in seen.items()}
