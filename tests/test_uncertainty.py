"""Every score carries the spread of its crop scores: standard deviation and a 95% interval of the mean."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats
from test_batch import invoke, picture_folder

from dgiqa_cli.inference.scorer import crop_spread, student_t_975
from dgiqa_cli.io.rows import FIELDS, read_csv


def test_spread_is_the_t_interval_of_the_crop_mean():
    crops = np.array([0.41, 0.52, 0.47, 0.60, 0.39, 0.55])
    spread = crop_spread(crops)
    low, high = stats.t.interval(0.95, len(crops) - 1, loc=crops.mean(), scale=stats.sem(crops))
    assert spread["score_std"] == pytest.approx(crops.std(ddof=1), rel=1e-12)
    assert (spread["score_ci95_low"], spread["score_ci95_high"]) == pytest.approx((low, high), rel=1e-12)


@pytest.mark.parametrize("df", [*range(1, 130), 199, 499, 999, 4999])
def test_the_t_quantile_is_scipys(df):
    """Computed without scipy (whose import cost every process's first score a second), to scipy's value."""
    assert student_t_975(df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-12)


def test_one_crop_has_no_spread_and_equal_crops_have_none_either():
    assert crop_spread(np.array([0.5])) == {"score_std": None, "score_ci95_low": None, "score_ci95_high": None}
    same = crop_spread(np.full(5, 0.25))
    assert same == {"score_std": 0.0, "score_ci95_low": 0.25, "score_ci95_high": 0.25}


def test_the_interval_covers_the_population_mean_about_95_times_in_100():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(2000):
        spread = crop_spread(rng.normal(0.6, 0.05, size=20))
        hits += spread["score_ci95_low"] <= 0.6 <= spread["score_ci95_high"]
    assert 0.93 < hits / 2000 < 0.97


def test_score_json_and_batch_rows_carry_the_spread(tmp_path, weight_args, scorer):
    paths = picture_folder(tmp_path / "pics", sizes=((480, 640), (300, 420)))
    args = [*weight_args, "--crops", "4"]
    done = invoke("score", *paths, "--json", *args)
    assert done.exit_code == 0, done.stderr
    shown = json.loads(done.stdout)
    out = tmp_path / "rows.csv"
    done = invoke("batch", tmp_path / "pics", "--csv", out, *args)
    assert done.exit_code == 0, done.stderr
    assert {"score_std", "score_ci95_low", "score_ci95_high"} <= set(FIELDS)
    rows = {row["path"]: row for row in read_csv(out)}
    for item in shown:
        row = rows[item["path"]]
        assert row["score_ci95_low"] < row["score"] < row["score_ci95_high"]
        assert row["score_std"] == pytest.approx(item["score_std"], abs=1e-5)
        assert row["score_ci95_low"] == pytest.approx(item["score_ci95_low"], abs=1e-5)
        assert math.isfinite(row["score_std"]) and row["score_std"] > 0
    single = scorer.score(paths[0])  # crops=1: no spread, blank cells
    assert single.score_std is None and single.score_ci95_low is None
