"""Small pictures for the report, made by our own decoder so that orientation and colour are what was scored.

Thumbnails are WebP (a quarter of a JPEG's size at the same look), the long side :data:`SIZE` pixels. A picture
that cannot be read any more (moved, deleted, damaged since the run) gets no thumbnail but a note saying why:
the report shows a placeholder, and is never refused for it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from dgiqa_cli.io.images import MAX_PIXELS, ImageError, read_image

SIZE = 256
QUALITY = 75


def encode_webp(image: Image.Image, quality: int = QUALITY) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", quality=quality)
    return buffer.getvalue()


def thumbnail(path: str, size: int = SIZE, max_pixels: int = MAX_PIXELS) -> bytes:
    """The WebP thumbnail of the picture at ``path``, or :class:`~dgiqa_cli.io.images.ImageError` saying why not."""
    image = Image.fromarray(read_image(path, max_pixels).rgb)
    image.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return encode_webp(image)


def make_thumbnails(
    paths: Iterable[str],
    size: int = SIZE,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, bytes | str]:
    """Thumbnails of the distinct ``paths``, decoded on ``workers`` threads (the decoders release the GIL, as in
    the batch engine): path -> WebP bytes, or path -> the reason there is none. ``on_progress(done, total)``."""
    distinct = list(dict.fromkeys(paths))
    workers = workers or min(16, os.cpu_count() or 1)

    def one(path: str) -> bytes | str:
        try:
            return thumbnail(path, size)
        except ImageError as exc:
            return exc.reason
        except Exception as exc:  # a decoder bug costs one thumbnail, never the report
            return f"could not be read ({type(exc).__name__}: {exc})"

    made: dict[str, bytes | str] = {}
    with ThreadPoolExecutor(workers, thread_name_prefix="dgiqa-thumbnail") as pool:
        for done, (path, result) in enumerate(zip(distinct, pool.map(one, distinct), strict=True), 1):
            made[path] = result
            if on_progress is not None:
                on_progress(done, len(distinct))
    return made
