"""Result rows as CSV and JSON Lines, written and flushed as each image finishes."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

FIELDS = ("path", "score", "width", "height", "crops", "model", "depth_model", "error")


def check_writable(path: str | os.PathLike) -> Path:
    """Fail before any work starts when an output file cannot be written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OSError(f"{path}: is a directory, not a file")
    if not parent.is_dir():
        raise OSError(f"{path}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OSError(f"{path}: permission denied")
    return path


def row_of(result) -> dict:
    """The exported fields of a ScoreResult; floats keep full precision (repr), blanks stay blank."""
    row = result.as_dict()
    return {k: row.get(k) for k in FIELDS}


class RowWriter:
    """An output file that stays open for a whole run (use it as a context manager)."""

    _fh = None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CsvWriter(RowWriter):
    """Appends rows to a CSV file, header first when the file is new, flushing after every row."""

    def __init__(self, path: str | os.PathLike, append: bool = False):
        self.path = Path(path)
        fresh = not (append and self.path.exists() and self.path.stat().st_size > 0)
        self._fh = open(self.path, "w" if fresh else "a", newline="", encoding="utf-8")  # noqa: SIM115 (open for the run)
        self._writer = csv.DictWriter(self._fh, fieldnames=FIELDS)
        if fresh:
            self._writer.writeheader()
            self._fh.flush()

    def write(self, result) -> None:
        row = row_of(result)
        self._writer.writerow({k: "" if v is None else v for k, v in row.items()})
        self._fh.flush()


class JsonlWriter(RowWriter):
    """Appends one JSON object per line, flushing after every row."""

    def __init__(self, path: str | os.PathLike, append: bool = False):
        self.path = Path(path)
        self._fh = open(self.path, "a" if append else "w", encoding="utf-8")  # noqa: SIM115 (open for the run)

    def write(self, result) -> None:
        self._fh.write(json.dumps(row_of(result), ensure_ascii=False) + "\n")
        self._fh.flush()


def read_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of a CSV written by :class:`CsvWriter`, numbers parsed back."""
    with open(path, newline="", encoding="utf-8") as fh:
        return [_parse(row) for row in csv.DictReader(fh)]


def _parse(row: dict) -> dict:
    out = {k: (v if v != "" else None) for k, v in row.items()}
    if out.get("score") is not None:
        out["score"] = float(out["score"])
    for key in ("width", "height", "crops"):
        if out.get(key) is not None:
            out[key] = int(out[key])
    return out
