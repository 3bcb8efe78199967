"""Rebuild docs/report.png: `dgiqa batch --report` on the test pictures, with STAND-IN weights, in Chromium.

The real checkpoints are not in the repository, so the scores come from the seeded stand-in weights the tests
use (random networks): the picture shows what the report looks like, not what DGIQA thinks of the pictures.
A file that is not a picture is added, so that the failures table has a row.

    python docs/make_report_example.py      # a few minutes on a laptop CPU (the explain panel); needs chromium
"""

from __future__ import annotations

import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_explain_example import FIXTURES, ROOT, standin_weights  # noqa: E402

from dgiqa_cli.cli import app  # noqa: E402

TARGET = ROOT / "docs" / "report.png"


def main() -> int:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        dgiqa, depth = standin_weights(folder)
        pictures = folder / "photos"
        pictures.mkdir()
        for picture in ("synthetic_480x640.png", "synthetic_600x400.png"):
            shutil.copy(FIXTURES / picture, pictures / picture)
        (pictures / "notes.jpg").write_bytes(b"a text file saved as .jpg")
        page = folder / "report.html"
        args = ["batch", str(pictures), "--csv", str(folder / "scores.csv"), "--report", str(page), "--crops", "5"]
        args += ["--heatmaps", str(folder / "heatmaps"), "--heatmaps-worst", "1", "--weights", str(dgiqa)]
        args += ["--depth-model", "vits", "--depth-weights", str(depth), "--device", "cpu"]
        print("dgiqa " + shlex.join(args), file=sys.stderr, flush=True)
        result = CliRunner().invoke(app, args, catch_exceptions=False)
        print(result.stderr, end="", file=sys.stderr)
        if result.exit_code not in (0, 1) or not page.exists():  # 1: notes.jpg failed, as intended
            return result.exit_code or 1
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            view = browser.new_page(viewport={"width": 1100, "height": 800})
            view.goto(page.as_uri())
            view.wait_for_function("window.dgiqaReportReady !== undefined")
            view.screenshot(path=str(TARGET), full_page=True)
            browser.close()
    print(f"wrote {TARGET.relative_to(ROOT)} ({TARGET.stat().st_size // 1024} KB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
