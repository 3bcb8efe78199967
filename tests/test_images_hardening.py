"""Odd files never hang, crash or lose a row: each is decoded by OpenCV's rules or refused in one clear line."""

from __future__ import annotations

import errno
import io
import os
import struct
import subprocess
import sys
import threading
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from dgiqa_cli.io.images import (
    ImageError,
    decode_image,
    display_path,
    load_image,
    os_error_reason,
    pillow_pixels,
    read_image,
)

RNG = np.random.default_rng(7)


def random_rgb(h=48, w=64) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def encoded(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def imread_rgb(path) -> np.ndarray:
    """What the authors' script sees."""
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def reason_of(call, *args, **kwargs) -> str:
    with pytest.raises(ImageError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.isprintable(), message
    return info.value.reason


def finishes(call, seconds=10.0):
    """Run ``call`` in a thread; fail (instead of hanging the suite) if it blocks."""
    outcome = {}

    def target():
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "blocked"
    return outcome


# -- 1. only regular files, never more than their size ------------------------------------------


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    outcome = finishes(lambda: read_image(fifo))
    assert isinstance(outcome.get("error"), ImageError)
    assert outcome["error"].reason == "is a FIFO (named pipe), not a regular file"


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_link_to_a_device_is_refused_without_reading(tmp_path, device):
    link = tmp_path / "endless.png"
    link.symlink_to(device)
    outcome = finishes(lambda: read_image(link))
    assert isinstance(outcome.get("error"), ImageError)
    assert outcome["error"].reason == "is a character device, not a regular file"


def test_broken_link_and_huge_file_are_named(tmp_path):
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere.png")
    assert "broken symbolic link" in reason_of(read_image, tmp_path / "gone.png")
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as file:
        file.truncate(3 * 1024**3)  # sparse: nothing is written, and nothing must be read
    assert reason_of(read_image, huge).startswith("file too large (3.0 GiB")


def test_os_errors_are_named_by_errno():
    assert os_error_reason(OSError(errno.EROFS, os.strerror(errno.EROFS))) == (
        f"cannot be read (EROFS: {os.strerror(errno.EROFS)})"
    )
    assert os_error_reason(PermissionError(errno.EACCES, "Permission denied")) == "permission denied"
    assert os_error_reason(OSError(errno.EIO, os.strerror(errno.EIO))).startswith("cannot be read (EIO:")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file_is_permission_denied(tmp_path):
    locked = tmp_path / "locked.png"
    locked.write_bytes(encoded(Image.fromarray(random_rgb()), "PNG"))
    locked.chmod(0)
    assert reason_of(read_image, locked) == "permission denied"


# -- 2. every format is size-checked before decoding --------------------------------------------


def test_radiance_hdr_is_size_checked_before_decoding(tmp_path):
    path = tmp_path / "big.hdr"
    cv2.imwrite(str(path), np.zeros((2000, 2000, 3), np.float32))
    assert reason_of(read_image, path, max_pixels=1_000_000).startswith("too large: 2000x2000 = 4 megapixels")
    small = tmp_path / "small.hdr"
    cv2.imwrite(str(small), RNG.random((40, 60, 3), dtype=np.float32) * 1.5)
    assert np.array_equal(read_image(small).rgb, imread_rgb(small))


def openexr_header(width: int, height: int) -> bytes:
    """An OpenEXR header with its dataWindow; no pixels follow."""

    def attribute(name: bytes, kind: bytes, value: bytes) -> bytes:
        return name + b"\0" + kind + b"\0" + struct.pack("<i", len(value)) + value

    window = struct.pack("<4i", 0, 0, width - 1, height - 1)
    return (
        b"\x76\x2f\x31\x01"
        + struct.pack("<I", 2)
        + attribute(b"compression", b"compression", b"\0")
        + attribute(b"dataWindow", b"box2i", window)
        + attribute(b"displayWindow", b"box2i", window)
        + b"\0"
    )


def test_openexr_and_pfm_sizes_are_read_from_their_headers(tmp_path):
    assert reason_of(decode_image, openexr_header(30_000, 20_000), "x.exr").startswith("too large: 30000x20000")
    pfm = tmp_path / "x.pfm"
    cv2.imwrite(str(pfm), RNG.random((40, 60, 3), dtype=np.float32))
    assert reason_of(read_image, pfm, max_pixels=1000).startswith("too large: 60x40")
    assert np.array_equal(read_image(pfm).rgb, imread_rgb(pfm))


def test_unknown_size_is_refused_not_decoded():
    assert "size cannot be read" in reason_of(decode_image, b"\x00\x01\x02 not a known header" * 10, "x.dat")
    assert "corrupt or truncated PNG header" in reason_of(decode_image, b"\x89PNG\r\n\x1a\n\0\0", "x.png")


# -- 3. every decoder failure is one line, never a traceback ------------------------------------


def odd_files() -> list[tuple[str, bytes]]:
    """Valid ICO, ICNS, DDS, TGA, GIF and TIFF files, cut short and with bytes flipped."""
    img = Image.fromarray(random_rgb(32, 32))
    files = {
        "ico": encoded(img, "ICO", sizes=[(32, 32)]),
        "icns": encoded(img, "ICNS"),
        "dds": encoded(img, "DDS"),
        "tga": encoded(img, "TGA"),
        "gif": encoded(img, "GIF"),
        "tif": encoded(img, "TIFF"),
    }
    cases = []
    for ext, data in files.items():
        for cut in (12, 40, 100, len(data) // 2):
            cases.append((f"cut{cut}.{ext}", data[:cut]))
        for where in range(4, 64, 5):
            flipped = bytearray(data)
            flipped[where] ^= 0xA5
            cases.append((f"flip{where}.{ext}", bytes(flipped)))
    return cases


def test_odd_files_decode_or_fail_in_one_line():
    for name, data in odd_files():
        try:
            decoded = decode_image(data, name)
        except ImageError as exc:
            assert "\n" not in str(exc) and exc.reason, name
        else:
            assert decoded.rgb.dtype == np.uint8 and decoded.rgb.shape[2] == 3, name


def test_dds_with_an_unknown_pixel_format_is_unsupported_not_corrupt():
    header = struct.pack("<4s7I", b"DDS ", 124, 0x1007, 32, 32, 0, 0, 0) + b"\0" * 44
    pixel_format = struct.pack("<II4s5I", 32, 4, b"XYZW", 0, 0, 0, 0, 0)
    data = header + pixel_format + b"\0" * 20 + b"\0" * 4096
    assert reason_of(decode_image, data, "odd.dds").startswith("unsupported DDS variant")


# -- 4. animated PNG: the default image, as cv2.imread gives -------------------------------------


def test_animated_png_gives_the_frame_imread_gives(tmp_path):
    default, first, second = (Image.new("RGB", (40, 30), colour) for colour in ("green", "blue", "red"))
    path = tmp_path / "anim.png"
    default.save(path, save_all=True, append_images=[first, second], default_image=True)
    decoded = read_image(path).rgb
    assert np.array_equal(decoded, imread_rgb(path))
    assert tuple(decoded[0, 0]) == (0, 128, 0)
    plain = tmp_path / "plain.png"
    first.save(plain, save_all=True, append_images=[second])  # first frame is the default image
    assert np.array_equal(read_image(plain).rgb, imread_rgb(plain))


# -- 5. deep and float samples, by OpenCV's rules ------------------------------------------------


def test_16_bit_tiff_keeps_the_high_byte(tmp_path):
    deep = RNG.integers(0, 65536, (30, 40), dtype=np.uint16)
    path = tmp_path / "deep.tif"
    Image.fromarray(deep).save(path)
    decoded = read_image(path)
    assert decoded.decoder == "opencv"
    assert np.array_equal(decoded.rgb, imread_rgb(path))
    assert np.array_equal(decoded.rgb[..., 1], (deep >> 8).astype(np.uint8))


def expected_from_float(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(samples * 255), 0, 255).astype(np.uint8)


def test_float_tiff_is_scaled_not_black(tmp_path):
    samples = RNG.random((30, 40), dtype=np.float32) * 1.4 - 0.2
    path = tmp_path / "float.tif"
    Image.fromarray(samples).save(path)
    decoded = read_image(path)
    assert decoded.decoder == "opencv"
    assert np.array_equal(decoded.rgb, np.repeat(expected_from_float(samples)[..., None], 3, axis=2))


def packed_12_bit_tiff(samples: np.ndarray, orientation: int | None = None) -> bytes:
    """A grayscale TIFF with 12-bit samples packed two into three bytes (neither Pillow nor OpenCV writes one)."""
    height, width = samples.shape
    pixels = bytearray()
    for a, b in samples.reshape(-1, 2).tolist():
        pixels += bytes([a >> 4, ((a & 15) << 4) | (b >> 8), b & 255])
    tags = {256: width, 257: height, 258: 12, 259: 1, 262: 1, 273: 0, 277: 1, 278: height, 279: len(pixels)}
    if orientation:
        tags[274] = orientation
    tags[273] = 8 + 2 + 12 * len(tags) + 4
    entries = b"".join(struct.pack("<HHII", tag, 4, 1, value) for tag, value in sorted(tags.items()))
    return b"II*\x00" + struct.pack("<IH", 8, len(tags)) + entries + b"\0\0\0\0" + bytes(pixels)


def test_12_bit_tiff_keeps_its_top_8_bits_and_orientation():
    samples = RNG.integers(0, 4096, (30, 40)).astype(np.uint16)
    decoded = decode_image(packed_12_bit_tiff(samples), "twelve.tif")
    assert np.array_equal(decoded.rgb[..., 0], (samples >> 4).astype(np.uint8))
    assert decode_image(packed_12_bit_tiff(samples, orientation=6), "turned.tif").rgb.shape == (40, 30, 3)


def test_pillow_fallback_follows_the_same_rules():
    deep = RNG.integers(0, 65536, (30, 40), dtype=np.uint16)
    assert np.array_equal(pillow_pixels(Image.fromarray(deep), "x")[..., 2], (deep >> 8).astype(np.uint8))
    samples = RNG.random((30, 40), dtype=np.float32) * 1.4 - 0.2
    assert np.array_equal(pillow_pixels(Image.fromarray(samples), "x")[..., 0], expected_from_float(samples))
    exif = Image.Exif()
    exif[0x0112] = 6
    turned = Image.open(io.BytesIO(encoded(Image.fromarray(random_rgb(40, 80)), "WEBP", exif=exif.tobytes())))
    assert pillow_pixels(turned, "x").shape == (80, 40, 3)


def test_decoder_is_reported():
    assert decode_image(encoded(Image.fromarray(random_rgb()), "PNG")).decoder == "opencv"
    assert decode_image(encoded(Image.fromarray(random_rgb(32, 32)), "ICO", sizes=[(32, 32)])).decoder == "pillow"


# -- 6. the real cause in the words ---------------------------------------------------------------


def bmp(bits: int, compression: int, pixels: bytes, side: int = 16) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, side, side, 1, bits, compression, len(pixels), 2835, 2835, 0, 0)
    offset = 14 + len(info)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + pixels


@pytest.mark.parametrize(
    ("data", "cause"),
    [
        (bmp(64, 0, bytes(16 * 16 * 8)), "unsupported BMP variant: Unsupported BMP pixel depth (64)"),
        (bmp(24, 4, bytes(100)), "unsupported BMP variant: Unsupported BMP compression (4)"),
        (bmp(24, 5, bytes(100)), "unsupported BMP variant: Unsupported BMP compression (5)"),
    ],
)
def test_valid_but_unsupported_bmp_is_not_called_corrupt(data, cause):
    assert reason_of(decode_image, data, "odd.bmp") == cause


# -- 7. no decoder chatter on stderr --------------------------------------------------------------


def png_with_bad_ancillary_crc() -> bytes:
    png = encoded(Image.fromarray(random_rgb()), "PNG")
    body = b"Comment\x00hello"
    bad_chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body) ^ 1)
    return png[:33] + bad_chunk + png[33:]


def corrupt_jpeg() -> bytes:
    jpeg = bytearray(encoded(Image.fromarray(random_rgb(64, 64)), "JPEG"))
    scan = jpeg.find(b"\xff\xda")
    jpeg[scan + 40 : scan + 60] = b"\xff\xd0" * 10
    return bytes(jpeg)


def test_the_program_hears_no_decoder_chatter_and_keeps_python_stderr(tmp_path):
    """The library leaves fd 2 alone (tests/test_side_effects.py); the program (``dgiqa``'s main) silences
    libpng/libjpeg/libtiff for its whole process, and its own Python messages still arrive."""
    png = bytearray(encoded(Image.fromarray(random_rgb()), "PNG"))
    png[png.find(b"IDAT") + 8] ^= 0xFF
    tiff = encoded(Image.fromarray(random_rgb()), "TIFF")
    files = {
        "crc.png": png_with_bad_ancillary_crc(),  # libpng warns and decodes
        "bad.jpg": corrupt_jpeg(),  # libjpeg warns and decodes
        "idat.png": bytes(png),  # libpng error
        "cut.tif": tiff[: len(tiff) // 2],  # libtiff error through OpenCV's log
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    script = f"""
import sys
sys.path.insert(0, {os.getcwd()!r})
from dgiqa_cli.io.images import ImageError, read_image
from dgiqa_cli.io.native_stderr import silence_native_stderr
silence_native_stderr()
for name in {sorted(files)!r}:
    try:
        read_image({str(tmp_path)!r} + "/" + name)
    except ImageError:
        pass
print("python message", file=sys.stderr)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "python message\n"


# -- 8, 9. the public call, any path, printable names --------------------------------------------


def test_load_image_accepts_str_bytes_and_pathlike(tmp_path):
    rgb = random_rgb()
    raw_dir = os.fsencode(tmp_path)
    with open(raw_dir + b"/caf\xe9.png", "wb") as file:  # a Latin-1 name, not UTF-8
        file.write(encoded(Image.fromarray(rgb), "PNG"))
    name = os.fsdecode(raw_dir + b"/caf\xe9.png")
    for path in (name, os.fsencode(name), tmp_path / os.fsdecode(b"caf\xe9.png")):
        assert np.array_equal(load_image(path), rgb)
    assert load_image(name).dtype == np.uint8


def test_odd_names_are_printable_in_messages(tmp_path):
    raw = os.fsencode(tmp_path) + b"/caf\xe9\x1b[31m\nred.jpg"
    with open(raw, "wb") as file:
        file.write(b"not pixels at all" * 10)
    with pytest.raises(ImageError) as info:
        load_image(raw)
    assert info.value.path == os.fsdecode(raw)
    message = str(info.value)
    assert message.isprintable() and "\n" not in message
    assert "caf\\xe9\\x1b[31m\\nred.jpg" in message
    assert display_path(b"caf\xe9.jpg") == "caf\\xe9.jpg"
    assert display_path("日本.jpg") == "日本.jpg"
