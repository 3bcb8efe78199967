"""Decoding image files exactly as the authors' script does (``cv2.imread``), with clear errors.

OpenCV's colour decoding applies the EXIF orientation, turns grayscale and
palette images into three channels, scales 16-bit samples to 8 bits and drops
alpha; reproducing the published scores needs exactly those pixels, so OpenCV
decodes. What it cannot read (or reads silently wrong, such as a JPEG cut
short) becomes an :class:`ImageError` naming the file and the reason.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

# 200 megapixels: a 16 000 x 12 500 picture. Decoding it takes 600 MB and the
# model sees it at 384 pixels on the short side anyway; above this we refuse
# rather than risk running the machine out of memory.
MAX_PIXELS = 200_000_000
# Shorter than the 224-pixel crops can still be scored (the frame is resized so
# its short side is 384), but a side this short has nothing left to judge.
MIN_SIDE = 8
# The depth stage resizes the short side to 518 and keeps the aspect ratio, so
# a 20000 x 30 strip would become 345 000 x 518 pixels (900 000 ViT tokens).
# Panoramas up to 12:1 are fine; beyond that the picture is refused.
MAX_ASPECT = 12.0

IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".png",
        ".bmp",
        ".dib",
        ".tif",
        ".tiff",
        ".webp",
        ".gif",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
        ".jp2",
        ".exr",
        ".hdr",
        ".avif",
    }
)

if hasattr(cv2, "utils") and hasattr(cv2.utils, "logging"):
    # OpenCV prints decoder warnings straight to stderr; our errors say the same, once, per file.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


class ImageError(Exception):
    """An input that cannot be scored; the message names the file and says why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class DecodedImage:
    """An RGB uint8 picture (H, W, 3) and where it came from."""

    rgb: np.ndarray
    path: str

    @property
    def height(self) -> int:
        return self.rgb.shape[0]

    @property
    def width(self) -> int:
        return self.rgb.shape[1]


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """Read ``path`` into RGB uint8 as ``cv2.imread(path)`` + BGR->RGB would, or raise ImageError."""
    path = Path(path)
    if path.is_dir():
        raise ImageError(path, "is a directory, not an image (use `dgiqa batch` for folders)")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(path, "no such file") from None
    except PermissionError:
        raise ImageError(path, "permission denied") from None
    except OSError as exc:
        raise ImageError(path, f"cannot be read ({exc.strerror or exc})") from None
    return decode_image(data, path, max_pixels)


def decode_image(data: bytes, path: str | os.PathLike = "<bytes>", max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """Decode encoded image bytes; ``path`` only names the input in errors."""
    if not data:
        raise ImageError(path, "empty file (0 bytes)")
    check_pixel_count(data, path, max_pixels)
    if data[:2] == b"\xff\xd8" and jpeg_is_truncated(data):
        raise ImageError(path, "truncated JPEG (the file ends before the image data does)")
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageError(path, f"OpenCV could not decode it ({exc.err or exc})") from None
    rgb = decode_with_pillow(data, path) if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return DecodedImage(check_size(np.ascontiguousarray(rgb), path), str(path))


def decoded_from_array(array: np.ndarray, name: str = "<array>") -> DecodedImage:
    """Accept an RGB uint8 array as OpenCV decoding would have left it (gray -> 3 channels, alpha dropped)."""
    if array.dtype != np.uint8:
        raise ImageError(name, f"expected a uint8 array, got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ImageError(name, f"expected an (H, W, 3) RGB array, got shape {array.shape}")
    return DecodedImage(check_size(np.ascontiguousarray(array[..., :3]), name), name)


def check_size(rgb: np.ndarray, path) -> np.ndarray:
    """Refuse pictures too small or too thin for the crops and the depth stage."""
    height, width = rgb.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ImageError(path, f"too small to score ({width}x{height}; each side must be at least {MIN_SIDE} pixels)")
    if max(height, width) / min(height, width) > MAX_ASPECT:
        raise ImageError(
            path, f"too thin to score ({width}x{height}; the aspect ratio may be at most {MAX_ASPECT:g}:1)"
        )
    return rgb


def check_pixel_count(data: bytes, path, max_pixels: int) -> None:
    """Refuse oversized pictures from their header, before decoding allocates anything."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:
                width, height = header.size
    except Image.DecompressionBombError:
        width, height = _bomb_size(data)
    except Exception:
        return  # not a format Pillow knows: OpenCV will have its say, and its own limit is 2**30 pixels
    if width * height > max_pixels:
        raise ImageError(
            path,
            f"too large: {width}x{height} = {width * height / 1e6:.0f} megapixels exceeds the limit of "
            f"{max_pixels / 1e6:.0f} (raise it with --max-pixels)",
        )


def _bomb_size(data: bytes) -> tuple[int, int]:
    """Size of a picture too large for Pillow's own safety limit, read with that limit lifted."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(io.BytesIO(data)) as header:
            return header.size
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def jpeg_is_truncated(data: bytes) -> bool:
    """True when the JPEG has no end-of-image marker after its first scan.

    Some OpenCV builds decode a JPEG that was cut short without complaint and
    fill the missing rows with grey, which would give a silently wrong score.
    Markers are walked (not searched) up to the first start-of-scan so that an
    EXIF thumbnail, which has its own scan and end marker, is not mistaken for
    the image; inside the entropy-coded scan data 0xFF is always escaped, so
    the first 0xFFD9 after it is the real end, and trailing data (motion
    photos append a video) does not matter.
    """
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return False  # not a marker layout we understand: let the decoder judge
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan
            return data.find(b"\xff\xd9", pos) == -1
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return True


def decode_with_pillow(data: bytes, path) -> np.ndarray:
    """Second chance for formats this OpenCV build lacks (e.g. GIF before OpenCV 4.7)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return np.asarray(img.convert("RGB"))
    except Image.UnidentifiedImageError:
        raise ImageError(path, "not an image (neither OpenCV nor Pillow recognises the format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(path, f"corrupt or truncated image ({exc})") from None


def is_image_path(path: str | os.PathLike) -> bool:
    """Whether a file name has one of the image extensions ``dgiqa`` looks for in folders."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS
