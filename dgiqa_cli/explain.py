"""Why an image scored as it did: depth, attention and local-quality maps, for DGIQA and Life-IQA.

The computation lives here; drawing (colour maps, colour bars, the panel) is in
:mod:`dgiqa_cli.render`. Everything runs through the :class:`~dgiqa_cli.scorer.Scorer`'s
public steps (``load`` -> ``prepare`` -> [``depth_map`` -> ``depth_frame``] ->
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
  edges), averaged where windows overlap, then optionally Gaussian-smoothed.
  The worst region is the lowest-scoring window.

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

GRID = 7  # the attention grid per 224 crop (DGIQA's tokens, Life-IQA's stage-3 cells): 32 pixels a cell
WINDOW = pp.CROP  # 224
ATTENTION_KINDS = ("cross", "refine")
DEFAULT_STRIDE = 32
DEFAULT_SMOOTH = 16.0
DEFAULT_BATCH = 32


# -- pure computation (no model) -------------------------------------------------------------------


def window_starts(size: int, stride: int, window: int = WINDOW) -> list[int]:
    """Start offsets of ``window``-long windows ``stride`` apart along a side of ``size``; the last ends at ``size``."""
    if stride < 1:
        raise ValueError("the stride must be at least 1 pixel")
    last = size - window
    if last < 0:
        raise ValueError(f"a {window}-pixel window does not fit in {size} pixels")
    starts = list(range(0, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    return starts


def window_grid(height: int, width: int, stride: int, window: int = WINDOW) -> list[tuple[int, int]]:
    """Top-left corners (x, y) of a dense grid of windows covering a ``height`` x ``width`` frame, row by row.

    The first row and column start at 0, the last ones end flush with the
    bottom and right edges, so with ``stride <= window`` every pixel is covered.
    """
    ys = window_starts(height, stride, window)
    xs = window_starts(width, stride, window)
    return [(x, y) for y in ys for x in xs]


def place_values(
    values: np.ndarray, positions: Sequence[tuple[int, int]], shape: tuple[int, int], window: int = WINDOW
) -> tuple[np.ndarray, np.ndarray]:
    """Put per-window values back where the windows are and average them where they overlap.

    ``values``: (N,) one value per window, or (N, g, g) a grid per window, each
    cell covering ``window / g`` pixels (nearest neighbour: a cell's value
    fills exactly its square). ``positions``: top-left corners (x, y).
    Returns ``(mean, count)`` of shape ``shape``: the average over the windows
    covering each pixel (NaN where none does) and how many do.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) != len(positions):
        raise ValueError(f"{len(values)} values for {len(positions)} windows")
    total = np.zeros(shape, np.float64)
    count = np.zeros(shape, np.int32)
    for value, (x, y) in zip(values, positions, strict=True):
        if x < 0 or y < 0 or x + window > shape[1] or y + window > shape[0]:
            raise ValueError(f"window at ({x}, {y}) leaves the {shape[1]}x{shape[0]} frame")
        if value.ndim == 0:
            patch = value
        elif window % value.shape[0] == 0 and window % value.shape[1] == 0:
            patch = np.repeat(np.repeat(value, window // value.shape[0], 0), window // value.shape[1], 1)
        else:
            patch = cv2.resize(value, (window, window), interpolation=cv2.INTER_NEAREST)
        total[y : y + window, x : x + window] += patch
        count[y : y + window, x : x + window] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return mean.astype(np.float32), count


def attention_received(weights: np.ndarray, grid: int = GRID) -> np.ndarray:
    """Head-averaged attention (N, L, L) (rows: queries, columns: keys) -> (N, grid, grid).

    The attention each key location receives, as the mean of its column over
    the query rows, scaled by L so that 1 is the even share (each crop's
    values average to 1).
    """
    weights = np.asarray(weights, dtype=np.float64)
    n, rows, cols = weights.shape
    if cols != grid * grid:
        raise ValueError(f"expected {grid * grid} key tokens, got {cols}")
    return (weights.mean(axis=1) * cols).reshape(n, grid, grid).astype(np.float32)


def smooth_map(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (``sigma`` in pixels; 0 = none) of a map without NaNs."""
    if sigma <= 0:
        return values.astype(np.float32)
    return cv2.GaussianBlur(values.astype(np.float32), (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)


def resize_map(values: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of a float map to ``width`` x ``height``; NaN (uncovered) areas stay NaN, edges stay sharp."""
    values = values.astype(np.float32)
    if values.shape == (height, width):
        return values
    valid = np.isfinite(values)
    if valid.all():
        return cv2.resize(values, (width, height), interpolation=cv2.INTER_LINEAR)
    weight = cv2.resize(valid.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    total = cv2.resize(np.where(valid, values, 0).astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight >= 0.5, total / np.maximum(weight, 1e-6), np.nan).astype(np.float32)


def frame_box_to_image(
    x: int, y: int, frame_shape: tuple[int, int], image_shape: tuple[int, int], window: int = WINDOW
) -> list[int]:
    """A window at (x, y) of the model's frame -> ``[x0, y0, x1, y1]`` in original-image pixels (x1, y1 exclusive).

    x and y scale separately: Life-IQA's frame (512 x 384, H x W) does not keep the picture's aspect ratio.
    """
    fh, fw = frame_shape
    ih, iw = image_shape
    sx, sy = iw / fw, ih / fh
    x0, y0 = round(x * sx), round(y * sy)
    x1, y1 = round((x + window) * sx), round((y + window) * sy)
    return [max(0, x0), max(0, y0), min(iw, x1), min(ih, y1)]


# -- the model families ---------------------------------------------------------------------------


@dataclass
class CropPass:
    """One pass of a model over a picture's scoring crops, and how to score more windows of the same frame."""

    scores: object  # (N,) torch tensor on the CPU: the crop scores, as Scorer.score averages them
    attention: dict[str, np.ndarray]  # kind -> (N, queries, 49) head-averaged weights, from the same pass
    score_windows: Callable[[list[tuple[int, int]]], np.ndarray]  # 224 windows (x, y) of the frame -> (K,) scores
    depth: np.ndarray | None = None  # (h, w) float32, Depth Anything's relative inverse depth (DGIQA)
    depth_frame: np.ndarray | None = None  # (H', W') uint8, the depth picture DGIQA sees


def dgiqa_pass(scorer, prepared, depth=None) -> CropPass:
    """DGIQA: depth map (unless given), then RGB and depth crops together; Depth-CAR attention."""
    if depth is None:
        depth = scorer.depth_map(prepared.depth_input)
    depth_frame = scorer.depth_frame(prepared, depth)
    frame, positions = prepared.frame, prepared.positions
    scores, weights = scorer.score_crops(
        prepared.rgb_crops, pp.cut_crops(depth_frame, positions), return_attention=True
    )

    def score_windows(windows):
        return scorer.score_crops(pp.cut_crops(frame, windows), pp.cut_crops(depth_frame, windows)).cpu().numpy()

    return CropPass(
        scores=scores.cpu(),
        attention={kind: w.cpu().numpy().astype(np.float32) for kind, w in weights.items()},
        score_windows=score_windows,
        depth=depth.detach().cpu().numpy().astype(np.float32),
        depth_frame=depth_frame,
    )


def life_iqa_pass(scorer, prepared, depth=None) -> CropPass:
    """Life-IQA: RGB crops alone; its query decoder's last cross-attention over the 7 x 7 stage-3 grid."""
    if depth is not None:
        raise ValueError("Life-IQA has no depth stage: it takes no depth map")
    frame = prepared.frame
    scores, weights = scorer.score_rgb_crops(prepared.rgb_crops, return_attention=True)

    def score_windows(windows):
        return scorer.score_rgb_crops(pp.cut_crops(frame, windows)).cpu().numpy()

    return CropPass(
        scores=scores.cpu(), attention={"cross": weights.cpu().numpy().astype(np.float32)}, score_windows=score_windows
    )


@dataclass(frozen=True)
class Family:
    """What an explanation of one model family shows and how it gets it; the only place the families differ."""

    name: str  # as printed: "DGIQA", "Life-IQA"
    attention: Mapping[str, str]  # the attention kinds it has -> their titles in the panel
    has_depth: bool  # a depth map to show (and a {stem}_depth.png)
    heading: str  # the panel's score, formatted with score and scale
    setup: str  # the panel's setup line, formatted with model, depth_model and crops
    run: Callable[..., CropPass]  # (scorer, prepared, depth) -> CropPass


FAMILIES = {
    "dgiqa": Family(
        name="DGIQA",
        attention={"cross": "Depth-CAR cross-attention", "refine": "Refinement self-attention"},
        has_depth=True,
        heading="DGIQA score {score:.4f}",
        setup="{model}, depth {depth_model}, {crops} crops",
        run=dgiqa_pass,
    ),
    "life-iqa": Family(
        name="Life-IQA",
        attention={"cross": "Decoder cross-attention"},
        has_depth=False,
        heading="Life-IQA score {score:.4g} ({scale})",
        setup="{model}, {crops} crops",
        run=life_iqa_pass,
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
            raise ValueError(f"{family.name} has no {kind!r} attention; choose --attention {has}")
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
    if quality and not 1 <= stride <= WINDOW:
        raise ValueError(f"the quality-map stride must be between 1 and {WINDOW} pixels")
    frame = prepared.frame
    frame_shape = frame.shape[:2]
    crops = family.run(scorer, prepared, depth)

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
        mean, _ = place_values(window_scores, windows, frame_shape)
        explanation.quality_positions = windows
        explanation.quality_scores = window_scores
        explanation.quality_map = smooth_map(mean, smooth)
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
    from . import render

    family = family_of(scorer)
    kinds = check_attention_kinds(attention, family)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError("--alpha must be between 0 and 1")
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
        raise FileExistsError(f"{taken[0]} exists (use --force to overwrite)")

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
        batch_size=batch_size,
        on_progress=on_progress,
    )
    report = explanation.report()
    if paths:
        next(iter(paths.values())).parent.mkdir(parents=True, exist_ok=True)
    if heatmap:
        views = render.map_views(explanation)
        for role, picture in render.map_images(explanation, overlay=overlay, alpha=alpha, views=views).items():
            render.save_png(picture, paths[role])
        panel = render.panel(explanation, overlay=overlay, alpha=alpha, title=title, views=views)
        render.save_png(panel, paths["panel"], optimize=True)
    if save_arrays:
        with open(paths["arrays"], "wb") as f:
            np.savez_compressed(f, **explanation.arrays())
    report["files"] = {role: str(p) for role, p in paths.items()}
    return report
