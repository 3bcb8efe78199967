"""Why an image scored as it did: depth, attention and local-quality maps, for DGIQA and Life-IQA.

The computation lives here; drawing (colour maps, colour bars, the panel) is in
:mod:`dgiqa_cli.render`. Everything runs through the scoring model's public steps
(:class:`~dgiqa_cli.inference.model.IQAModel`: ``prepare`` -> [``depth_map`` -> ``depth_frame``] ->
``score_crops`` / ``score_rgb_crops``), so the score of an explanation is the
score of ``Scorer.score`` for the same settings: the scoring crops go through
the model in one pass that returns the scores *and* the attention weights, and
the score is the mean of those very scores.

What differs between the model families is gathered in one :class:`Family`
per family (:data:`FAMILIES`): its name, which attention it has, whether it
has a depth map, and the one pass over the scoring crops. Everything else
(placing maps, quality windows, boxes, files) is shared.

The maps, all computed on the frame the model sees (DGIQA: short side 384;
Life-IQA: exactly 512 x 384, H x W, so its x and y scales differ):

- **depth** (DGIQA only): Depth Anything's relative inverse depth (larger =
  nearer), as the uint8 picture DGIQA is fed;
- **attention**: for each scoring crop, head-averaged attention weights
  (query rows x 49 key columns over the crop's 7 x 7 grid). DGIQA: a
  Depth-CAR block, ``cross`` (depth -> RGB) and/or ``refine`` (self), 49
  queries; Life-IQA: ``cross``, its query decoder's last-layer cross-attention
  from its queries to the 7 x 7 grid of stage-3 features. The attention each
  location *receives* is the mean of its column over the query rows, times 49,
  so 1 means "as much as if attention were spread evenly" (a crop's 49 values
  average to 1). Each grid cell covers 32 x 32 pixels of its crop; crops are
  placed back where they were cut and averaged where they overlap; pixels no
  crop covers are NaN;
- **quality**: the model's scores of 224 x 224 windows on a dense grid
  (``stride`` frame pixels apart, the last row and column flush with the far
  edges); each pixel shows the lowest score of the windows covering it, then
  the map is optionally Gaussian-smoothed. The worst region is the
  lowest-scoring window, so its box covers the map's lowest area and its score
  is the bottom of the colour scale. Colours span the model's score range
  (``quality_scale="model"``, DGIQA's [0, 1], comparable from picture to
  picture) or this picture's own range (``"picture"``: small differences show;
  Life-IQA's unbounded scores always use it); every panel says which.

For ``dgiqa batch --heatmaps DIR`` and other callers, :func:`write_explanation`
does it all for one picture (compute, draw, write, report).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from . import preprocess as pp
from . import render
from .errors import UsageError
from .maps import (
    WINDOW,
    attention_received,
    frame_box_to_image,
    place_minimum,
    place_values,
    smooth_map,
    window_grid,
)
from .models.spec import DGIQA, LIFE_IQA, ModelSpec
from .render import CMAPS, QUALITY_MIN_SPAN, MapView, finite_range, resize_map

ATTENTION_KINDS = ("cross", "refine")
QUALITY_SCALES = ("auto", "model", "picture")
DEFAULT_STRIDE = 32
DEFAULT_SMOOTH = 16.0
DEFAULT_BATCH = 32


# -- the model families ---------------------------------------------------------------------------


@dataclass
class CropPass:
    """One pass of a model over a picture's scoring crops, and how to score more windows of the same frame."""

    scores: object  # (N,) torch tensor on the CPU: the crop scores, as Scorer.score averages them
    attention: dict[str, np.ndarray]  # kind -> (N, queries, 49) head-averaged weights, from the same pass
    score_windows: Callable[[list[tuple[int, int]]], np.ndarray]  # 224 windows (x, y) of the frame -> (K,) scores
    depth: np.ndarray | None = None  # (h, w) float32, Depth Anything's relative inverse depth (DGIQA)
    depth_frame: np.ndarray | None = None  # (H', W') uint8, the depth picture DGIQA sees


def dgiqa_pass(model, prepared, depth=None) -> CropPass:
    """DGIQA: depth map (unless given), then RGB and depth crops together; Depth-CAR attention."""
    if depth is None:
        depth = model.depth_map(prepared.depth_input)
    depth_frame = model.depth_frame(prepared, depth)
    frame, positions = prepared.frame, prepared.positions
    scores, weights = model.score_crops(prepared.rgb_crops, pp.cut_crops(depth_frame, positions), return_attention=True)

    def score_windows(windows):
        return model.score_crops(pp.cut_crops(frame, windows), pp.cut_crops(depth_frame, windows)).cpu().numpy()

    return CropPass(
        scores=scores.cpu(),
        attention={kind: w.cpu().numpy().astype(np.float32) for kind, w in weights.items()},
        score_windows=score_windows,
        depth=depth.detach().cpu().numpy().astype(np.float32),
        depth_frame=depth_frame,
    )


def life_iqa_pass(model, prepared, depth=None) -> CropPass:
    """Life-IQA: RGB crops alone; its query decoder's last cross-attention over the 7 x 7 stage-3 grid."""
    if depth is not None:
        raise ValueError("Life-IQA has no depth stage: it takes no depth map")
    frame = prepared.frame
    scores, weights = model.score_rgb_crops(prepared.rgb_crops, return_attention=True)

    def score_windows(windows):
        return model.score_rgb_crops(pp.cut_crops(frame, windows)).cpu().numpy()

    return CropPass(
        scores=scores.cpu(), attention={"cross": weights.cpu().numpy().astype(np.float32)}, score_windows=score_windows
    )


@dataclass(frozen=True)
class Family:
    """How an explanation of one model family is shown and made; the family's facts are its :class:`ModelSpec`."""

    spec: ModelSpec  # the attention kinds it has, whether it has a depth map
    heading: str  # the panel's score, formatted with score and scale
    setup: str  # the panel's setup line, formatted with model, depth_model and crops
    run: Callable[..., CropPass]  # (model, prepared, depth) -> CropPass

    @property
    def name(self) -> str:
        return self.spec.title

    @property
    def attention(self) -> Mapping[str, str]:
        return self.spec.attention

    @property
    def has_depth(self) -> bool:
        return self.spec.needs_depth


FAMILIES = {
    "dgiqa": Family(
        DGIQA, heading="DGIQA score {score:.4f}", setup="{model}, depth {depth_model}, {crops} crops", run=dgiqa_pass
    ),
    "life-iqa": Family(
        LIFE_IQA, heading="Life-IQA score {score:.4g} ({scale})", setup="{model}, {crops} crops", run=life_iqa_pass
    ),
}


def family_of(scorer) -> Family:
    """The :class:`Family` of a scorer's model; ``ValueError`` for a model explain does not know."""
    arch = getattr(scorer, "arch", "dgiqa")
    if arch not in FAMILIES:
        known = ", ".join(f.name for f in FAMILIES.values())
        raise ValueError(f"explain knows {known}; {scorer.model_name} is {arch}")
    return FAMILIES[arch]


def check_attention_kinds(kinds: Sequence[str], family: Family = FAMILIES["dgiqa"]) -> tuple[str, ...]:
    """The attention kinds asked for, deduplicated; ``ValueError`` for one the family does not have."""
    kinds = tuple(dict.fromkeys(kinds))
    for kind in kinds:
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"unknown attention {kind!r}; choose from {', '.join(ATTENTION_KINDS)}")
        if kind not in family.attention:
            has = " or ".join(f"{k} ({title.lower()})" for k, title in family.attention.items())
            raise UsageError(f"{family.name} has no {kind!r} attention; choose {has}")
    return kinds


# -- explanations ----------------------------------------------------------------------------------


@dataclass
class Explanation:
    """Everything an explanation shows, at the scale of the model's frame unless said otherwise."""

    result: object  # the ScoreResult, identical to Scorer.score's
    family: Family
    rgb: np.ndarray  # (H, W, 3) uint8, the decoded picture
    frame_shape: tuple[int, int]  # (H', W'): short side 384 (DGIQA), 512 x 384 (Life-IQA)
    positions: list[tuple[int, int]]  # scoring crops, (x, y) in the frame
    crop_scores: np.ndarray  # (N,)
    depth: np.ndarray | None = None  # (h, w) float32, Depth Anything's relative inverse depth (DGIQA only)
    depth_frame: np.ndarray | None = None  # (H', W') uint8, the depth picture DGIQA sees
    attention: dict[str, np.ndarray] = field(default_factory=dict)  # kind -> (N, queries, 49) head-averaged
    attention_maps: dict[str, np.ndarray] = field(default_factory=dict)  # kind -> (H', W'), 1 = even share
    quality_positions: list[tuple[int, int]] = field(default_factory=list)  # windows, (x, y) in the frame
    quality_scores: np.ndarray | None = None  # (K,)
    quality_map: np.ndarray | None = None  # (H', W')
    stride: int | None = None
    smooth: float = 0.0
    score_range: tuple[float | None, float | None] = (None, None)  # the model's, for the quality colours
    quality_scale: str = "picture"  # "model": colours span score_range; "picture": this picture's own range

    @property
    def score(self) -> float:
        return self.result.score

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.rgb.shape[0], self.rgb.shape[1]

    def box(self, x: int, y: int) -> list[int]:
        """A 224 window at (x, y) of the frame, in original-image pixels."""
        return frame_box_to_image(x, y, self.frame_shape, self.image_shape)

    @property
    def worst(self) -> dict | None:
        """The lowest-scoring quality window: its box (original pixels), its box in the frame, its score."""
        if self.quality_scores is None or len(self.quality_scores) == 0:
            return None
        i = int(np.argmin(self.quality_scores))
        x, y = self.quality_positions[i]
        return {
            "box": self.box(x, y),
            "box_frame": [x, y, x + WINDOW, y + WINDOW],
            "score": float(self.quality_scores[i]),
        }

    def report(self) -> dict:
        """The JSON-ready summary: score and its scale, per-crop scores with boxes, worst region, quality stats."""
        r = self.result
        report = {
            "path": r.path,
            "score": r.score,
            "error": None,
            "arch": r.arch,
            "scale": r.scale,
            "width": r.width,
            "height": r.height,
            "model": r.model,
            "depth_model": r.depth_model,
            "crops": [
                {"score": float(s), "box": self.box(x, y), "box_frame": [x, y, x + WINDOW, y + WINDOW]}
                for s, (x, y) in zip(self.crop_scores, self.positions, strict=True)
            ],
            "frame_size": [self.frame_shape[1], self.frame_shape[0]],
            "attention": sorted(self.attention_maps),
            "worst_region": self.worst,
        }
        if self.quality_map is not None:
            report["quality_map"] = {
                "stride": self.stride,
                "windows": len(self.quality_positions),
                "smooth": self.smooth,
                "colour_scale": self.quality_scale,
                "min": float(np.min(self.quality_scores)),
                "mean": float(np.mean(self.quality_scores)),
                "max": float(np.max(self.quality_scores)),
            }
        return report

    def arrays(self) -> dict[str, np.ndarray]:
        """The raw arrays, as saved by ``--save-arrays`` (``np.load(path)`` gives them back by name)."""
        arrays = {
            "score": np.float32(self.score),
            "image_size": np.array([self.image_shape[1], self.image_shape[0]]),
            "frame_size": np.array([self.frame_shape[1], self.frame_shape[0]]),
            "crop_positions": np.array(self.positions, dtype=np.int32).reshape(-1, 2),
            "crop_scores": self.crop_scores.astype(np.float32),
        }
        if self.depth is not None:
            arrays["depth"] = self.depth.astype(np.float32)
            arrays["depth_frame"] = self.depth_frame
        for kind, weights in self.attention.items():
            arrays[f"attention_{kind}"] = weights.astype(np.float32)
            arrays[f"attention_{kind}_map"] = self.attention_maps[kind]
        if self.quality_map is not None:
            arrays["quality_positions"] = np.array(self.quality_positions, dtype=np.int32).reshape(-1, 2)
            arrays["quality_scores"] = self.quality_scores.astype(np.float32)
            arrays["quality_map"] = self.quality_map
        return arrays


# -- drawing (the pictures themselves: :mod:`dgiqa_cli.render`) ---------------------------------


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


def explain_prepared(
    scorer,
    prepared,
    depth=None,
    *,
    attention: Sequence[str] = ("cross",),
    quality: bool = True,
    stride: int = DEFAULT_STRIDE,
    smooth: float = DEFAULT_SMOOTH,
    quality_scale: str = "auto",
    batch_size: int = DEFAULT_BATCH,
    on_progress: Callable[[int, int], None] | None = None,
) -> Explanation:
    """Explain one :class:`~dgiqa_cli.scorer.PreparedImage` (``depth``: its depth map, if already computed; DGIQA).

    The scoring crops go through the model once, returning scores and
    attention together; ``result.score`` is their mean, as in ``Scorer.score``.
    The quality windows are scored afterwards, ``batch_size`` at a time;
    ``on_progress(done, total)`` is called after each batch.
    """
    family = family_of(scorer)
    kinds = check_attention_kinds(attention, family)
    if quality_scale not in QUALITY_SCALES:
        raise ValueError(f"unknown quality scale {quality_scale!r}; choose one of {', '.join(QUALITY_SCALES)}")
    bounded = None not in scorer.score_range
    if quality_scale == "auto":
        quality_scale = "model" if bounded else "picture"
    elif quality_scale == "model" and not bounded:
        raise UsageError("the model quality scale needs a bounded score range; Life-IQA's is not: use picture")
    if quality and not 1 <= stride <= WINDOW:
        raise ValueError(f"the quality-map stride must be between 1 and {WINDOW} pixels")
    frame = prepared.frame
    frame_shape = frame.shape[:2]
    crops = family.run(scorer.iqa_model, prepared, depth)

    rgb = prepared.rgb
    if rgb is None:  # dropped by prepare(keep_rgb=False): show the frame, scaled back up
        rgb = cv2.resize(frame, (prepared.width, prepared.height), interpolation=cv2.INTER_LINEAR)

    explanation = Explanation(
        result=scorer.result(prepared, crops.scores),
        family=family,
        rgb=rgb,
        frame_shape=frame_shape,
        positions=[tuple(p) for p in prepared.positions],
        crop_scores=crops.scores.numpy().astype(np.float32),
        depth=crops.depth,
        depth_frame=crops.depth_frame,
    )
    for kind in kinds:
        w = crops.attention[kind]
        explanation.attention[kind] = w
        explanation.attention_maps[kind], _ = place_values(attention_received(w), prepared.positions, frame_shape)

    if quality:
        windows = window_grid(*frame_shape, stride)
        window_scores = []
        for start in range(0, len(windows), max(1, batch_size)):
            chunk = windows[start : start + max(1, batch_size)]
            window_scores.append(crops.score_windows(chunk))
            if on_progress is not None:
                on_progress(min(start + len(chunk), len(windows)), len(windows))
        window_scores = np.concatenate(window_scores).astype(np.float32)
        explanation.quality_positions = windows
        explanation.quality_scores = window_scores
        explanation.quality_map = smooth_map(place_minimum(window_scores, windows, frame_shape), smooth)
        explanation.score_range = tuple(scorer.score_range)
        explanation.quality_scale = quality_scale
        explanation.stride = stride
        explanation.smooth = float(smooth)
    return explanation


def explain_image(scorer, image, **options) -> Explanation:
    """Explain a path, encoded bytes or RGB array; raises ``ImageError`` for an input that cannot be scored."""
    return explain_prepared(scorer, scorer.prepare(scorer.load(image)), **options)


# -- files -----------------------------------------------------------------------------------------


def output_paths(
    image_path: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    attention: Sequence[str] = ("cross",),
    quality: bool = True,
    heatmap: bool = True,
    save_arrays: bool = False,
    depth: bool = True,
) -> dict[str, Path]:
    """The files an explanation of ``image_path`` writes, by role: ``{stem}_explain.png``, ``{stem}_depth.png``...

    ``out_dir`` defaults to the image's own folder; ``depth``: whether the
    model has a depth map to write (``Family.has_depth``).
    """
    image_path = Path(image_path)
    folder = Path(out_dir) if out_dir is not None else image_path.parent
    stem = image_path.stem
    paths: dict[str, Path] = {}
    if heatmap:
        paths["panel"] = folder / f"{stem}_explain.png"
        if depth:
            paths["depth"] = folder / f"{stem}_depth.png"
        for kind in attention:
            paths[f"attention_{kind}"] = folder / f"{stem}_attention_{kind}.png"
        if quality:
            paths["quality"] = folder / f"{stem}_quality.png"
    if save_arrays:
        paths["arrays"] = folder / f"{stem}_explain.npz"
    return paths


def existing_outputs(paths: dict[str, Path]) -> list[Path]:
    return [p for p in paths.values() if p.exists()]


def write_explanation(
    scorer,
    path: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    attention: Sequence[str] = ("cross",),
    quality: bool = True,
    stride: int = DEFAULT_STRIDE,
    smooth: float = DEFAULT_SMOOTH,
    quality_scale: str = "auto",
    overlay: bool = False,
    alpha: float = 0.5,
    heatmap: bool = True,
    save_arrays: bool = False,
    force: bool = False,
    title: str | None = None,
    prepared=None,
    depth=None,
    batch_size: int = DEFAULT_BATCH,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Explain one picture and write its files; returns the JSON report (with ``files``: role -> path).

    The reusable entry point (``dgiqa explain --heatmap``, ``dgiqa batch
    --heatmaps DIR``). ``path``: the image file (its stem names the outputs).
    ``out_dir``: where to write (created if missing; default: next to the
    image). Writes, with ``heatmap``: ``{stem}_explain.png`` (the panel),
    ``{stem}_depth.png`` (DGIQA), ``{stem}_attention_{cross,refine}.png``,
    ``{stem}_quality.png`` (each the input's size, pixel-aligned with it); with
    ``save_arrays``: ``{stem}_explain.npz`` (see :meth:`Explanation.arrays`).
    ``prepared`` / ``depth``: reuse a ``PreparedImage`` and its depth map (DGIQA)
    when the caller already has them (the batch engine); the scoring then matches
    ``Scorer.score`` for the same picture and settings. ``title``: text added
    to the panel's heading. ``on_progress(done, total)``: called as the
    quality windows are scored.

    Raises ``FileExistsError`` (before any model work) when a file would be
    overwritten and not ``force``, ``ImageError`` for an input that cannot be
    scored, ``ValueError`` for bad options.
    """
    family = family_of(scorer)
    kinds = check_attention_kinds(attention, family)
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"alpha must be between 0 and 1 (got {alpha})")
    paths = output_paths(
        path,
        out_dir,
        attention=kinds,
        quality=quality,
        heatmap=heatmap,
        save_arrays=save_arrays,
        depth=family.has_depth,
    )
    if not force and (taken := existing_outputs(paths)):
        raise FileExistsError(f"{taken[0]} exists (force=True replaces it)")

    if prepared is None:
        prepared = scorer.prepare(scorer.load(path))
    explanation = explain_prepared(
        scorer,
        prepared,
        depth,
        attention=kinds,
        quality=quality,
        stride=stride,
        smooth=smooth,
        quality_scale=quality_scale,
        batch_size=batch_size,
        on_progress=on_progress,
    )
    report = explanation.report()
    if paths:
        next(iter(paths.values())).parent.mkdir(parents=True, exist_ok=True)
    if heatmap:
        views = map_views(explanation)
        picture = explanation.rgb if overlay else None
        for view in views:  # each the input's size, pixel-aligned, with a small legend in a corner
            render.save_png(render.with_legend(view.colour(picture, alpha), view), paths[view.role])
        drawn = panel(explanation, overlay=overlay, alpha=alpha, title=title, views=views)
        render.save_png(drawn, paths["panel"], optimize=True)
    if save_arrays:
        with open(paths["arrays"], "wb") as f:
            np.savez_compressed(f, **explanation.arrays())
    report["files"] = {role: str(p) for role, p in paths.items()}
    return report
