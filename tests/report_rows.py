"""Rows for the report tests: the test pictures scored once by the real Scorer, shared by both report test modules.

One of them is saved under a name that is markup (``<img src=x onerror=alert(1)>.png``), as a file name may be.
Hand-written rows add what a run can also hold: a failure, and a picture moved away since it was scored.
"""

from __future__ import annotations

import atexit
import copy
import csv
import json
import re
import shutil
import tempfile
from pathlib import Path

from dgiqa_cli.io.rows import FIELDS, _cells, row_of

FIXTURES = Path(__file__).parent / "fixtures"
MARKUP_NAME = "<img src=x onerror=alert(1)>.png"
FAILURE_REASON = "not an image: no decoder recognises its bytes"
_RUN: dict = {}


def scored_run(scorer) -> tuple[Path, list[dict]]:
    """(folder of the pictures, their rows): two scored pictures, one moved away since, one failure."""
    if not _RUN:
        folder = Path(tempfile.mkdtemp(prefix="dgiqa-report-test-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        shutil.copy(FIXTURES / "synthetic_480x640.png", folder / "synthetic_480x640.png")
        shutil.copy(FIXTURES / "synthetic_600x400.png", folder / MARKUP_NAME)
        shutil.copy(FIXTURES / "synthetic_600x400.png", folder / "moved_away.png")
        names = ("synthetic_480x640.png", MARKUP_NAME, "moved_away.png")
        rows = [row_of(scorer.score(str(folder / name)), scorer.settings) for name in names]
        (folder / "moved_away.png").unlink()  # moved or deleted after the run: its row stays
        failure = dict(rows[0], path=str(folder / "broken.jpg"), error=FAILURE_REASON)
        failure.update(score=None, score_std=None, score_ci95_low=None, score_ci95_high=None, width=None, height=None)
        rows.append(failure)
        _RUN.update(folder=folder, rows=rows)
    return _RUN["folder"], copy.deepcopy(_RUN["rows"])


def write_csv(rows: list[dict], path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow(_cells({key: row.get(key) for key in FIELDS}))
    return path


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(_cells({k: r.get(k) for k in FIELDS})) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(rows: list[dict], path: Path) -> Path:
    import pyarrow.parquet as pq

    from dgiqa_cli.io.parquet import table_of

    pq.write_table(table_of([{k: r.get(k) for k in FIELDS} for r in rows]), path)
    return path


def page_data(html_path: Path) -> dict:
    """The data a report page carries (its JSON script element), as the page's own script reads it."""
    text = Path(html_path).read_text(encoding="utf-8")
    found = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S)
    return json.loads(found.group(1))
