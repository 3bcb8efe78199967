"""The library is a guest in its caller's process: decoding leaves fd 2, Pillow's limit and huggingface_hub's
constants exactly as the caller set them (issue 19, point 4)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import struct
import sys
import threading
import types
import zlib

import pytest
from hub_server import HubServer
from PIL import Image, TiffImagePlugin

from dgiqa_cli.io.images import ImageError, decode_image, load_image
from dgiqa_cli.weights.download import HubLocation, download

ROWS = 200


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def odd_files(folder) -> list:
    """Files that make libpng, libjpeg or libtiff speak: a PNG with a bad CRC, a truncated and a damaged JPEG,
    a TIFF with an unknown tag."""
    picture = Image.radial_gradient("L").convert("RGB").resize((64, 48))
    png = encoded(picture, "PNG")
    body = b"Comment\x00hello"
    bad_crc = png[:33] + chunk(b"tEXt", body)[:-4] + struct.pack(">I", zlib.crc32(b"tEXt" + body) ^ 1) + png[33:]
    jpeg = bytearray(encoded(picture, "JPEG"))
    scan = jpeg.find(b"\xff\xda")
    damaged = bytes(jpeg[: scan + 40] + b"\xff\xd0" * 10 + jpeg[scan + 60 :])
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[65000] = "unknown"
    tags.tagtype[65000] = 2
    files = {
        "crc.png": bad_crc,
        "cut.jpg": bytes(jpeg[: len(jpeg) // 2]),
        "damaged.jpg": damaged,
        "tags.tif": encoded(picture, "TIFF", tiffinfo=tags),
    }
    paths = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return paths


def decode_quietly(path) -> None:
    with contextlib.suppress(ImageError):  # a refused file is an answer too: what matters is what reaches fd 2
        load_image(path)


def test_a_callers_writes_to_fd_2_all_arrive_while_threads_decode(tmp_path, capfd, scorer):
    """Two threads decode odd files in a loop (load_image) and one scores them (Scorer.score_many) while the main
    thread writes numbered lines to fd 2 itself: every line arrives (a decoder that sent fd 2 to /dev/null while
    it ran lost most of them)."""
    paths = odd_files(tmp_path)
    writing_done, decoded_once = threading.Event(), threading.Barrier(3)

    def decode_until_done():
        for path in paths:
            decode_quietly(path)
        decoded_once.wait(timeout=120)
        while not writing_done.is_set():
            for path in paths:
                decode_quietly(path)

    results = []
    decoders = [threading.Thread(target=decode_until_done) for _ in range(2)]
    scoring = threading.Thread(target=lambda: results.extend(scorer.score_many(paths[:2])))
    for thread in (*decoders, scoring):
        thread.start()
    decoded_once.wait(timeout=120)  # both decoders are past their first round and keep decoding
    written = 0
    while written < ROWS or scoring.is_alive():
        os.write(2, f"caller line {written}\n".encode())
        written += 1
        if written >= ROWS:
            scoring.join(timeout=0.01)  # keep writing while the scorer decodes, without flooding the file
    writing_done.set()
    for thread in decoders:
        thread.join(timeout=120)
    # each os.write is one whole line, though a decoder's own message may be cut in two around it
    arrived = re.findall(r"caller line (\d+)\n", capfd.readouterr().err)
    assert sorted(map(int, arrived)) == list(range(written))
    assert [r.error is None for r in results] == [True, False]  # the scorer did its work meanwhile


def fake_png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size; the pixel data is never reached."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


class WatchedModule(types.ModuleType):
    """PIL.Image with every assignment to its attributes recorded, whichever thread makes it."""

    writes: list = []

    def __setattr__(self, name, value):
        WatchedModule.writes.append((name, value, threading.current_thread().name))
        super().__setattr__(name, value)


def test_pillows_pixel_limit_never_changes_while_oversized_headers_are_read(monkeypatch):
    """A header beyond Pillow's own limit (which Pillow refuses to even open) is measured without lifting
    ``PIL.Image.MAX_IMAGE_PIXELS``; the refusal is our one-line reason, at our limit, as before."""
    limit = Image.MAX_IMAGE_PIXELS
    WatchedModule.writes.clear()
    monkeypatch.setattr(Image, "__class__", WatchedModule)
    seen, stop = set(), threading.Event()

    def watch():
        while not stop.is_set():
            seen.add(Image.MAX_IMAGE_PIXELS)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        reasons = set()
        for _ in range(50):
            with pytest.raises(ImageError) as refused:
                decode_image(fake_png_header(30_000, 30_000), "huge.png")
            reasons.add(refused.value.reason)
        with pytest.raises(ImageError) as within_ours:  # beyond Pillow's limit, within a raised one of ours
            decode_image(fake_png_header(15_000, 15_000), "big.png", max_pixels=300_000_000)
    finally:
        stop.set()
        watcher.join()
    assert WatchedModule.writes == [] and seen == {limit}
    assert Image.MAX_IMAGE_PIXELS == limit  # noqa: SIM300
    assert reasons == {"too large: 30000x30000 = 900 megapixels exceeds the limit of 200 (raise it with --max-pixels)"}
    assert not within_ours.value.reason.startswith("too large")  # measured and allowed; the pixels are bad


def test_huggingface_hub_constants_are_never_rewritten(tmp_path, monkeypatch, weights_dir):
    """A download, a cache hit and an offline lookup leave every huggingface_hub constant as it was."""
    from huggingface_hub import constants

    def snapshot() -> dict:
        return {k: v for k, v in vars(constants).items() if k.isupper()}

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    before = snapshot()
    location = HubLocation("someone/weights", "model.pth")
    with HubServer(tmp_path / "hub") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        hub.commit(location.repo, {location.filename: weights_dir / "depth_anything_vits14.pth"})
        first = download(location)
        assert snapshot() == before
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        requests = len(hub.requests)
        assert download(location) == first  # offline: the cache answers, not one request
        assert len(hub.requests) == requests
        with pytest.raises(Exception, match="offline mode is on"):
            download(HubLocation("someone/other", "model.pth"))
    assert snapshot() == before
    assert constants.HF_HUB_OFFLINE is before["HF_HUB_OFFLINE"]
    assert sys.modules["huggingface_hub.constants"] is constants
