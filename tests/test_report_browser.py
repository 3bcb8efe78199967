"""Reports opened in a real browser: headless Chromium (Debian's package) driven by Playwright.

No request may leave ``file://``, no script error may happen, every thumbnail must decode, the histogram must
count every scored picture, sorting and the threshold must change what is shown, a name that is markup must stay
text, and a report moved alone to another folder must still show its pictures.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from report_rows import MARKUP_NAME, scored_run

from dgiqa_cli.io.names import encode_path
from dgiqa_cli.report import build, write_report

CHROMIUM = Path("/usr/bin/chromium")
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install 'dgiqa[test]')")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="no /usr/bin/chromium: apt-get install chromium (CI installs it)"
)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def run(scorer):
    return scored_run(scorer)


@pytest.fixture(scope="module")
def report(run, tmp_path_factory):
    _, rows = run
    return write_report(rows, tmp_path_factory.mktemp("report") / "report.html")


class Page:
    """A page with everything it asked for and complained about recorded."""

    def __init__(self, browser, path: Path, **context):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True, **context)
        self.page = self.context.new_page()
        self.requests, self.errors, self.dialogs = [], [], []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        self.page.goto(path.as_uri())
        self.page.wait_for_function("window.dgiqaReportReady !== undefined")

    def texts(self, selector: str) -> list[str]:
        return self.page.locator(selector).all_text_contents()

    def gallery_names(self) -> list[str]:
        return self.page.eval_on_selector_all("#gallery .card .name", "cards => cards.map(c => c.title)")

    def broken_images(self) -> list[str]:
        return self.page.eval_on_selector_all(
            "img", "images => images.filter(i => i.src && !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
        )


@pytest.fixture
def opened(browser, report):
    page = Page(browser, report)
    yield page
    page.context.close()


def threshold(opened) -> float:
    """The page's threshold, exactly (the text beside the slider rounds it)."""
    return float(opened.page.eval_on_selector("#threshold-value", "o => o.dataset.value"))


def scored(rows):
    return sorted((row["score"], encode_path(row["path"])) for row in rows if row["error"] is None)


def test_the_page_loads_with_no_error_and_no_request_off_disk(opened, report):
    assert opened.errors == []
    assert opened.requests and all(url.startswith(("file://", "data:", "blob:")) for url in opened.requests)
    assert opened.broken_images() == []
    assert len(opened.page.locator("#gallery .card img").all()) == 3
    assert opened.page.title() == "dgiqa report"


def test_the_histogram_counts_every_scored_picture(opened, run):
    counts = opened.page.eval_on_selector_all("svg.histogram .bar", "bars => bars.map(b => +b.dataset.count)")
    assert sum(counts) == len(scored(run[1])) == 3


def test_sorting_and_the_threshold_change_what_is_shown(opened, run):
    score_of = {name: score for score, name in scored(run[1])}
    shown = [score_of[name] for name in opened.gallery_names()]
    assert len(shown) == 3 and shown == sorted(shown)  # lowest first
    opened.page.select_option("#sort", "score-desc")
    shown = [score_of[name] for name in opened.gallery_names()]
    assert len(shown) == 3 and shown == sorted(shown, reverse=True) and shown[0] > shown[-1]
    assert opened.texts("#pass-count")[0].startswith("3 of 3 pass")  # from the lowest score: all pass
    move = "(s, v) => { s.value = v; s.dispatchEvent(new Event('input')); }"
    opened.page.eval_on_selector("#threshold", move, 1000)  # the slider's end: the highest score
    assert threshold(opened) == scored(run[1])[-1][0]
    passing = sum(score >= threshold(opened) for score, _ in scored(run[1]))
    assert 1 <= passing < 3 and opened.texts("#pass-count")[0].startswith(f"{passing} of 3 pass")
    opened.page.select_option("#show", "below")
    assert len(opened.gallery_names()) == 3 - passing
    opened.page.select_option("#show", "all")
    opened.page.fill("#filter", "synthetic")
    assert [Path(name).name for name in opened.gallery_names()] == ["synthetic_480x640.png"]


def test_the_threshold_downloads_the_names_above_it(opened, run, tmp_path):
    with opened.page.expect_download() as download:
        opened.page.click("#download-above")
    saved = tmp_path / "above.csv"
    download.value.save_as(saved)
    with open(saved, newline="", encoding="utf-8") as fh:
        got = [(float(row["score"]), row["path"]) for row in csv.DictReader(fh)]
    assert sorted(got) == scored(run[1])  # the threshold starts at the lowest score: every name is above it
    opened.page.eval_on_selector("#threshold", "s => { s.value = 1000; s.dispatchEvent(new Event('input')); }")
    with opened.page.expect_download() as download:
        opened.page.click("#download-below")
    download.value.save_as(saved)
    with open(saved, newline="", encoding="utf-8") as fh:
        got = [(float(row["score"]), row["path"]) for row in csv.DictReader(fh)]
    below = [(score, name) for score, name in scored(run[1]) if score < threshold(opened)]
    assert sorted(got) == below and len(below) in (1, 2)


def test_a_name_that_is_markup_stays_text(opened, run):
    folder, _ = run
    assert str(folder / MARKUP_NAME) in opened.gallery_names()
    assert MARKUP_NAME in opened.texts("#gallery .card .name")
    assert opened.page.locator("img[src='x']").count() == 0
    assert opened.dialogs == [] and opened.errors == []


def test_a_missing_picture_and_a_failure_are_shown_and_explained(opened):
    assert "picture not shown: no such file" in opened.texts("#gallery .card .note")
    assert opened.texts("#missing-note")[0].startswith("1 picture could not be shown")
    failures = opened.texts("table.failures td")
    assert "broken.jpg" in failures[0] and failures[1].startswith("not an image")


def test_clicking_a_picture_opens_it_larger(opened):
    opened.page.locator("#gallery .card").first.click()
    assert opened.page.locator("#view").is_visible()
    assert opened.page.eval_on_selector("#view-image", "i => i.naturalWidth") > 0
    assert "no explain panel" in opened.texts("#view-details")[0]


def test_a_report_moved_alone_still_shows_its_pictures(browser, report, tmp_path):
    moved = tmp_path / "elsewhere" / "copy.html"
    moved.parent.mkdir()
    shutil.copy(report, moved)
    page = Page(browser, moved, offline=True)
    try:
        assert page.errors == [] and page.broken_images() == []
        widths = page.page.eval_on_selector_all("#gallery .card img", "i => i.map(x => x.naturalWidth)")
        assert sorted(widths) == [171, 176, 256]  # the two pictures' thumbnails, upright, and the placeholder
    finally:
        page.context.close()


def test_a_large_run_shows_thumbnails_from_the_folder_beside_it(browser, run, tmp_path, monkeypatch):
    monkeypatch.setattr(build, "SELF_CONTAINED_LIMIT", 1)
    path = write_report(run[1], tmp_path / "large.html")
    page = Page(browser, path)
    try:
        assert page.errors == [] and page.broken_images() == []
        sources = page.page.eval_on_selector_all("#gallery .card img", "i => i.map(x => x.src)")
        assert sum("large_files/" in src for src in sources) == 2
    finally:
        page.context.close()


def test_a_notebook_cell_shows_the_working_page_in_its_frame(browser, run, tmp_path):
    from dgiqa_cli.report import Report

    cell = tmp_path / "cell.html"  # what a notebook puts in the output cell: the object's _repr_html_
    cell.write_text(f"<!doctype html><html><body>{Report(run[1])._repr_html_()}</body></html>", encoding="utf-8")
    context = browser.new_context()
    try:
        view = context.new_page()
        errors = []
        view.on("pageerror", lambda error: errors.append(str(error)))
        view.goto(cell.as_uri())
        frame = view.wait_for_selector("iframe").content_frame()
        frame.wait_for_function("window.dgiqaReportReady !== undefined")
        # drawn again once the frame is laid out (a ResizeObserver)
        frame.wait_for_function("document.querySelectorAll('#gallery .card').length === 3")
        frame.wait_for_function("[...document.querySelectorAll('#gallery img')].every(i => i.complete)")
        widths = frame.eval_on_selector_all("#gallery .card img", "i => i.map(x => x.naturalWidth)")
        assert sorted(widths) == [171, 176, 256] and errors == []
    finally:
        context.close()
