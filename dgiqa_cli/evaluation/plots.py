"""Figures people would rather look at than read: eval's scatter of scores against ratings.

Drawn with matplotlib's object API on an Agg canvas (no pyplot): nothing global changes, no display needed.
"""

from __future__ import annotations

import os

import numpy as np

FIGURE_SIZE = (4.0, 3.4)  # inches: one column of a two-column paper
DPI = 300


def scatter_plot(report, path: str | os.PathLike, score_name: str = "score") -> None:
    """Score (x) against MOS (y) for every scored picture, the fitted logistic over them, the metrics in a corner."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from dgiqa_cli.evaluation.metrics import logistic

    kept = [o for o in report.outcomes if o.status == "scored"]
    x = np.array([o.score for o in kept], dtype=np.float64)
    y = np.array([o.mos for o in kept], dtype=np.float64)
    figure = Figure(figsize=FIGURE_SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    alpha = float(np.clip(30 / max(len(x), 1), 0.15, 0.8))  # dense sets stay readable
    size = 14 if len(x) < 200 else 5
    axes.scatter(x, y, s=size, alpha=alpha, color="#1f5f9f", linewidths=0, rasterized=len(x) > 2000)
    low, high = (y.min(), y.max()) if len(y) else (0.0, 1.0)
    axes.set_ylim(low - 0.05 * (high - low or 1), high + 0.3 * (high - low or 1))  # room for the metrics box
    params = report.metrics["logistic"]["params"]
    if params is not None and len(x):
        grid = np.linspace(x.min(), x.max(), 200)
        axes.plot(grid, logistic(grid, *params), color="#c0392b", linewidth=1.2, label="logistic fit")
        axes.legend(loc="lower right", fontsize=6, frameon=False)
    axes.set_xlabel(score_name, fontsize=7)
    rating = "DMOS (lower is better)" if report.protocol.get("lower_is_better") else "MOS"
    axes.set_ylabel(rating, fontsize=7)
    axes.set_title(f"{report.dataset} · {report.split} · n = {report.metrics['n']}", fontsize=8)
    axes.tick_params(labelsize=6)
    axes.grid(True, linewidth=0.3, alpha=0.5)
    axes.text(
        0.02,
        0.98,
        metric_lines(report),
        transform=axes.transAxes,
        va="top",
        ha="left",
        fontsize=6,
        family="monospace",
        bbox={"boxstyle": "round,pad=0.3", "facecolor": "white", "alpha": 0.8, "linewidth": 0.3},
    )
    figure.savefig(path, dpi=DPI)


def metric_lines(report) -> str:
    """SRCC and logistic PLCC with their 95% intervals; what was left out, if anything."""
    lines = []
    for key, label in (("srcc", "SRCC"), ("plcc_logistic", "PLCC")):
        value, interval = report.metrics[key], report.metrics["ci95"][key]
        if value is None or value != value:
            lines.append(f"{label} n/a")
            continue
        spread = f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""
        lines.append(f"{label} {value:.3f}{spread}")
    counts = report.counts
    left_out = counts["failed"] + counts["missing"]
    if left_out:
        lines.append(f"{left_out} of {counts['listed']} not scored")
    return "\n".join(lines)
