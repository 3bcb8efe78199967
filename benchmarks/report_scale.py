"""How fast a 100,000-row report opens in Chromium (the issue asks under 3 s), against a 1,000-row one.

The rows are made up (the scores are random numbers, not a model's): what is measured is the page, not the
model. 5,000 rows name real small pictures (hard links to 50 of them), the other rows name pictures that are
gone, so they get the placeholder: that keeps the thumbnails' making short, and puts the report past the
self-contained limit, so its thumbnails go to the folder beside it as in any large run.

    python benchmarks/report_scale.py            # needs /usr/bin/chromium and playwright

Prints, for each size, the seconds to write the report and to open it (from navigation to the gallery drawn,
the page's own ``dgiqaReportReady`` mark), best of three opens.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from dgiqa_cli.report import write_report

SETTINGS = dict(model="bench.pth", depth_model="vits", weights_sha256="0" * 64, crops=20, crop_mode="official")
SETTINGS.update(seed=42, precision="fp32", backend="torch")


def make_rows(folder: Path, count: int, real: int) -> list[dict]:
    rng = random.Random(0)
    sources = []
    for i in range(50):
        source = folder / f"source_{i:02d}.png"
        Image.new("RGB", (96, 64), (rng.randrange(256), rng.randrange(256), rng.randrange(256))).save(source)
        sources.append(source)
    rows = []
    for i in range(count):
        path = folder / "pictures" / f"{i // 1000:03d}" / f"picture_{i:06d}.jpg"
        if i < real:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.link(sources[i % len(sources)], path)
        score = min(1.0, max(0.0, rng.gauss(0.55, 0.15)))
        std = abs(rng.gauss(0.02, 0.01))
        row = dict(SETTINGS, path=str(path), score=score, score_std=std, width=96, height=64, error=None)
        row.update(score_ci95_low=score - 2 * std, score_ci95_high=score + 2 * std)
        if i % 500 == 499:
            row.update(score=None, score_std=None, error="not an image: made-up failure")
        rows.append(row)
    return rows


def open_time(browser, path: Path) -> float:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(path.as_uri())
    page.wait_for_function("window.dgiqaReportReady !== undefined", timeout=60_000)
    seconds = page.evaluate("window.dgiqaReportReady") / 1000
    if errors:
        raise SystemExit(f"page errors: {errors}")
    page.close()
    return seconds


def main() -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as scratch, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        for count, real in ((1_000, 1_000), (100_000, 5_000)):
            folder = Path(scratch) / str(count)
            folder.mkdir()
            rows = make_rows(folder, count, real)
            start = time.perf_counter()
            page = write_report(rows, folder / "report.html")
            written = time.perf_counter() - start
            size = page.stat().st_size / 1e6
            opens = [open_time(browser, page) for _ in range(3)]
            print(
                f"{count:>7} rows: written in {written:.1f} s ({size:.1f} MB page), opened in {min(opens):.2f} s "
                f"(best of 3: {', '.join(f'{s:.2f}' for s in opens)})",
                flush=True,
            )
        browser.close()


if __name__ == "__main__":
    sys.exit(main())
