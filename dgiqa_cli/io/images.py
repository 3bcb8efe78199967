"""Decoding image files exactly as the authors' script does (``cv2.imread``), with clear errors.

OpenCV's colour decoding applies the EXIF orientation, turns grayscale and
palette images into three channels, scales 16-bit samples to 8 bits and drops
alpha; reproducing the published scores needs exactly those pixels, so OpenCV
decodes. Files it cannot read go to Pillow, converted by the same rules. What
neither can read (or reads silently wrong, such as a JPEG cut short) becomes an
:class:`ImageError` naming the file and the reason in one line.

Odd inputs must never hang, exhaust memory or crash a batch: only regular files
are opened, never more than their size is read, and every picture's size is
read from its header and checked before any decoder allocates pixels.
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from dgiqa_cli.errors import DGIQAError
from dgiqa_cli.inference.defaults import MAX_PIXELS  # 200 megapixels: refused above, rather than run out of memory
from dgiqa_cli.io.names import display_path, one_line, path_text, special_kind

# No image file we can score is this large (200 megapixels of uncompressed
# 16-bit RGB is 1.2 GB); reading more would only risk the machine's memory.
MAX_FILE_BYTES = 2 * 1024**3
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

# Leading bytes of the formats OpenCV decodes, to name a file whose header is
# recognised but broken (rather than calling it "not an image").
MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF8", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\x76\x2f\x31\x01", "OpenEXR"),
    (b"#?RADIANCE", "Radiance HDR"),
    (b"#?RGBE", "Radiance HDR"),
    (b"DDS ", "DDS"),
    (b"icns", "ICNS"),
    (b"\x00\x00\x01\x00", "ICO"),
)

# OpenCV logs its decoders' warnings (libtiff, OpenJPEG, its own checks); our
# errors say the same once per file, so its log is switched off. (libpng and
# libjpeg print to file descriptor 2 past this level; the library leaves fd 2
# alone, so that a caller's own output is never lost, and the ``dgiqa`` program
# silences it for its whole process: :mod:`dgiqa_cli.io.native_stderr`.)
if hasattr(cv2, "utils") and hasattr(cv2.utils, "logging"):
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


class ImageError(DGIQAError):
    """An input that cannot be scored; the message names the file and says why, in one printable line."""

    def __init__(self, path: str | bytes | os.PathLike, reason: str):
        self.path = path_text(path)
        self.reason = one_line(reason)
        super().__init__(f"{display_path(self.path)}: {self.reason}")


@dataclass(frozen=True)
class DecodedImage:
    """An RGB uint8 picture (H, W, 3), where it came from, and which decoder made the pixels."""

    rgb: np.ndarray
    path: str
    decoder: str = "opencv"  # "opencv", "pillow" or "array"

    @property
    def height(self) -> int:
        return self.rgb.shape[0]

    @property
    def width(self) -> int:
        return self.rgb.shape[1]


# -- names ---------------------------------------------------------------------------------------


def os_error_reason(exc: OSError) -> str:
    """What an ``OSError`` means, by its errno (a read-only file system is not a permission problem)."""
    if exc.errno == errno.ENOENT:
        return "no such file"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    name = errno.errorcode.get(exc.errno or 0)
    detail = exc.strerror or str(exc)
    return f"cannot be read ({name}: {detail})" if name else f"cannot be read ({detail})"


# -- reading files -------------------------------------------------------------------------------


def load_image(path: str | bytes | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The (H, W, 3) uint8 RGB array the models see (before resizing), or :class:`ImageError` saying why not."""
    return read_image(path, max_pixels).rgb


def read_image(path: str | bytes | os.PathLike, max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """Read ``path`` into RGB uint8 as ``cv2.imread(path)`` + BGR->RGB would, or raise ImageError."""
    return decode_image(read_file_bytes(path), path, max_pixels)


def read_file_bytes(path: str | bytes | os.PathLike) -> bytes:
    """The bytes of a regular file, never more than its size; anything else is an ImageError.

    A FIFO would block ``open`` forever and ``/dev/zero`` never ends, so the
    kind of file is checked (links followed) before opening, opened without
    blocking, and checked again on the open descriptor in case it was swapped.
    """
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT and os.path.islink(path):
            raise ImageError(path, "broken symbolic link (its target does not exist)") from None
        raise ImageError(path, os_error_reason(exc)) from None
    check_regular_file(info, path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ImageError(path, os_error_reason(exc)) from None
    with open(fd, "rb", buffering=0) as file:
        try:
            info = os.fstat(fd)
            check_regular_file(info, path)
            return file.read(info.st_size)  # what was there when we looked; a file still growing is cut here
        except OSError as exc:
            raise ImageError(path, os_error_reason(exc)) from None


def check_regular_file(info: os.stat_result, path) -> None:
    """Refuse directories, devices, FIFOs and sockets by name, and files too large to be a picture."""
    mode = info.st_mode
    if stat.S_ISDIR(mode):
        raise ImageError(path, "is a directory, not an image (use `dgiqa batch` for folders)")
    kind = special_kind(mode)
    if kind is not None:
        raise ImageError(path, f"is {kind}, not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        raise ImageError(
            path,
            f"file too large ({info.st_size / 1024**3:.1f} GiB; "
            f"image files over {MAX_FILE_BYTES // 1024**3} GiB are refused)",
        )


# -- decoding ------------------------------------------------------------------------------------


def decode_image(
    data: bytes, path: str | bytes | os.PathLike = "<bytes>", max_pixels: int = MAX_PIXELS
) -> DecodedImage:
    """Decode encoded image bytes; ``path`` only names the input in errors."""
    if not data:
        raise ImageError(path, "empty file (0 bytes)")
    check_pixel_count(data, path, max_pixels)
    if data[:2] == b"\xff\xd8" and jpeg_is_truncated(data):
        raise ImageError(path, "truncated JPEG (the file ends before the image data does)")
    rgb, decoder = decode_with_opencv(data, path), "opencv"
    if rgb is None:
        rgb, decoder = decode_with_pillow(data, path), "pillow"
    return DecodedImage(check_size(np.ascontiguousarray(rgb), path), path_text(path), decoder)


def decode_with_opencv(data: bytes, path) -> np.ndarray | None:
    """RGB pixels as ``cv2.imread`` gives them, or None when OpenCV cannot read this file.

    TIFFs with float or 12-bit samples are refused by OpenCV's colour
    decoding (and so by the authors' script); they are read at their own depth
    and brought to 8 bits by OpenCV's rules instead.
    """
    buffer = np.frombuffer(default_png_image(data), dtype=np.uint8)
    try:
        bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
        if bgr is None and data[:4] in (b"II*\x00", b"MM\x00*"):
            deep = cv2.imdecode(buffer, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
            return None if deep is None else to_rgb8(deep, path, bgr=True)
    except cv2.error as exc:
        raise ImageError(path, f"OpenCV could not decode it ({exc.err or exc})") from None
    except MemoryError:
        raise ImageError(path, "out of memory while decoding") from None
    except ImageError:
        raise
    except Exception as exc:  # a bad file is a row with a reason, never a traceback
        raise ImageError(path, f"OpenCV could not decode it ({type(exc).__name__}: {exc})") from None
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def default_png_image(data: bytes) -> bytes:
    """An animated PNG without its animation chunks, so that it decodes to its default image.

    ``cv2.imread`` on an APNG file returns the default image (the IDAT one),
    but ``cv2.imdecode`` on the same bytes returns the first animation frame,
    which differs when the default image is not part of the animation.
    Without ``acTL``/``fcTL``/``fdAT`` chunks both decode the default image.
    """
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or b"acTL" not in data:
        return data
    kept, pos = [data[:8]], 8
    while pos + 12 <= len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        end = pos + 12 + length
        if end > len(data):
            kept.append(data[pos:])  # cut short: let the decoder report it
            break
        if data[pos + 4 : pos + 8] not in (b"acTL", b"fcTL", b"fdAT"):
            kept.append(data[pos:end])
        pos = end
    return b"".join(kept)


def to_rgb8(pixels: np.ndarray, path, bgr: bool) -> np.ndarray:
    """Three 8-bit channels by OpenCV's rules: high byte of 16-bit samples, floats times 255, alpha dropped."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    channels = pixels.shape[2]
    if channels not in (1, 3, 4):
        raise ImageError(path, f"unsupported image layout ({channels} channels)")
    eight = samples_to_uint8(pixels, path, bits=16)
    if channels == 1:
        return np.repeat(eight, 3, axis=2)
    return eight[..., 2::-1] if bgr else eight[..., :3]


def samples_to_uint8(pixels: np.ndarray, path, bits: int) -> np.ndarray:
    """``bits``-bit samples (in uint16) keep their top 8 bits; floats in [0, 1] map to 0..255, rounded, clipped."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.uint16:
        return (pixels >> max(bits - 8, 0)).astype(np.uint8)
    if pixels.dtype.kind == "f":
        scaled = np.nan_to_num(pixels.astype(np.float32) * 255, nan=0.0)
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)  # as OpenCV's saturate_cast
    raise ImageError(path, f"unsupported sample type ({pixels.dtype}; only 8 and 16-bit integers and floats are read)")


def decode_with_pillow(data: bytes, path) -> np.ndarray:
    """Second chance for files this OpenCV build cannot read, converted by the same rules."""
    kind = format_name(data)
    try:
        with open_unchecked(data) as img:  # the size was checked against our own limit already
            kind = img.format or kind
            return pillow_pixels(img, path)
    except ImageError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageError(path, "not an image (neither OpenCV nor Pillow recognises the format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(path, f"too large for Pillow to decode safely ({exc})") from None
    except MemoryError:
        raise ImageError(path, "out of memory while decoding") from None
    except Exception as exc:  # struct.error, IndexError, EOFError...: a bad file, never a traceback
        raise ImageError(path, pillow_failure(exc, kind)) from None


def pillow_failure(exc: Exception, kind: str | None) -> str:
    """Name the cause: a variant the decoder recognises but does not support, or a damaged file."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, NotImplementedError) or re.search(r"unsupported|not supported", text, re.IGNORECASE):
        return f"unsupported {kind or 'image'} variant: {text}"
    if not isinstance(exc, OSError | ValueError | SyntaxError):
        text = f"{type(exc).__name__}: {text}"
    return f"corrupt or truncated {kind or 'image'} file ({text})"


def pillow_pixels(img: Image.Image, path) -> np.ndarray:
    """RGB uint8 from a Pillow image, oriented by its EXIF tag as OpenCV does."""
    img.load()
    img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I;16"):
        return to_rgb8(samples_to_uint8(np.asarray(img), path, bits=sample_bits(img)), path, bgr=False)
    if img.mode == "F":
        return to_rgb8(samples_to_uint8(np.asarray(img), path, bits=32), path, bgr=False)
    if img.mode == "I":
        raise ImageError(
            path, "unsupported sample type (32-bit integers; only 8 and 16-bit integers and floats are read)"
        )
    return np.asarray(img.convert("RGB"))


def sample_bits(img: Image.Image) -> int:
    """Declared bits per sample of a 16-bit container (a 12-bit TIFF arrives as 16-bit values up to 4095)."""
    bits = getattr(img, "tag_v2", {}).get(258, (16,))  # TIFF BitsPerSample
    bits = bits[0] if isinstance(bits, tuple) else bits
    return bits if isinstance(bits, int) and 8 < bits <= 16 else 16


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


# -- sizes and shapes ----------------------------------------------------------------------------


def decoded_from_array(array: np.ndarray, name: str = "<array>") -> DecodedImage:
    """Accept an RGB uint8 array as OpenCV decoding would have left it (gray -> 3 channels, alpha dropped)."""
    if array.dtype != np.uint8:
        raise ImageError(name, f"expected a uint8 array, got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ImageError(name, f"expected an (H, W, 3) RGB array, got shape {array.shape}")
    return DecodedImage(check_size(np.ascontiguousarray(array[..., :3]), name), name, "array")


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
    """Refuse oversized pictures from their header, before decoding allocates anything.

    A picture whose size cannot be read is refused too: decoding it to find
    out is exactly what could run the machine out of memory.
    """
    width, height = header_size(data, path)
    if width * height > max_pixels:
        raise ImageError(
            path,
            f"too large: {width}x{height} = {width * height / 1e6:.0f} megapixels exceeds the limit of "
            f"{max_pixels / 1e6:.0f} (raise it with --max-pixels)",
        )


def header_size(data: bytes, path) -> tuple[int, int]:
    """(width, height) from the header: Pillow's reading, else our own for formats Pillow lacks."""
    problem = None
    try:
        return pillow_header_size(data)
    except Image.UnidentifiedImageError:
        pass  # not a format Pillow knows: the parsers below may
    except Exception as exc:  # Pillow knows the format but not this file
        problem = exc
    for parse in (png_size, bmp_size, radiance_size, openexr_size, netpbm_float_size):
        size = parse(data)
        if size is not None:
            return size
    kind = format_name(data)
    if problem is not None:
        raise ImageError(path, pillow_failure(problem, kind))
    if kind is not None:
        raise ImageError(path, f"corrupt or truncated {kind} header (its size cannot be read)")
    raise ImageError(path, "not an image, or its size cannot be read from the header (refused to protect memory)")


def format_name(data: bytes) -> str | None:
    """The format named by the file's leading bytes, for messages about files no decoder could open."""
    return next((name for magic, name in MAGIC if data.startswith(magic)), None)


def pillow_header_size(data: bytes) -> tuple[int, int]:
    with open_unchecked(data) as header:
        return header.size


def open_unchecked(data: bytes) -> Image.Image:
    """``Image.open`` without its decompression-bomb check, which reads the process-wide ``MAX_IMAGE_PIXELS``.

    We check every picture's size against our own per-call limit
    (:func:`check_pixel_count`), so Pillow's global limit is neither needed nor
    changed: lifting it to read a large header would change it for every thread
    of the caller's process. The loop is Pillow's own (``Image.open``), minus
    the check; a plugin that checks again while opening (GIF, ICO) still may.
    """
    Image.init()
    prefix = data[:16]
    for kind in Image.ID:
        factory, accept = Image.OPEN[kind]
        matches = accept(prefix) if accept else True
        if not matches or isinstance(matches, str):  # a str is Pillow's "looks like X but unsupported" note
            continue
        try:
            return factory(io.BytesIO(data), "")
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue  # not this format after all, as Image.open treats it
    raise Image.UnidentifiedImageError("cannot identify image file")


def radiance_size(data: bytes) -> tuple[int, int] | None:
    """Radiance .hdr: text lines, a blank line, then a resolution line such as ``-Y 480 +X 640``."""
    if not data.startswith((b"#?RADIANCE", b"#?RGBE")):
        return None
    blank = data.find(b"\n\n", 0, 64 * 1024)
    if blank < 0:
        return None
    line = data[blank + 2 : blank + 2 + 64].split(b"\n", 1)[0]
    match = re.fullmatch(rb"\s*[-+]([XY]) (\d+) [-+]([XY]) (\d+)\s*", line)
    if match is None or match[1] == match[3]:
        return None
    sizes = {match[1]: int(match[2]), match[3]: int(match[4])}
    return sizes[b"X"], sizes[b"Y"]


def openexr_size(data: bytes) -> tuple[int, int] | None:
    """OpenEXR: the ``dataWindow`` attribute (box2i) of the first header."""
    if not data.startswith(b"\x76\x2f\x31\x01"):
        return None
    pos = 8
    for _ in range(1000):
        name_end = data.find(b"\0", pos, pos + 256)
        if name_end <= pos:
            return None  # end of header (an empty name) or malformed
        type_end = data.find(b"\0", name_end + 1, name_end + 257)
        if type_end < 0 or type_end + 5 > len(data):
            return None
        size = struct.unpack("<i", data[type_end + 1 : type_end + 5])[0]
        value = data[type_end + 5 : type_end + 5 + size]
        if data[pos:name_end] == b"dataWindow" and len(value) == 16:
            x_min, y_min, x_max, y_max = struct.unpack("<4i", value)
            return x_max - x_min + 1, y_max - y_min + 1
        pos = type_end + 5 + max(size, 0)
    return None


def netpbm_float_size(data: bytes) -> tuple[int, int] | None:
    """PFM (``PF`` width height scale) and PAM (``P7``, WIDTH/HEIGHT lines): OpenCV reads them, Pillow does not."""
    head = re.sub(rb"#[^\n]*", b"", data[:4096])
    if head.startswith((b"PF", b"Pf")):
        match = re.match(rb"P[Ff]\s+(\d+)\s+(\d+)\s", head)
        return (int(match[1]), int(match[2])) if match else None
    if head.startswith(b"P7"):
        width, height = re.search(rb"\sWIDTH\s+(\d+)", head), re.search(rb"\sHEIGHT\s+(\d+)", head)
        return (int(width[1]), int(height[1])) if width and height else None
    return None


def png_size(data: bytes) -> tuple[int, int] | None:
    """PNG: the IHDR chunk, first by rule (Pillow refuses, say, a bad CRC in a later chunk, which OpenCV reads)."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR" or len(data) < 24:
        return None
    return struct.unpack(">II", data[16:24])


def bmp_size(data: bytes) -> tuple[int, int] | None:
    """BMP: width and height from the info header (Pillow refuses some variants OpenCV reads)."""
    if not data.startswith(b"BM") or len(data) < 26:
        return None
    if struct.unpack("<I", data[14:18])[0] == 12:  # OS/2 core header: 16-bit sides
        width, height = struct.unpack("<HH", data[18:22])
    else:
        width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)  # a negative height means rows stored top-down


def is_image_path(path: str | os.PathLike) -> bool:
    """Whether a file name has one of the image extensions ``dgiqa`` looks for in folders."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS
