"""Agreement metrics: scipy's numbers, the VQEG logistic, and bootstrap intervals that cover what they claim."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from dgiqa_cli.evaluation.metrics import METRICS, correlations, evaluate, fit_logistic, logistic


def test_correlations_are_scipys_on_known_vectors():
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.95, 0.2])
    mos = np.array([1.2, 2.9, 2.5, 4.1, 4.3, 4.8, 1.0])
    found = correlations(scores, mos)
    assert found["srcc"] == pytest.approx(stats.spearmanr(scores, mos).statistic, abs=1e-12)
    assert found["krcc"] == pytest.approx(stats.kendalltau(scores, mos).statistic, abs=1e-12)
    assert found["plcc"] == pytest.approx(stats.pearsonr(scores, mos).statistic, abs=1e-12)
    assert found["rmse"] == pytest.approx(math.sqrt(np.mean((scores - mos) ** 2)), abs=1e-12)
    # hand-checked: one discordant pair of 21 (0.4/0.35 vs 2.9/2.5 agree; 0.8/0.7 vs 4.1/4.3 disagree, 0.1/0.2 too)
    assert found["krcc"] == pytest.approx((19 - 2) / 21, abs=1e-12)


def test_dmos_labels_flip_the_sign_so_that_agreement_is_positive():
    scores = np.array([0.1, 0.5, 0.3, 0.9])
    dmos = -np.array([1.0, 3.0, 2.5, 4.0])
    assert correlations(scores, dmos, lower_is_better=True)["srcc"] == pytest.approx(1.0)
    assert correlations(scores, dmos)["srcc"] == pytest.approx(-1.0)


def test_the_logistic_fit_recovers_a_known_curve():
    truth = (4.5, 1.2, 0.55, 0.08)
    x = np.linspace(0.05, 0.95, 200)
    y = logistic(x, *truth) + np.random.default_rng(3).normal(0, 0.01, x.shape)
    params = fit_logistic(x, y)
    assert params[:3] == pytest.approx(truth[:3], abs=0.02)
    assert abs(params[3]) == pytest.approx(truth[3], abs=0.005)
    found = correlations(x, y)
    assert found["plcc_logistic"] > 0.999 > found["plcc"]  # the curve is not a line: the fit is what makes it linear
    assert found["rmse_logistic"] == pytest.approx(0.01, abs=0.003)  # the noise left after the fit


def test_a_falling_curve_fits_too():
    x = np.linspace(0, 1, 100)
    y = logistic(x, 1.0, 5.0, 0.4, 0.1)  # high scores -> low ratings
    params = fit_logistic(x, y)
    assert logistic(x, *params) == pytest.approx(y, abs=1e-4)


def test_degenerate_inputs_give_nan_not_an_exception():
    found = correlations([0.5, 0.5, 0.5], [1.0, 2.0, 3.0])
    assert math.isnan(found["srcc"]) and math.isnan(found["plcc_logistic"])
    assert correlations([0.5], [1.0])["srcc"] != correlations([0.5], [1.0])["srcc"]  # NaN
    assert fit_logistic([1, 2], [3, 4]) is None


def test_bootstrap_intervals_cover_the_population_value():
    """On samples of a population with a known correlation, the 95% interval covers it most of the time."""
    rho, hits, trials = 0.6, 0, 20
    cov = [[1, rho], [rho, 1]]
    for trial in range(trials):
        x, y = np.random.default_rng(100 + trial).multivariate_normal([0, 0], cov, size=120).T
        interval = evaluate(x, y, resamples=50, seed=trial)["ci95"]["plcc"]  # 50: coarse, and enough for coverage
        hits += interval[0] <= rho <= interval[1]
    assert hits >= 17  # 95% nominal; 17 of 20 leaves room for the percentile method's small-sample bias


def test_bootstrap_is_seeded_and_reports_its_method():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=60)
    y = x + rng.normal(0, 0.2, 60)
    first, again = evaluate(x, y, resamples=100, seed=7), evaluate(x, y, resamples=100, seed=7)
    assert first["ci95"] == again["ci95"]
    assert evaluate(x, y, resamples=100, seed=8)["ci95"] != first["ci95"]
    assert first["bootstrap"] == {
        "method": "percentile",
        "resamples": 100,
        "seed": 7,
        "unit": "image",
        "units": 60,
        "confidence": 0.95,
    }
    for name in METRICS:
        low, high = first["ci95"][name]
        assert low <= first[name] <= high, name


def test_groups_are_resampled_whole():
    """Pictures of one reference share most of their error: resampling them as one unit widens the interval."""
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(12), 10)
    shared = rng.normal(0, 0.5, 12)[groups]  # a per-reference offset every picture of it shares
    mos = rng.uniform(1, 5, groups.size)
    scores = mos + shared + rng.normal(0, 0.1, groups.size)
    by_image = evaluate(scores, mos, resamples=300)
    by_group = evaluate(scores, mos, groups=groups, resamples=300)
    assert by_group["bootstrap"]["unit"] == "group" and by_group["bootstrap"]["units"] == 12
    assert by_group["srcc"] == by_image["srcc"]  # the point value does not depend on resampling

    def width(result):
        return result["ci95"]["srcc"][1] - result["ci95"]["srcc"][0]

    assert width(by_group) > width(by_image)


def test_no_interval_without_enough_units():
    result = evaluate([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [1, 2, 3, 4, 6, 5], groups=list("aabbcc"), resamples=50)
    assert result["ci95"] == dict.fromkeys(METRICS)
    assert evaluate([0.1, 0.2, 0.3, 0.4], [1, 2, 3, 4], resamples=0)["ci95"]["srcc"] is None
