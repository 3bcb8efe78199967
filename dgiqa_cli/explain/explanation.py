"""Why an image scored as it did: depth, attention and local-quality maps, for DGIQA and Life-IQA.

The computation lives here; drawing (colour maps, colour bars, the panel) is in
:mod:`dgiqa_cli.explain.render`. Everything runs through the scoring model's public steps
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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from dgiqa_cli.errors import UsageError
from dgiqa_cli.explain.families import Family, check_attention_kinds, family_of
from dgiqa_cli.explain.maps import (
    WINDOW,
    attention_received,
    frame_box_to_image,
    place_minimum,
    place_values,
    smooth_map,
    window_grid,
)

QUALITY_SCALES = ("auto", "model", "picture")
DEFAULT_STRIDE = 32
DEFAULT_SMOOTH = 16.0
DEFAULT_BATCH = 32

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
    """Explain one :class:`~dgiqa_cli.inference.model.PreparedImage` (``depth``: its depth map if computed; DGIQA).

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
        crop_scores=crops.scores,
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
