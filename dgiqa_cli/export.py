"""Result rows as CSV and JSON Lines, written and flushed as each image finishes."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

FIELDS = ("path", "score", "width", "height", "crops", "arch", "model", "depth_model", "scale", "error")


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


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Rows of a JSON Lines file written by :class:`JsonlWriter`."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def drop_partial_last_row(path: str | os.PathLike) -> None:
    """Cut a row that a killed run left half-written (no final newline), so appending stays valid."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        data = fh.read()
        if data.endswith(b"\n"):
            return
        fh.truncate(data.rfind(b"\n") + 1)


def completed_paths(path: str | os.PathLike) -> set[str]:
    """Paths that already have a row in an output file (after repairing a torn last row)."""
    path = Path(path)
    if not path.exists():
        return set()
    drop_partial_last_row(path)
    rows = read_jsonl(path) if path.suffix.lower() in (".jsonl", ".ndjson") or _looks_jsonl(path) else read_csv(path)
    return {row["path"] for row in rows}


def _looks_jsonl(path: Path) -> bool:
    with open(path, encoding="utf-8") as fh:
        return fh.read(1) == "{"


def score_summary(scores: list[float]) -> dict[str, float]:
    """min, quartiles and max of the scores (linear interpolation, like numpy's default)."""
    import numpy as np

    if not scores:
        return {}
    q = np.quantile(np.asarray(scores, dtype=np.float64), [0, 0.25, 0.5, 0.75, 1])
    return dict(zip(("min", "q1", "median", "q3", "max"), map(float, q), strict=True))
