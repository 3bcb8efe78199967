"""Drawing explanations: colour maps, overlays, colour bars and the side-by-side panel.

Plain arrays and labels in, pictures out: this module knows nothing of models or of
:mod:`dgiqa_cli.explain.explanation`, which computes what is drawn and calls it.

OpenCV colour maps and Pillow's default font only; no plotting library. Colour
maps: depth = inferno (near = warm and bright, far = dark), attention =
viridis, local quality = red (worse) -> yellow -> green (better). Areas a map
does not cover (attention where no crop was cut) are drawn grey, or left as
the bare picture in an overlay.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

NAN_GREY = (128, 128, 128)
CROP_COLOUR = (255, 255, 255)
WORST_COLOUR = (255, 0, 200)
QUALITY_MIN_SPAN = 0.01  # auto colour range of the quality map: never narrower than this

# ColorBrewer RdYlGn, 11 classes: low scores red, high scores green.
_RDYLGN = ("a50026", "d73027", "f46d43", "fdae61", "fee08b", "ffffbf", "d9ef8b", "a6d96a", "66bd63", "1a9850", "006837")

CMAPS = {"depth": "inferno", "attention": "viridis", "quality": "rdylgn"}


@cache
def lut(name: str) -> np.ndarray:
    """A colour map as a (256, 3) uint8 RGB table: an OpenCV one by name, or ``rdylgn``."""
    if name == "rdylgn":
        anchors = np.array([[int(h[i : i + 2], 16) for i in (0, 2, 4)] for h in _RDYLGN], np.float64)
        at = np.linspace(0, 255, len(anchors))
        return np.stack([np.interp(np.arange(256), at, anchors[:, c]) for c in range(3)], 1).round().astype(np.uint8)
    code = getattr(cv2, f"COLORMAP_{name.upper()}")
    return cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], code)[:, 0, ::-1].copy()


def colorize(values: np.ndarray, lo: float, hi: float, cmap: str) -> np.ndarray:
    """Float map (H, W) -> RGB (H, W, 3) uint8 through ``cmap`` over [lo, hi]; NaN -> grey."""
    valid = np.isfinite(values)
    span = hi - lo if hi > lo else 1.0
    index = np.clip((np.where(valid, values, lo) - lo) / span * 255, 0, 255).round().astype(np.uint8)
    rgb = lut(cmap)[index]
    rgb[~valid] = NAN_GREY
    return rgb


def blend(picture: np.ndarray, colour: np.ndarray, alpha: float, valid: np.ndarray | None = None) -> np.ndarray:
    """``(1 - alpha) * picture + alpha * colour``; where not ``valid``, the picture alone."""
    mixed = cv2.addWeighted(picture, 1.0 - alpha, colour, alpha, 0.0)
    if valid is not None:
        mixed[~valid] = picture[~valid]
    return mixed


# -- the maps, at the input's size ---------------------------------------------------------------


@dataclass
class MapView:
    """One map ready to draw: values at the input's size, colour range, colour map, labels."""

    role: str  # "depth", "attention_cross", "attention_refine", "quality"
    title: str
    values: np.ndarray  # (H, W) float32, NaN where not covered
    lo: float
    hi: float
    cmap: str
    ticks: tuple[str, str, str]  # labels under the colour bar's left end, middle and right end
    caption: str

    def colour(self, picture: np.ndarray | None = None, alpha: float = 0.5) -> np.ndarray:
        rgb = colorize(self.values, self.lo, self.hi, self.cmap)
        return rgb if picture is None else blend(picture, rgb, alpha, np.isfinite(self.values))


def finite_range(values: np.ndarray, min_span: float = 1e-6) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    if hi - lo < min_span:
        mid = (lo + hi) / 2
        lo, hi = mid - min_span / 2, mid + min_span / 2
    return lo, hi


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


def with_legend(rgb: np.ndarray, view: MapView) -> Image.Image:
    """A map picture with its colour bar and range drawn small in the bottom-right corner (size unchanged)."""
    image = Image.fromarray(rgb)
    width, height = image.size
    bar_w = min(160, max(40, width // 4))
    small = font(11)
    draw = ImageDraw.Draw(image, "RGBA")
    left, _, right = view.ticks
    scale = view.caption.split("colours: ", 1)[1] if "colours: " in view.caption else ""
    label = fit_text(draw, f"{view.title} · {scale}" if scale else view.title, small, min(width - 16, 260))
    box_w = max(bar_w, text_width(draw, label, small)) + 8
    box_h = BAR_STRIP // 2 + 34
    if box_w + 8 > width or box_h + 8 > height:
        return image  # too small a picture for a legend
    x0, y0 = width - box_w - 4, height - box_h - 4
    draw.rectangle([x0, y0, x0 + box_w, y0 + box_h], fill=(255, 255, 255, 210))
    strip = np.repeat(lut(view.cmap)[np.linspace(0, 255, bar_w).round().astype(int)][None], BAR_STRIP // 2, 0)
    image.paste(Image.fromarray(strip), (int(x0 + 4), int(y0 + 4)))
    ty = y0 + 4 + BAR_STRIP // 2 + 1
    draw.text((x0 + 4, ty), left, fill="black", font=small)
    draw.text((x0 + 4 + bar_w - text_width(draw, right, small), ty), right, fill="black", font=small)
    draw.text((x0 + 4, ty + 14), label, fill=(60, 60, 60), font=small)
    return image


def save_png(rgb: np.ndarray | Image.Image, path: str | os.PathLike, optimize: bool = False) -> None:
    """Write a PNG (``optimize``: smallest file, slower; for the panel, not for full-size maps)."""
    image = rgb if isinstance(rgb, Image.Image) else Image.fromarray(rgb)
    image.save(Path(path), format="PNG", optimize=optimize)


# -- the panel -----------------------------------------------------------------------------------

PAD = 12
TITLE_H = 34  # the panel's title line
TILE_TITLE_H = 24  # each tile's title
BAR_H = 52  # colour bar (or legend) under each tile
BAR_STRIP = 12
MIN_COLUMN = 220  # tiles narrower than this sit centred in a column this wide
ROW_TILE_H, ROW_TILE_MAX_W = 300, 480  # tiles side by side: 300 high, at most 480 wide
COLUMN_TILE_W = 720  # tiles stacked (pictures wider than 2:1): 720 wide
STACK_ASPECT = 2.0


@dataclass(frozen=True)
class Layout:
    """Where the panel's tiles go; every tile has the input's aspect ratio."""

    tile_w: int
    tile_h: int
    column_w: int
    stacked: bool  # tiles one above the other (wide pictures) instead of side by side
    width: int
    height: int
    tiles: int

    def origin(self, i: int) -> tuple[int, int]:
        """Top-left corner of tile ``i``'s cell (its title line)."""
        cell_h = TILE_TITLE_H + self.tile_h + BAR_H
        if self.stacked:
            return PAD, TITLE_H + i * (cell_h + PAD)
        return PAD + i * (self.column_w + PAD), TITLE_H


def panel_layout(width: int, height: int, tiles: int) -> Layout:
    """Tile and panel sizes for a ``width`` x ``height`` input and ``tiles`` tiles."""
    aspect = width / height
    stacked = aspect > STACK_ASPECT
    if stacked:
        tile_w, tile_h = COLUMN_TILE_W, max(1, round(COLUMN_TILE_W / aspect))
    else:
        tile_h, tile_w = ROW_TILE_H, max(1, round(ROW_TILE_H * aspect))
        if tile_w > ROW_TILE_MAX_W:
            tile_w, tile_h = ROW_TILE_MAX_W, max(1, round(ROW_TILE_MAX_W / aspect))
    column_w = max(tile_w, MIN_COLUMN)
    cell_h = TILE_TITLE_H + tile_h + BAR_H
    if stacked:
        size = (column_w + 2 * PAD, TITLE_H + tiles * (cell_h + PAD))
    else:
        size = (PAD + tiles * (column_w + PAD), TITLE_H + cell_h + PAD)
    return Layout(tile_w, tile_h, column_w, stacked, size[0], size[1], tiles)


@cache
def font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the bitmap font, one size
        return ImageFont.load_default()


def text_width(draw: ImageDraw.ImageDraw, text: str, f) -> float:
    return draw.textlength(text, font=f)


def fit_text(draw: ImageDraw.ImageDraw, text: str, f, width: float) -> str:
    """``text``, cut with an ellipsis to fit ``width`` pixels."""
    if text_width(draw, text, f) <= width:
        return text
    while text and text_width(draw, text + "…", f) > width:
        text = text[:-1]
    return text + "…"


def draw_colour_bar(draw: ImageDraw.ImageDraw, canvas: Image.Image, view: MapView, x: int, y: int, w: int) -> None:
    strip = np.repeat(lut(view.cmap)[np.linspace(0, 255, w).round().astype(int)][None], BAR_STRIP, 0)
    canvas.paste(Image.fromarray(strip), (x, y))
    draw.rectangle([x - 1, y - 1, x + w, y + BAR_STRIP], outline=(90, 90, 90))
    small = font(12)
    ty = y + BAR_STRIP + 3
    left, mid, right = view.ticks
    draw.text((x, ty), left, fill="black", font=small)
    if mid:
        draw.text((x + w / 2 - text_width(draw, mid, small) / 2, ty), mid, fill="black", font=small)
    draw.text((x + w - text_width(draw, right, small), ty), right, fill="black", font=small)
    caption = fit_text(draw, view.caption, small, w)
    draw.text((x + w / 2 - text_width(draw, caption, small) / 2, ty + 16), caption, fill=(80, 80, 80), font=small)


def scaled_box(box: list[int], scale_x: float, scale_y: float, ox: int, oy: int) -> list[float]:
    x0, y0, x1, y1 = box
    return [ox + x0 * scale_x, oy + y0 * scale_y, ox + x1 * scale_x - 1, oy + y1 * scale_y - 1]


def panel(
    rgb: np.ndarray,
    views: list[MapView],
    *,
    heading: str,
    score: float,
    crop_boxes: list[list[int]],
    worst_box: list[int] | None = None,
    worst_score: float | None = None,
    overlay: bool = False,
    alpha: float = 0.5,
) -> Image.Image:
    """The side-by-side picture: ``rgb`` (crops and worst window outlined), then each map with its colour bar.

    Plain data in: the picture, the maps ready to draw, the heading, and boxes in
    the picture's pixels ``[x0, y0, x1, y1]`` (x1, y1 exclusive).
    """
    height, width = rgb.shape[:2]
    layout = panel_layout(width, height, 1 + len(views))
    canvas = Image.new("RGB", (layout.width, layout.height), "white")
    draw = ImageDraw.Draw(canvas)

    draw.text((PAD, 8), fit_text(draw, heading, font(16), layout.width - 2 * PAD), fill="black", font=font(16))

    def place_tile(rgb: np.ndarray, i: int) -> tuple[int, int]:
        ox, oy = layout.origin(i)
        tx = ox + (layout.column_w - layout.tile_w) // 2
        ty = oy + TILE_TITLE_H
        tile = Image.fromarray(rgb).resize((layout.tile_w, layout.tile_h), Image.Resampling.LANCZOS)
        canvas.paste(tile, (tx, ty))
        return tx, ty

    sx, sy = layout.tile_w / width, layout.tile_h / height

    # the input, with the scoring crops and the worst window
    ox, oy = layout.origin(0)
    draw.text(
        (ox, oy + 2),
        fit_text(draw, f"Input  ·  score {score:.3f}", font(14), layout.column_w),
        fill="black",
        font=font(14),
    )
    tx, ty = place_tile(rgb, 0)
    overlay_draw = ImageDraw.Draw(canvas, "RGBA")
    for box in crop_boxes:
        overlay_draw.rectangle(scaled_box(box, sx, sy, tx, ty), outline=(*CROP_COLOUR, 170), width=1)
    if worst_box:
        draw.rectangle(scaled_box(worst_box, sx, sy, tx, ty), outline=WORST_COLOUR, width=2)
    ly = ty + layout.tile_h + 6
    small = font(12)
    draw.rectangle([ox, ly + 2, ox + 10, ly + 12], outline=(60, 60, 60))
    draw.text((ox + 16, ly), f"scoring crops ({len(crop_boxes)})", fill="black", font=small)
    if worst_box:
        draw.rectangle([ox, ly + 20, ox + 10, ly + 30], outline=WORST_COLOUR, width=2)
        draw.text((ox + 16, ly + 18), f"worst window: {worst_score:.3f}", fill="black", font=small)

    picture = rgb if overlay else None
    for i, view in enumerate(views, start=1):
        ox, oy = layout.origin(i)
        label = view.title
        if view.role == "quality" and worst_box:
            label += f"  ·  worst {worst_score:.3f}"
        draw.text((ox, oy + 2), fit_text(draw, label, font(14), layout.column_w), fill="black", font=font(14))
        tx, ty = place_tile(view.colour(picture, alpha), i)
        if view.role == "quality" and worst_box:
            draw.rectangle(scaled_box(worst_box, sx, sy, tx, ty), outline=WORST_COLOUR, width=2)
        bar_w = max(60, layout.column_w - 8)
        draw_colour_bar(draw, canvas, view, ox + (layout.column_w - bar_w) // 2, ty + layout.tile_h + 8, bar_w)
    return canvas
