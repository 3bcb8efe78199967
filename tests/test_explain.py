"""`dgiqa explain`: the map arithmetic (no model), then explanations on stand-in weights, then the command.

DGIQA and Life-IQA both: the Life-IQA end-to-end test runs through the real app.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import typer
from conftest import FIXTURES
from PIL import Image
from typer.testing import CliRunner

from dgiqa_cli.cli import app as dgiqa_app
from dgiqa_cli.cli.explain import explain, print_report
from dgiqa_cli.explain.explanation import Explanation
from dgiqa_cli.explain.families import FAMILIES, check_attention_kinds
from dgiqa_cli.explain.maps import (
    attention_received,
    frame_box_to_image,
    place_minimum,
    place_values,
    window_grid,
    window_starts,
)
from dgiqa_cli.explain.outputs import write_explanation
from dgiqa_cli.explain.panel import map_views, panel, panel_heading
from dgiqa_cli.explain.render import colorize, lut, panel_layout, resize_map
from dgiqa_cli.inference.scorer import ScoreResult

GOOD = FIXTURES / "synthetic_480x640.png"  # 640 wide, 480 high
TALL = FIXTURES / "synthetic_600x400.png"  # 400 wide, 600 high
COARSE = 224  # quality-map stride in the model tests: a handful of windows, for speed

app = typer.Typer()
app.callback()(lambda: None)  # a group, so that the command is invoked by name as on the real app
app.command()(explain)
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


# -- no model ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width"), [(384, 512), (384, 384), (384, 683), (576, 384), (385, 1001)])
@pytest.mark.parametrize("stride", [16, 32, 100, 224])
def test_quality_windows_cover_the_whole_frame_edges_included(height, width, stride):
    windows = window_grid(height, width, stride)
    xs = sorted({x for x, _ in windows})
    ys = sorted({y for _, y in windows})
    assert xs[0] == 0 and ys[0] == 0
    assert xs[-1] + 224 == width and ys[-1] + 224 == height  # flush with the right and bottom edges
    assert max(np.diff(xs), default=0) <= stride and max(np.diff(ys), default=0) <= stride
    assert len(windows) == len(xs) * len(ys)  # a full grid
    _, count = place_values(np.zeros(len(windows)), windows, (height, width))
    assert count.min() >= 1  # every pixel, corners and edges included, is in some window


def test_window_starts_edge_cases():
    assert window_starts(224, 32) == [0]
    assert window_starts(384, 32) == [0, 32, 64, 96, 128, 160]
    assert window_starts(385, 32) == [0, 32, 64, 96, 128, 160, 161]
    assert window_starts(512, 224) == [0, 224, 288]
    with pytest.raises(ValueError):
        window_starts(200, 32)


def test_per_crop_values_land_where_the_crops_are():
    shape = (384, 512)
    positions = [(0, 0), (288, 160), (100, 20)]
    mean, count = place_values(np.array([1.0, 3.0, 5.0]), positions, shape)
    assert mean[0, 0] == 1.0 and mean[383, 511] == 3.0  # corners of the first and second crop
    assert mean[20, 223] == pytest.approx(3.0)  # crops 1 and 3 overlap: (1 + 5) / 2
    assert mean[30, 250] == 5.0  # crop 3 alone
    assert mean[200, 50] == 1.0 and count[200, 50] == 1
    assert np.isnan(mean[300, 10]) and count[300, 10] == 0  # no crop there
    assert count[100, 200] == 2 and count.max() == 2


def test_attention_grid_cells_land_on_their_32_pixel_squares():
    grid = np.arange(49, dtype=np.float64).reshape(1, 7, 7)
    mean, count = place_values(grid, [(40, 100)], (384, 512))
    for i in range(7):
        for j in range(7):
            y0, x0 = 100 + 32 * i, 40 + 32 * j
            block = mean[y0 : y0 + 32, x0 : x0 + 32]
            assert (block == 7 * i + j).all(), (i, j)
    assert np.isnan(mean[99, 40]) and np.isnan(mean[100, 39]) and np.isnan(mean[324, 100])
    assert np.isnan(mean[100, 264]) and count.sum() == 224 * 224


def test_attention_received_is_the_column_mean_over_queries_scaled_to_an_even_share():
    rng = np.random.default_rng(0)
    weights = rng.random((3, 49, 49))
    weights /= weights.sum(-1, keepdims=True)  # rows are distributions, as the model gives them
    received = attention_received(weights)
    assert received.shape == (3, 7, 7)
    np.testing.assert_allclose(received.mean(axis=(1, 2)), 1.0, rtol=1e-6)
    focused = np.zeros((1, 49, 49))
    focused[0, :, 10] = 1.0  # every query looks at key 10 = row 1, column 3 of the grid
    r = attention_received(focused)[0]
    assert r[1, 3] == 49 and r.sum() == 49


def test_boxes_map_back_to_original_pixels():
    frame, image = (384, 512), (480, 640)
    assert frame_box_to_image(0, 0, frame, image) == [0, 0, 280, 280]
    assert frame_box_to_image(288, 160, frame, image) == [360, 200, 640, 480]  # touches the far corner


def test_boxes_map_back_with_separate_x_and_y_scales():
    # Life-IQA's frame is 512 high and 384 wide whatever the picture: a 640 x 480 picture is
    # stretched 1.667x in x and squeezed 0.9375x in y, so a square window is a wide, flat box.
    frame, image = (512, 384), (480, 640)
    assert frame_box_to_image(0, 0, frame, image) == [0, 0, 373, 210]  # 224 * 640 / 384, 224 * 480 / 512
    assert frame_box_to_image(160, 288, frame, image) == [267, 270, 640, 480]  # the far corner, exactly
    assert frame_box_to_image(80, 100, frame, image) == [133, 94, 507, 304]
    # a map of that window, resized to the picture as the map files are, lands on the same box
    marked, _ = place_values(np.ones(1), [(80, 100)], frame)
    big = resize_map(marked, 640, 480)
    rows, cols = np.nonzero(np.isfinite(big))
    assert abs(cols.min() - 133) <= 1 and abs(cols.max() + 1 - 507) <= 1
    assert abs(rows.min() - 94) <= 1 and abs(rows.max() + 1 - 304) <= 1


def test_resize_map_keeps_uncovered_areas_empty():
    values = np.full((384, 512), np.nan, np.float32)
    values[:, :256] = 2.0
    big = resize_map(values, 640, 480)
    assert big.shape == (480, 640)
    assert np.all(big[:, :310] == pytest.approx(2.0)) and np.isnan(big[:, 330:]).all()


@pytest.mark.parametrize(("width", "height"), [(640, 480), (400, 600), (1920, 1080), (3000, 300), (300, 3600)])
@pytest.mark.parametrize("tiles", [4, 5])
def test_panel_tiles_keep_the_input_aspect_ratio(width, height, tiles):
    layout = panel_layout(width, height, tiles)
    assert abs(layout.tile_w / layout.tile_h - width / height) <= (width / height) / min(layout.tile_w, layout.tile_h)
    assert layout.stacked == (width / height > 2)
    last_x, last_y = layout.origin(tiles - 1)
    assert last_x + layout.column_w <= layout.width and last_y + layout.tile_h <= layout.height


def test_colour_maps():
    assert lut("rdylgn").shape == (256, 3) and tuple(lut("rdylgn")[0]) == (0xA5, 0x00, 0x26)
    rgb = colorize(np.array([[0.0, 1.0, np.nan]]), 0.0, 1.0, "inferno")
    assert tuple(rgb[0, 2]) == (128, 128, 128)
    assert rgb[0, 1].astype(int).sum() > rgb[0, 0].astype(int).sum()  # near (large) is bright and warm


def test_other_models_are_refused_with_a_reason(tmp_path):
    from types import SimpleNamespace

    other = SimpleNamespace(arch="musiq", model_name="musiq-koniq")
    with pytest.raises(ValueError, match="explain knows DGIQA, Life-IQA; musiq-koniq is musiq"):
        write_explanation(other, GOOD, tmp_path)
    assert not any(tmp_path.iterdir())


def test_refinement_attention_is_dgiqa_only():
    assert check_attention_kinds(["cross", "refine", "cross"], FAMILIES["dgiqa"]) == ("cross", "refine")
    assert check_attention_kinds(["cross"], FAMILIES["life-iqa"]) == ("cross",)
    with pytest.raises(ValueError, match="Life-IQA has no 'refine' attention; choose cross"):
        check_attention_kinds(["cross", "refine"], FAMILIES["life-iqa"])
    # the command says so before loading anything when --model names the family
    result = invoke("explain", GOOD, "--model", "life-iqa", "--attention", "both", "--heatmap")
    assert result.exit_code == 2 and "Life-IQA has no 'refine' attention" in " ".join(result.stderr.split())
    assert result.stdout == ""


def fake_life_iqa_explanation(width=640, height=480) -> Explanation:
    """A Life-IQA explanation put together by hand (no model): one crop, two quality windows."""
    rng = np.random.default_rng(1)
    weights = rng.random((1, 6, 49))
    weights /= weights.sum(-1, keepdims=True)
    frame = (512, 384)
    windows = [(0, 0), (160, 288)]
    result = ScoreResult(
        path="some/pic.png",
        score=1.52,
        width=width,
        height=height,
        crops=1,
        model="/w/life.pth",
        arch="life-iqa",
        scale="MOS, unbounded",
        crop_scores=[1.52],
    )
    quality, _ = place_values(np.array([1.4, 1.6]), windows, frame)
    return Explanation(
        result=result,
        family=FAMILIES["life-iqa"],
        rgb=np.zeros((height, width, 3), np.uint8),
        frame_shape=frame,
        positions=[(80, 100)],
        crop_scores=np.array([1.52], np.float32),
        attention={"cross": weights},
        attention_maps={"cross": place_values(attention_received(weights), [(80, 100)], frame)[0]},
        quality_positions=windows,
        quality_scores=np.array([1.4, 1.6], np.float32),
        quality_map=quality,
        stride=224,
    )


def test_life_iqa_panel_names_the_model_and_its_scale_and_has_no_depth():
    explanation = fake_life_iqa_explanation()
    heading = panel_heading(explanation, "stand-in")
    assert heading == "pic.png  ·  Life-IQA score 1.52 (MOS, unbounded)  ·  life.pth, 1 crops  ·  stand-in"
    views = map_views(explanation)
    assert [v.role for v in views] == ["attention_cross", "quality"]
    assert views[0].title == "Decoder cross-attention" and all(v.values.shape == (480, 640) for v in views)
    layout = panel_layout(640, 480, 3)  # input, attention, quality
    assert panel(explanation).size == (layout.width, layout.height)
    assert explanation.worst["box"] == [0, 0, 373, 210] and explanation.worst["box_frame"] == [0, 0, 224, 224]
    report = explanation.report()
    assert report["arch"] == "life-iqa" and report["scale"] == "MOS, unbounded" and report["depth_model"] is None
    assert report["frame_size"] == [384, 512] and report["crops"][0]["box"] == [133, 94, 507, 304]
    assert "depth" not in explanation.arrays()


# -- stand-in weights ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def explained(scorer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("explained")
    report = write_explanation(
        scorer, GOOD, folder, attention=("cross", "refine"), stride=COARSE, save_arrays=True, title="stand-in weights"
    )
    return report, folder


@pytest.mark.slow
def test_explain_score_is_the_score(explained, scorer):
    report, _ = explained
    plain = scorer.score(GOOD)
    assert report["score"] == pytest.approx(plain.score, abs=1e-6)
    assert [c["score"] for c in report["crops"]] == pytest.approx(plain.crop_scores, abs=1e-6)
    assert report["width"] == 640 and report["height"] == 480


@pytest.mark.slow
def test_attention_rows_are_distributions_from_the_scoring_pass(explained):
    report, _ = explained
    arrays = np.load(report["files"]["arrays"])
    for kind in ("cross", "refine"):
        weights = arrays[f"attention_{kind}"]
        assert weights.shape == (1, 49, 49)
        assert (weights >= 0).all()
        np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
        covered = arrays[f"attention_{kind}_map"]
        assert covered.shape == (384, 512)
        assert np.nanmean(covered) == pytest.approx(1.0, abs=1e-5)  # one crop: its even share is 1
    assert float(arrays["score"]) == pytest.approx(report["score"], abs=1e-7)
    assert arrays["quality_map"].shape == (384, 512) and np.isfinite(arrays["quality_map"]).all()
    assert arrays["quality_scores"].shape == (6,)  # x in 0, 224, 288; y in 0, 160


@pytest.mark.slow
def test_written_files_have_the_right_sizes(explained):
    report, folder = explained
    files = report["files"]
    assert set(files) == {"panel", "depth", "attention_cross", "attention_refine", "quality", "arrays"}
    for role in ("depth", "attention_cross", "attention_refine", "quality"):
        assert Image.open(files[role]).size == (640, 480), role
    layout = panel_layout(640, 480, 5)
    assert Image.open(files["panel"]).size == (layout.width, layout.height)
    worst = report["worst_region"]
    x0, y0, x1, y1 = worst["box"]
    assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480
    assert worst["score"] == pytest.approx(report["quality_map"]["min"])
    assert report["quality_map"]["windows"] == 6


@pytest.mark.slow
def test_existing_files_are_not_overwritten_without_force(explained, scorer):
    report, folder = explained
    with pytest.raises(FileExistsError, match=r"exists \(force=True replaces it\)"):
        write_explanation(scorer, GOOD, folder, attention=("cross", "refine"), stride=COARSE)


# -- the command ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_explain_command_end_to_end(tmp_path, weight_args, scorer):
    picture = tmp_path / "tall.png"
    shutil.copy(TALL, picture)
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture\n")
    out = tmp_path / "out"
    args = [picture, bad, *weight_args, "--crops", "1", "--stride", COARSE, "--heatmap", "--out", out]
    result = invoke("explain", *args, "--overlay", "--alpha", "0.6", "--save-arrays", "--json")
    assert result.exit_code == 1, result.stderr  # one good picture, one bad: the run goes on
    good, failed = json.loads(result.stdout)
    assert failed["score"] is None and "not an image" in failed["error"] and failed["files"] == {}
    assert f"failed: {bad}" in " ".join(result.stderr.split())
    assert good["error"] is None and good["score"] == pytest.approx(scorer.score(picture).score, abs=1e-6)
    assert set(good["files"]) == {"panel", "depth", "attention_cross", "quality", "arrays"}
    for role in ("depth", "attention_cross", "quality"):
        assert Image.open(good["files"][role]).size == (400, 600)
    layout = panel_layout(400, 600, 4)
    assert Image.open(out / "tall_explain.png").size == (layout.width, layout.height)
    assert len(good["crops"]) == 1 and good["worst_region"]["box"][3] <= 600

    again = invoke("explain", picture, *weight_args, "--crops", "1", "--heatmap", "--out", out)
    assert again.exit_code == 2
    assert "exists" in again.stderr and "--force" in again.stderr and again.stdout == ""


# -- Life-IQA, through the real app ---------------------------------------------------------------


@pytest.fixture(scope="module")
def life_explained(small_life_iqa, tmp_path_factory):
    """`dgiqa explain --model life-iqa` on the 640 x 480 picture: 2 crops, 6 quality windows, every file."""
    out = tmp_path_factory.mktemp("life_explained")
    stale = out / f"{GOOD.stem}_depth.png"  # left by a DGIQA run: Life-IQA writes no depth map, so not in its way
    stale.write_bytes(b"not ours")
    args = ["explain", GOOD, "--model", "life-iqa", "--weights", small_life_iqa, "--crops", "2", "--stride", COARSE]
    args += ["--device", "cpu", "--heatmap", "--out", out, "--save-arrays", "--json"]
    result = runner.invoke(dgiqa_app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    (report,) = json.loads(result.stdout)
    assert stale.read_bytes() == b"not ours"
    return report, out


@pytest.mark.slow
def test_life_iqa_explain_score_is_the_score(life_explained, small_life_iqa):
    from dgiqa_cli import Scorer

    report, _ = life_explained
    plain = Scorer(small_life_iqa, model="life-iqa", crops=2, device="cpu").score(GOOD)
    assert report["score"] == pytest.approx(plain.score, abs=1e-5)
    assert [c["score"] for c in report["crops"]] == pytest.approx(plain.crop_scores, abs=1e-5)
    assert report["arch"] == "life-iqa" and report["scale"] == plain.scale == "MOS, unbounded"
    assert report["depth_model"] is None and report["attention"] == ["cross"]


@pytest.mark.slow
def test_life_iqa_explain_writes_attention_and_quality_at_the_input_size(life_explained):
    report, out = life_explained
    files = report["files"]
    assert set(files) == {"panel", "attention_cross", "quality", "arrays"}
    for role in ("attention_cross", "quality"):
        assert Image.open(files[role]).size == (640, 480), role
    layout = panel_layout(640, 480, 3)  # input, attention, quality: no depth
    assert Image.open(files["panel"]).size == (layout.width, layout.height)
    assert report["frame_size"] == [384, 512]  # 384 wide, 512 high: the aspect ratio is not kept
    for crop in report["crops"]:
        x, y = crop["box_frame"][:2]
        assert crop["box"] == frame_box_to_image(x, y, (512, 384), (480, 640))
    assert report["quality_map"]["windows"] == 6  # x in 0, 160; y in 0, 224, 288
    x0, y0, x1, y1 = report["worst_region"]["box"]
    assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480
    assert report["worst_region"]["score"] == pytest.approx(report["quality_map"]["min"])


@pytest.mark.slow
def test_life_iqa_attention_rows_are_distributions_from_the_scoring_pass(life_explained):
    report, _ = life_explained
    arrays = np.load(report["files"]["arrays"])
    weights = arrays["attention_cross"]
    assert weights.shape == (2, 6, 49)  # 2 crops, 6 queries, the 7 x 7 stage-3 grid
    assert (weights >= 0).all()
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(attention_received(weights).mean(axis=(1, 2)), 1.0, rtol=1e-5)
    covered = arrays["attention_cross_map"]
    assert covered.shape == (512, 384)
    inside = np.zeros((512, 384), bool)
    for x, y in arrays["crop_positions"]:
        inside[y : y + 224, x : x + 224] = True
    assert (np.isfinite(covered) == inside).all()  # the crops' squares, and nothing else
    assert float(arrays["score"]) == pytest.approx(report["score"], abs=1e-6)
    assert "depth" not in arrays and arrays["quality_map"].shape == (512, 384)


def test_life_iqa_refinement_attention_is_refused_once_the_weights_tell(tmp_path):
    from types import SimpleNamespace

    life = SimpleNamespace(arch="life-iqa", model_name="life_iqa_koniq_standin.pth")
    with pytest.raises(ValueError, match="Life-IQA has no 'refine' attention"):
        write_explanation(life, GOOD, tmp_path, attention=("cross", "refine"))
    assert not any(tmp_path.iterdir())


def test_text_report(capsys):
    report = {
        "path": "a.png",
        "score": 0.61234,
        "error": None,
        "crops": [{"score": 0.6, "box": [0, 0, 280, 280]}, {"score": 0.62, "box": [9, 9, 289, 289]}],
        "worst_region": {"box": [360, 200, 640, 480], "score": 0.55},
        "quality_map": {"windows": 6, "mean": 0.6},
        "files": {"panel": "out/a_explain.png"},
    }
    print_report(report)
    text = capsys.readouterr().out
    assert "a.png: score 0.6123 (2 crops, 0.6000..0.6200)" in text
    assert "worst region: x 360..640, y 200..480 (score 0.5500" in text
    assert "panel: out/a_explain.png" in text
    print_report(dict(report, score=1.52, model="life.pth", arch="life-iqa", scale="MOS, unbounded"))
    assert "model: life.pth (life-iqa; MOS, unbounded)" in capsys.readouterr().out


def test_explain_help_and_usage_errors(tmp_path):
    result = invoke("explain", "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for fragment in ("--heatmap", "--out", "--attention", "--stride", "--overlay", "--alpha", "--save-arrays"):
        assert fragment in text
    assert invoke("explain", GOOD, "--stride", "0").exit_code == 2
    assert invoke("explain", GOOD, "--alpha", "1.5").exit_code == 2
    assert invoke("explain", GOOD, "--attention", "self").exit_code == 2
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(GOOD, tmp_path / "a" / "x.png")
    shutil.copy(GOOD, tmp_path / "b" / "x.png")
    clash = invoke("explain", tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", "--heatmap", "--out", tmp_path)
    assert clash.exit_code == 2 and "would both write" in " ".join(clash.stderr.split())


# -- the quality map's colours and its worst window (issue 11) -----------------------------------


def test_each_pixel_shows_the_worst_window_covering_it():
    windows = [(0, 0), (100, 0), (200, 50)]
    lowest = place_minimum(np.array([0.7, 0.2, 0.9]), windows, (300, 500))
    x, y = windows[1]
    assert np.all(lowest[y : y + 224, x : x + 224] == np.float32(0.2))  # the worst window, over its whole box
    assert lowest[0, 50] == np.float32(0.7) and lowest[260, 420] == np.float32(0.9)
    assert np.isnan(lowest[290, 10])  # no window there
    assert np.nanmin(lowest) == np.float32(0.2)


def dgiqa_like_explanation(scale: str) -> Explanation:
    explanation = fake_life_iqa_explanation()
    windows = explanation.quality_positions
    explanation.quality_scores = np.array([0.40, 0.43], np.float32)
    explanation.quality_map = place_minimum(explanation.quality_scores, windows, explanation.frame_shape)
    explanation.score_range, explanation.quality_scale = (0.0, 1.0), scale
    return explanation


def test_quality_colours_span_the_model_range_and_say_so():
    explanation = dgiqa_like_explanation("model")
    view = next(v for v in map_views(explanation) if v.role == "quality")
    assert (view.lo, view.hi) == (0.0, 1.0) and "model range 0-1" in view.caption
    assert explanation.report()["quality_map"]["colour_scale"] == "model"
    shown = next(v for v in map_views(dgiqa_like_explanation("picture")) if v.role == "quality")
    assert "this picture's range" in shown.caption
    worst = explanation.worst
    assert shown.lo <= worst["score"] <= shown.hi  # the worst window's score is on the colour bar
    x0, y0, x1, y1 = worst["box"]
    inside = shown.values[y0:y1, x0:x1]
    assert np.nanmax(inside) == pytest.approx(worst["score"])  # the box sits on the map's lowest area


def test_single_map_pictures_keep_their_size_and_carry_a_legend():
    from dgiqa_cli.explain.render import with_legend

    view = next(v for v in map_views(dgiqa_like_explanation("model")) if v.role == "quality")
    bare = view.colour()
    drawn = np.asarray(with_legend(bare, view))
    assert drawn.shape == bare.shape
    assert not np.array_equal(drawn[-40:, -160:], bare[-40:, -160:])  # the legend, bottom right
    assert np.array_equal(drawn[:100, :100], bare[:100, :100])  # the rest untouched
