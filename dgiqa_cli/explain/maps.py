"""Placing per-window numbers on the model's frame: window grids, attention received, boxes.

Pure array arithmetic for :mod:`dgiqa_cli.explain.explanation`; no model, no drawing.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from dgiqa_cli.inference import preprocess as pp

GRID = 7  # the attention grid per 224 crop (DGIQA's tokens, Life-IQA's stage-3 cells): 32 pixels a cell
WINDOW = pp.CROP  # 224


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


def place_minimum(
    values: np.ndarray, positions: Sequence[tuple[int, int]], shape: tuple[int, int], window: int = WINDOW
) -> np.ndarray:
    """Per pixel, the lowest of the window values covering it (NaN where none does).

    The local-quality map: a pixel shows the worst 224 window it belongs to, so
    the worst window of the picture is drawn in its own colour over its whole
    box (an average over the ~49 windows covering a pixel would wash it out).
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) != len(positions):
        raise ValueError(f"{len(values)} values for {len(positions)} windows")
    lowest = np.full(shape, np.inf)
    for value, (x, y) in zip(values, positions, strict=True):
        if x < 0 or y < 0 or x + window > shape[1] or y + window > shape[0]:
            raise ValueError(f"window at ({x}, {y}) leaves the {shape[1]}x{shape[0]} frame")
        np.minimum(lowest[y : y + window, x : x + window], value, out=lowest[y : y + window, x : x + window])
    return np.where(np.isfinite(lowest), lowest, np.nan).astype(np.float32)


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
