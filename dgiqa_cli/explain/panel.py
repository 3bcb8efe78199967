"""An explanation drawn: the maps as views, their colour scales, the panel's heading, the panel itself.

The pictures are made by :mod:`dgiqa_cli.explain.render` from plain arrays; this module chooses what goes in.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dgiqa_cli.explain import render
from dgiqa_cli.explain.explanation import Explanation
from dgiqa_cli.explain.render import CMAPS, QUALITY_MIN_SPAN, MapView, finite_range, resize_map


def map_views(explanation: Explanation, quality_range: tuple[float, float] | None = None) -> list[MapView]:
    """Depth (DGIQA), attention (per kind asked for) and quality, each at the input's size.

    ``quality_range``: the quality map's colour range; default: the model's
    score range (``quality_scale="model"``) or the picture's own, worst and best
    windows included (at least ``QUALITY_MIN_SPAN`` wide), so that local
    differences show.
    """
    height, width = explanation.image_shape
    views = []
    if explanation.depth is not None:
        depth = resize_map(explanation.depth, width, height)
        lo, hi = finite_range(depth)
        views.append(
            MapView(
                "depth",
                "Depth (near = warm)",
                depth,
                lo,
                hi,
                CMAPS["depth"],
                ("far", "", "near"),
                "Depth Anything, relative",
            )
        )
    titles = explanation.family.attention
    for kind, frame_map in explanation.attention_maps.items():
        values = resize_map(frame_map, width, height)
        lo, hi = finite_range(values)
        ticks = (f"{lo:.2f}", f"{(lo + hi) / 2:.2f}", f"{hi:.2f}")
        caption = "received, 1 = even share" + ("" if np.isfinite(values).all() else "; grey: no crop")
        views.append(MapView(f"attention_{kind}", titles[kind], values, lo, hi, CMAPS["attention"], ticks, caption))
    if explanation.quality_map is not None:
        values = resize_map(explanation.quality_map, width, height)
        lo, hi, scale = quality_colours(explanation, values, quality_range)
        ticks = (f"{lo:.3f}", f"{(lo + hi) / 2:.3f}", f"{hi:.3f}")
        caption = f"worst 224 window here (stride {explanation.stride}); colours: {scale}"
        views.append(MapView("quality", "Local quality", values, lo, hi, CMAPS["quality"], ticks, caption))
    return views


def quality_colours(explanation: Explanation, values: np.ndarray, given=None) -> tuple[float, float, str]:
    """The quality map's colour range and its name, as the panel states it."""
    if given is not None:
        return given[0], given[1], "given range"
    low, high = explanation.score_range
    if explanation.quality_scale == "model" and low is not None and high is not None:
        return float(low), float(high), f"model range {low:g}-{high:g}"
    scores = explanation.quality_scores if explanation.quality_scores is not None else np.empty(0)
    lo, hi = finite_range(np.concatenate([values[np.isfinite(values)], scores]), QUALITY_MIN_SPAN)
    return lo, hi, "this picture's range"


def panel_heading(explanation: Explanation, note: str | None = None) -> str:
    """The panel's title: picture, model family and score (Life-IQA: with its scale), weights, crops, ``note``."""
    result, family = explanation.result, explanation.family
    model = result.model
    if not model.startswith("hf://") and ("/" in model or os.sep in model):
        model = Path(model).name  # a local file: its name is enough
    parts = [
        Path(result.path).name,
        family.heading.format(score=explanation.score, scale=result.scale),
        family.setup.format(model=model, depth_model=result.depth_model, crops=len(explanation.positions)),
    ]
    if note:
        parts.append(note)
    return "  ·  ".join(parts)


def panel(
    explanation: Explanation,
    *,
    overlay: bool = False,
    alpha: float = 0.5,
    title: str | None = None,
    views: list[MapView] | None = None,
):
    """The side-by-side panel of ``explanation`` (a PIL image); ``title``: a note added to the heading."""
    views = views if views is not None else map_views(explanation)
    worst = explanation.worst
    return render.panel(
        explanation.rgb,
        views,
        heading=panel_heading(explanation, title),
        score=explanation.score,
        crop_boxes=[explanation.box(x, y) for x, y in explanation.positions],
        worst_box=worst["box"] if worst else None,
        worst_score=worst["score"] if worst else None,
        overlay=overlay,
        alpha=alpha,
    )
