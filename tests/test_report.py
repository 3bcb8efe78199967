"""``dgiqa report`` without a browser: rows read from every kind of output, runs checked, bad input, large runs,
explain panels from a heatmaps folder, and ``dgiqa batch --report`` end to end."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image
from report_rows import FIXTURES, MARKUP_NAME, page_data, scored_run, write_csv, write_jsonl, write_parquet
from typer.testing import CliRunner

from dgiqa_cli.cli import app
from dgiqa_cli.io.names import encode_path
from dgiqa_cli.report import Report, build, write_report

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def run(scorer):
    return scored_run(scorer)


def test_csv_jsonl_parquet_and_a_ray_folder_give_the_same_report(run, tmp_path):
    _, rows = run
    ray = tmp_path / "ray"
    ray.mkdir()
    write_parquet(rows[:2], ray / "unit-a.parquet")
    write_parquet(rows[2:], ray / "unit-b.parquet")
    inputs = {
        "csv": write_csv(rows, tmp_path / "rows.csv"),
        "jsonl": write_jsonl(rows, tmp_path / "rows.jsonl"),
        "parquet": write_parquet(rows, tmp_path / "rows.parquet"),
        "ray": ray,
    }
    scored = sorted((encode_path(r["path"]), r["score"]) for r in rows if r["error"] is None)
    for kind, source in inputs.items():
        out = tmp_path / f"{kind}.html"
        result = invoke("report", source, "--out", out, "--quiet")
        assert result.exit_code == 0, (kind, result.output)
        data = page_data(out)
        assert sorted(zip(data["rows"]["name"], data["rows"]["score"], strict=True)) == scored, kind
        page = out.read_text(encoding="utf-8")
        assert '<span id="count-scored"><b>3</b> scored</span>' in page
        assert '<span id="count-failed"><b>1</b> failed</span>' in page
        assert rows[0]["weights_sha256"] in page


def test_rows_of_two_runs_are_refused_naming_the_differences(run, tmp_path):
    _, rows = run
    other = [dict(row, crops=5, precision="bf16") for row in rows[:2]]
    first, second = write_csv(rows, tmp_path / "a.csv"), write_csv(other, tmp_path / "b.csv")
    result = invoke("report", first, second, "--out", tmp_path / "r.html")
    assert result.exit_code == 2
    assert "crops: 1 vs 5" in result.output and "precision: fp32 vs bf16" in result.output
    assert "--allow-mixed" in result.output and not (tmp_path / "r.html").exists()
    assert invoke("report", first, second, "--out", tmp_path / "r.html", "--allow-mixed", "-q").exit_code == 0
    assert "1, 5" in (tmp_path / "r.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("bad.csv", "path,score,error\na.png,0.5,\nb.png,high,\n", "bad.csv, line 3: could not convert"),
        ("bad.jsonl", '{"path": "a.png", "score": 0.5, "error": null}\n{"path": "b.png", "sc\n', "bad.jsonl, line 2"),
        ("bad.jsonl", '{"path": "a.png", "score": "0.5", "error": null}\n', "bad.jsonl, line 1: score is not"),
        ("bad.parquet", "PAR1 this is no Parquet file", "bad.parquet: not a Parquet file"),
        ("other.csv", "name,value\na,1\n", "other.csv: no path, score, error column"),
    ],
)
def test_a_malformed_rows_file_is_one_line_naming_file_and_line(tmp_path, name, content, expected):
    (tmp_path / name).write_text(content, encoding="utf-8")
    result = invoke("report", tmp_path / name, "--out", tmp_path / "r.html")
    assert result.exit_code == 2
    assert expected in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_a_picture_gone_since_the_run_gets_a_placeholder_and_a_note(run, tmp_path):
    folder, rows = run
    data = page_data(write_report(rows, tmp_path / "r.html"))
    names = data["rows"]["name"]
    gone = names.index(str(folder / "moved_away.png"))
    assert data["rows"]["thumb"][gone] == -1
    assert data["rows"]["note"][gone] == "picture not shown: no such file"
    kept = names.index(str(folder / MARKUP_NAME))
    thumb = data["thumbs"][data["rows"]["thumb"][kept]]
    with Image.open(io.BytesIO(base64.b64decode(thumb.split(",", 1)[1]))) as image:
        assert image.format == "WEBP" and image.size == (171, 256)  # 400x600, long side 256, upright as scored
    assert 'id="missing-note">1 picture could not be shown' in (tmp_path / "r.html").read_text(encoding="utf-8")


def test_failures_are_listed_as_escaped_text(run, tmp_path):
    _, rows = run
    rows[3]["error"] = "<b>bold</b> & broken"
    page = write_report(rows, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<td>&lt;b&gt;bold&lt;/b&gt; &amp; broken</td>" in page
    assert "<b>bold</b>" not in page


def test_a_large_run_keeps_its_thumbnails_beside_the_page(run, tmp_path, monkeypatch):
    _, rows = run
    monkeypatch.setattr(build, "SELF_CONTAINED_LIMIT", 1)
    report = Report(rows)
    assert not report.self_contained
    data = page_data(report.save(tmp_path / "big run.html"))
    assert data["thumbs"] == ["big%20run_files/0.webp", "big%20run_files/1.webp"]
    for i in range(2):
        with Image.open(tmp_path / "big run_files" / f"{i}.webp") as image:
            assert image.format == "WEBP"


def panel_file(path, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 20), colour).save(path)


def test_panels_from_a_heatmaps_folder_are_matched_by_name_and_folder(run, tmp_path):
    _, rows = run
    template = rows[0]
    a, b = tmp_path / "photos" / "a" / "x.png", tmp_path / "photos" / "b" / "x.png"
    rows = [dict(template, path=str(a), score=0.2), dict(template, path=str(b), score=0.9)]
    heatmaps = tmp_path / "heatmaps"  # as dgiqa batch --heatmaps mirrors sub-folders below the common parent
    panel_file(heatmaps / "a" / "x_explain.png", (255, 0, 0))
    panel_file(heatmaps / "b" / "x_explain.png", (0, 0, 255))
    data = page_data(write_report(rows, tmp_path / "r.html", heatmaps=heatmaps))
    colours = {}
    for name, index in zip(data["rows"]["name"], data["rows"]["panel"], strict=True):
        encoded = data["panels"][index].split(",", 1)[1]
        with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
            colours[name] = max(range(3), key=lambda c: image.convert("RGB").getpixel((20, 10))[c])
    assert colours == {str(a): 0, str(b): 2}


def test_a_notebook_shows_the_page_in_its_own_frame(run):
    _, rows = run
    shown = Report(rows[:1])._repr_html_()
    assert shown.startswith('<iframe srcdoc="&lt;!doctype html&gt;')
    assert "<script" not in shown  # all of it escaped inside srcdoc


def test_batch_report_reports_the_rows_it_wrote(tmp_path, weight_args):
    folder = tmp_path / "pictures"
    folder.mkdir()
    (folder / "synthetic_480x640.png").write_bytes((FIXTURES / "synthetic_480x640.png").read_bytes())
    (folder / "broken.jpg").write_bytes(b"not a picture")
    csv_path, page = tmp_path / "scores.csv", tmp_path / "report.html"
    result = invoke("batch", folder, "--csv", csv_path, "--report", page, "--crops", "1", "--quiet", *weight_args)
    assert result.exit_code == 1  # one picture failed
    from dgiqa_cli.io.rows import read_csv

    written = {row["path"]: row for row in read_csv(csv_path)}
    data = page_data(page)
    assert data["rows"]["name"] == [str(folder / "synthetic_480x640.png")]
    assert data["rows"]["score"] == [written[str(folder / "synthetic_480x640.png")]["score"]]
    text = page.read_text(encoding="utf-8")
    assert "broken.jpg" in text and '<span id="count-failed"><b>1</b> failed</span>' in text


def test_an_interrupted_batch_reports_the_rows_it_wrote(tmp_path, weight_args, monkeypatch):
    from dgiqa_cli.io.rows import CsvWriter, read_csv

    folder = tmp_path / "pictures"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes((FIXTURES / "synthetic_480x640.png").read_bytes())
    write_row = CsvWriter.write

    def ctrl_c_after_the_first_row(self, result):  # Ctrl-C arriving right after the first row is written
        write_row(self, result)
        raise KeyboardInterrupt

    monkeypatch.setattr(CsvWriter, "write", ctrl_c_after_the_first_row)
    csv_path, page = tmp_path / "scores.csv", tmp_path / "report.html"
    result = invoke("batch", folder, "--csv", csv_path, "--report", page, "--crops", "1", "--quiet", *weight_args)
    assert result.exit_code == 130
    written = read_csv(csv_path)
    assert len(written) == 1
    data = page_data(page)
    assert data["rows"]["name"] == [written[0]["path"]] and data["rows"]["score"] == [written[0]["score"]]


def test_batch_report_needs_rows_it_can_read_back(tmp_path, pictures):
    result = invoke("batch", pictures[0], "--csv", "-", "--report", tmp_path / "r.html")
    assert result.exit_code == 2
    assert "--report reads the rows back from a file" in result.output


def test_explain_worst_refuses_weights_that_did_not_score_the_rows(run, tmp_path, weight_args):
    _, rows = run
    other = write_csv([dict(row, weights_sha256="f" * 64) for row in rows], tmp_path / "rows.csv")
    result = invoke("report", other, "--explain-worst", "1", "--out", tmp_path / "r.html", "-q", *weight_args)
    assert result.exit_code == 2
    assert "did not score the rows (sha256 ffffffffffff…)" in result.output
    assert not (tmp_path / "r.html").exists()


@pytest.mark.slow
def test_eval_out_adds_a_report_with_the_metrics_and_the_scatter(tmp_path, weight_args):
    import tiny_sets

    root = tiny_sets.koniq(tmp_path / "koniq10k", levels=(0, 1, 2, 3, 4, 5))
    out = tmp_path / "out"
    args = ["eval", root, "--split", "all", "--out", out, "--crops", "1", "--resamples", "0", "-q", *weight_args]
    assert invoke(*args).exit_code == 0
    metrics = json.loads((out / "metrics.json").read_text())[0]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert f"<tr><td>SRCC</td><td>{metrics['srcc']:.4f}" in page
    assert '<div class="scatter"><img alt="predicted score against rating" src="data:image/png;base64,' in page
    data = page_data(out / "report.html")
    assert sorted(data["rows"]["name"]) == sorted(str(root / "1024x768" / f"{1000 + i}.jpg") for i in range(6))


@pytest.mark.slow  # one explain panel on the CPU: about 15 s
def test_explain_worst_embeds_the_panel_dgiqa_explain_draws(run, scorer, tmp_path):
    from dgiqa_cli.explain.explanation import explain_image
    from dgiqa_cli.explain.panel import panel

    _, rows = run
    data = page_data(write_report(rows, tmp_path / "r.html", scorer=scorer, explain_worst=1, extremes=1))
    lowest = data["lowest"][0]
    assert [i for i, panel in enumerate(data["rows"]["panel"]) if panel >= 0] == [lowest]
    encoded = data["panels"][data["rows"]["panel"][lowest]].split(",", 1)[1]
    drawn = panel(explain_image(scorer, data["rows"]["name"][lowest]))
    with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
        assert image.format == "WEBP" and image.size == drawn.size
