"""Decoding: OpenCV-equivalent pixels for odd modes, and a clear one-line error for every bad input."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from dgiqa_cli.io.images import (
    MAX_ASPECT,
    ImageError,
    decode_image,
    decoded_from_array,
    jpeg_is_truncated,
    read_image,
)


def random_rgb(h=120, w=160, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_png_decodes_to_the_same_rgb():
    rgb = random_rgb()
    assert np.array_equal(decode_image(png_bytes(Image.fromarray(rgb))).rgb, rgb)


def test_alpha_is_dropped():
    rgba = np.dstack([random_rgb(), np.full((120, 160), 7, np.uint8)])
    assert np.array_equal(decode_image(png_bytes(Image.fromarray(rgba))).rgb, rgba[..., :3])


def test_grayscale_becomes_three_equal_channels():
    gray = random_rgb()[..., 0]
    rgb = decode_image(png_bytes(Image.fromarray(gray))).rgb
    assert rgb.shape == (120, 160, 3)
    assert all(np.array_equal(rgb[..., c], gray) for c in range(3))


def test_palette_is_expanded():
    img = Image.fromarray(random_rgb()).convert("P")
    assert np.array_equal(decode_image(png_bytes(img)).rgb, np.asarray(img.convert("RGB")))


def test_16_bit_is_scaled_to_8_bit_like_opencv(tmp_path):
    """OpenCV keeps the high byte of each 16-bit sample; so do we (it is OpenCV)."""
    deep = np.random.default_rng(1).integers(0, 65536, (50, 70, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep[..., ::-1])  # OpenCV writes BGR
    rgb = read_image(tmp_path / "deep.png").rgb
    assert rgb.dtype == np.uint8
    assert np.array_equal(rgb, (deep >> 8).astype(np.uint8))


def test_cmyk_jpeg_is_converted_to_rgb():
    rgb = np.zeros((64, 96, 3), np.uint8)
    rgb[:, :48] = (200, 30, 30)
    rgb[:, 48:] = (20, 160, 220)
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, "JPEG", quality=98)
    decoded = decode_image(buf.getvalue()).rgb
    assert decoded.shape == rgb.shape
    assert np.abs(decoded.astype(int) - rgb.astype(int)).mean() < 6


def test_exif_orientation_is_applied():
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(random_rgb(40, 80)).save(buf, "JPEG", exif=exif.tobytes())
    assert decode_image(buf.getvalue()).rgb.shape == (80, 40, 3)


def test_array_input_follows_the_same_rules():
    gray = random_rgb()[..., 0]
    assert decoded_from_array(gray).rgb.shape == (120, 160, 3)
    with pytest.raises(ImageError, match="uint8"):
        decoded_from_array(gray.astype(np.float32))


def fake_png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size; the pixel data is never reached."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file (0 bytes)"),
        (b"this is plain text, not pixels\n" * 20, "not an image"),
        (fake_png_header(30_000, 30_000), "too large: 30000x30000 = 900 megapixels exceeds the limit of 200"),
    ],
)
def test_bad_bytes_give_a_clear_reason(data, reason):
    with pytest.raises(ImageError) as info:
        decode_image(data, "bad.jpg")
    assert info.value.path == "bad.jpg"
    assert reason in info.value.reason
    assert "\n" not in str(info.value)


def test_truncated_files_are_errors_not_grey_pictures():
    buf = io.BytesIO()
    Image.fromarray(random_rgb(200, 300)).save(buf, "JPEG", quality=90)
    jpeg = buf.getvalue()
    for cut in (len(jpeg) // 2, len(jpeg) - 10):
        assert jpeg_is_truncated(jpeg[:cut])
        with pytest.raises(ImageError, match="truncated"):
            decode_image(jpeg[:cut], "cut.jpg")
    assert not jpeg_is_truncated(jpeg)
    assert not jpeg_is_truncated(jpeg + b"trailing data, as motion photos append")
    png = png_bytes(Image.fromarray(random_rgb(200, 300)))
    with pytest.raises(ImageError, match="corrupt or truncated|not an image"):
        decode_image(png[: len(png) // 2], "cut.png")


def test_jpeg_with_exif_thumbnail_is_not_mistaken_for_complete():
    """An EXIF thumbnail holds its own scan and end marker before the main image's scan."""
    thumb = io.BytesIO()
    Image.fromarray(random_rgb(16, 16)).save(thumb, "JPEG")
    app1 = b"Exif\x00\x00" + thumb.getvalue()
    main = io.BytesIO()
    Image.fromarray(random_rgb(200, 300)).save(main, "JPEG")
    body = main.getvalue()
    jpeg = body[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + body[2:]
    assert not jpeg_is_truncated(jpeg)
    assert jpeg_is_truncated(jpeg[: len(jpeg) - 400])


def test_pixel_limit_is_adjustable():
    data = png_bytes(Image.fromarray(random_rgb(100, 100)))
    with pytest.raises(ImageError, match="too large: 100x100"):
        decode_image(data, "x.png", max_pixels=5000)


def test_tiny_and_thin_pictures_are_refused_clearly():
    with pytest.raises(ImageError, match=r"too small to score \(4x300"):
        decoded_from_array(random_rgb(300, 4))
    with pytest.raises(
        ImageError, match=rf"too thin to score \(20000x30; the aspect ratio may be at most {MAX_ASPECT:g}:1\)"
    ):
        decoded_from_array(np.zeros((30, 20000, 3), np.uint8))


def test_file_problems_name_the_file(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="is a directory"):
        read_image(tmp_path)
