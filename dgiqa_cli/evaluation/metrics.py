"""How well scores agree with human ratings: SRCC, KRCC, PLCC and RMSE, raw and after the VQEG logistic fit,
with bootstrap confidence intervals. The statistics are scipy's.

Conventions (say them beside every number):

- ``srcc``, ``krcc``, ``plcc``, ``rmse``: the scores as they are. Correlations are signed so that agreement is
  positive: with ``lower_is_better`` labels (DMOS) the sign is flipped. Raw RMSE compares the numbers directly,
  so it only means something when scores are on the labels' scale.
- ``plcc_logistic``, ``rmse_logistic``: after mapping scores to the labels with the 4-parameter logistic of the
  VQEG FR-TV Phase II report, ``f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``, fitted by least squares
  (``scipy.optimize.least_squares``, Levenberg-Marquardt as in ``curve_fit``). SRCC and KRCC are unchanged
  by a monotonic map, so they have one value each.
- ``ci95``: percentile bootstrap intervals (``scipy.stats.bootstrap``, seeded) resampling images, or whole
  groups when ``groups`` are given (all pictures made from one reference stay together), with the logistic
  refitted in every resample.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

METRICS = ("srcc", "krcc", "plcc", "rmse", "plcc_logistic", "rmse_logistic")
#: Fewer resampling units than this give no interval: resampling 2 or 3 groups says nothing about a population.
MIN_UNITS = 5
LOGISTIC = "4-parameter logistic (VQEG FR-TV Phase II), least squares"


def logistic(x, b1, b2, b3, b4):
    """The VQEG 4-parameter logistic: from ``b2`` (low scores) to ``b1`` (high scores), centre ``b3``, width ``b4``."""
    with np.errstate(over="ignore"):  # exp overflows to inf far from the centre: the curve is at b2 there
        return (b1 - b2) / (1 + np.exp(-(np.asarray(x, dtype=np.float64) - b3) / abs(b4))) + b2


def _logistic_jacobian(params, x) -> np.ndarray:
    """d logistic / d (b1, b2, b3, b4) at every x: exact slopes make each optimiser step one evaluation."""
    b1, b2, b3, b4 = params
    with np.errstate(over="ignore"):
        z = (x - b3) / abs(b4)
        s = 1 / (1 + np.exp(-z))
    g = (b1 - b2) * s * (1 - s)
    return np.stack([s, 1 - s, -g / abs(b4), -g * z / b4], axis=1)


def fit_logistic(scores, mos, start=None, max_evaluations: int = 4000) -> np.ndarray | None:
    """Least-squares logistic parameters mapping ``scores`` to ``mos`` (Levenberg-Marquardt, as ``curve_fit``).

    Near-linear data drive the curve towards an endless slope and the optimiser slowly after it; the search
    stops after ``max_evaluations`` and keeps the best curve so far (any curve it reaches fits about as well).
    None when no finite fit is found.
    """
    from scipy.optimize import least_squares

    x, y = np.asarray(scores, dtype=np.float64), np.asarray(mos, dtype=np.float64)
    if len(x) < 4 or np.ptp(x) == 0:
        return None
    if start is None:
        rising = np.corrcoef(x, y)[0, 1] >= 0 if np.ptp(y) > 0 else True
        high, low = (y.max(), y.min()) if rising else (y.min(), y.max())
        start = [high, low, float(np.mean(x)), float(np.std(x)) or 1.0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # exp overflow while the optimiser explores
            found = least_squares(
                lambda p: logistic(x, *p) - y,
                start,
                jac=lambda p: _logistic_jacobian(p, x),
                method="lm",
                max_nfev=max_evaluations,
            )
    except (ValueError, np.linalg.LinAlgError):
        return None
    return found.x if np.all(np.isfinite(found.x)) else None


def correlations(scores, mos, lower_is_better: bool = False, start=None) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one set of paired scores and ratings (NaN where undefined)."""
    from scipy import stats

    x, y = np.asarray(scores, dtype=np.float64), np.asarray(mos, dtype=np.float64)
    sign = -1.0 if lower_is_better else 1.0
    out = dict.fromkeys(METRICS, math.nan)
    if len(x) < 2:
        return out
    out["rmse"] = float(np.sqrt(np.mean((x - y) ** 2)))
    if np.ptp(x) == 0 or np.ptp(y) == 0:  # a constant: no correlation is defined
        return out
    out["srcc"] = sign * float(stats.spearmanr(x, y).statistic)
    out["krcc"] = sign * float(stats.kendalltau(x, y).statistic)
    out["plcc"] = sign * float(stats.pearsonr(x, y).statistic)
    # In bootstrap resamples the fit starts from the whole set's curve: a few hundred steps are plenty.
    params = fit_logistic(x, y, start, max_evaluations=4000 if start is None else 100)
    if params is not None:
        fitted = logistic(x, *params)
        if np.ptp(fitted) > 0:
            out["plcc_logistic"] = float(stats.pearsonr(fitted, y).statistic)
        out["rmse_logistic"] = float(np.sqrt(np.mean((fitted - y) ** 2)))
    return out


def evaluate(
    scores,
    mos,
    groups=None,
    resamples: int = 1000,
    seed: int = 0,
    lower_is_better: bool = False,
    confidence: float = 0.95,
) -> dict:
    """Metrics, their bootstrap intervals and the fitted logistic for paired ``scores`` and ``mos``.

    Returns ``{"n", srcc..rmse_logistic, "ci95": {metric: [low, high]}, "logistic": {...}, "bootstrap": {...}}``.
    An interval is None with fewer than :data:`MIN_UNITS` resampling units, or when resamples left it undefined.
    """
    from scipy import stats

    x, y = np.asarray(scores, dtype=np.float64), np.asarray(mos, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError("scores and mos must pair up one to one")
    params = fit_logistic(x, y)
    result: dict = {"n": int(len(x)), **correlations(x, y, lower_is_better, start=params)}
    result["logistic"] = {
        "function": LOGISTIC,
        "params": None if params is None else [float(p) for p in params],
    }
    units = _units(groups, len(x))
    result["bootstrap"] = {
        "method": "percentile",
        "resamples": int(resamples),
        "seed": int(seed),
        "unit": "group" if groups is not None else "image",
        "units": len(units),
        "confidence": confidence,
    }
    result["ci95"] = dict.fromkeys(METRICS)
    if resamples < 1 or len(units) < MIN_UNITS:
        return result

    def statistic(chosen) -> np.ndarray:
        members = np.concatenate([units[i] for i in chosen.astype(np.int64)])
        values = correlations(x[members], y[members], lower_is_better, start=params)
        return np.array([values[name] for name in METRICS])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate resamples (constant scores) give NaN, counted below
        boot = stats.bootstrap(
            (np.arange(len(units)),),
            statistic,
            n_resamples=resamples,
            vectorized=False,
            method="percentile",
            confidence_level=confidence,
            rng=np.random.default_rng(seed),
        )
    distribution = np.asarray(boot.bootstrap_distribution)  # (metrics, resamples)
    alpha = (1 - confidence) / 2
    for row, name in enumerate(METRICS):
        values = distribution[row][np.isfinite(distribution[row])]
        if len(values) >= 0.9 * resamples and np.isfinite(result[name]):  # too many undefined resamples: none
            low, high = np.percentile(values, [100 * alpha, 100 * (1 - alpha)])
            result["ci95"][name] = [float(low), float(high)]
    return result


def _units(groups, n: int) -> list[np.ndarray]:
    """Index arrays of the resampling units: one per image, or one per group (in order of first appearance)."""
    if groups is None:
        return [np.array([i]) for i in range(n)]
    members: dict = {}
    for i, group in enumerate(groups):
        members.setdefault(group, []).append(i)
    return [np.array(indices) for indices in members.values()]
