"""The batch pipeline: many images through the device at once, CPU work overlapped, memory bounded.

Worker threads read, decode and prepare images (OpenCV and NumPy release the
GIL) a bounded number ahead of the device; the main thread takes them in
input order, a batch at a time, through ``Scorer.score_batch`` (depth maps
batched by shape, every crop of the batch through DGIQA together). Results
leave in input order, one row each, written and flushed as soon as their
batch is done. On CUDA out-of-memory the batch size halves and the run goes on.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from dgiqa_cli.inference.scorer import PreparedImage, Scorer, ScoreResult
from dgiqa_cli.io.images import DecodedImage, ImageError, decode_image, read_image
from dgiqa_cli.io.sources import Item, read_url

log = logging.getLogger("dgiqa")


def default_batch_size(device) -> int:
    """Images per device batch: enough crops to fill a GPU. On the CPU one image (its crops are one
    batch already): bigger batches only make the activations fall out of the caches."""
    return 32 if device.type != "cpu" else 1


def default_workers(device) -> int:
    """Preparation threads: many to feed a GPU; one on the CPU, where the networks need every core
    and one thread decoding ahead is all the overlap there is to gain."""
    return min(16, os.cpu_count() or 1) if device.type != "cpu" else 1


@dataclass
class RunStats:
    """What a run did, for the closing summary."""

    scored: int = 0
    failed: int = 0
    skipped: int = 0
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None

    @property
    def seconds(self) -> float:
        return (self.finished or time.perf_counter()) - self.started

    @property
    def images_per_second(self) -> float:
        return (self.scored + self.failed) / max(self.seconds, 1e-9)


class BatchRunner:
    """Scores a stream of inputs with a loaded :class:`Scorer`, calling ``on_result`` for each, in order.

    An input is a path, or an :class:`~dgiqa_cli.io.sources.Item` (a tar member's or a Parquet cell's bytes, a
    remote file's URL, or an error), decoded by the same hardened decoder a file goes through, so that a
    picture scores the same wherever it comes from.
    """

    def __init__(
        self,
        scorer: Scorer,
        batch_size: int = 8,
        workers: int = 4,
        prefetch: int | None = None,
        transform: Callable[[DecodedImage], DecodedImage] | None = None,
    ):
        if batch_size < 1 or workers < 0:
            raise ValueError("--batch-size must be at least 1 and --workers at least 0")
        self.scorer = scorer
        self.transform = transform  # applied to each decoded picture, in the workers (e.g. SPAQ's usual resize)
        self.batch_size = batch_size
        self.workers = workers
        # Enough prepared images in flight to keep the device fed, few enough to bound memory.
        self.prefetch = prefetch or max(2 * batch_size, 4 * workers)

    def prepare(self, item: str | Item) -> PreparedImage | ScoreResult:
        """Worker-side: a prepared image, or the failure row that replaces it."""
        path = item.name if isinstance(item, Item) else item
        try:
            image = self.decode(item)
            if self.transform is not None:
                image = self.transform(image)
            return self.scorer.prepare(image, keep_rgb=False)
        except ImageError as exc:
            return self.scorer.failure(path, exc.reason)
        except Exception as exc:  # a decoder bug must not end a run of 100 000 images
            return self.scorer.failure(path, f"could not be prepared ({type(exc).__name__}: {exc})")

    def decode(self, item: str | Item):
        if not isinstance(item, Item):
            return read_image(item, self.scorer.max_pixels)
        if item.error is not None:
            raise ImageError(item.name, item.error)
        if item.data is None and item.url is None:
            return read_image(item.name, self.scorer.max_pixels)
        if item.data is None:
            try:
                data = read_url(item.url)
            except OSError as exc:
                raise ImageError(item.name, f"cannot be read ({type(exc).__name__}: {exc})") from None
            return decode_image(data, item.name, self.scorer.max_pixels)
        return decode_image(item.data, item.name, self.scorer.max_pixels)

    def prepared_stream(self, paths: Iterable[str | Item]) -> Iterator[PreparedImage | ScoreResult]:
        """Prepared images (or their failure rows) in input order: from the worker threads, at most
        ``prefetch`` ahead; in this thread, one at a time, with ``workers=0``."""
        if self.workers == 0:
            yield from map(self.prepare, paths)
            return
        in_flight: deque[Future] = deque()
        with ThreadPoolExecutor(self.workers, thread_name_prefix="dgiqa-prepare") as pool:
            try:
                for path in paths:
                    in_flight.append(pool.submit(self.prepare, path))
                    if len(in_flight) >= self.prefetch:
                        yield in_flight.popleft().result()
                while in_flight:
                    yield in_flight.popleft().result()
            finally:
                for future in in_flight:
                    future.cancel()

    def run(self, paths: Iterable[str | Item], on_result: Callable[[ScoreResult], None]) -> RunStats:
        stats = RunStats()
        pending: list[PreparedImage | ScoreResult] = []
        stream = self.prepared_stream(paths)
        try:
            for item in stream:
                pending.append(item)
                if sum(isinstance(p, PreparedImage) for p in pending) >= self.batch_size:
                    self._flush(pending, on_result, stats)
            self._flush(pending, on_result, stats)
        finally:
            stream.close()  # on an interrupt: cancel what is queued, let the workers finish what they hold
        stats.finished = time.perf_counter()
        return stats

    def _flush(self, pending: list, on_result, stats: RunStats) -> None:
        """Score the prepared images of ``pending`` and hand out every row, in input order."""
        prepared = [p for p in pending if isinstance(p, PreparedImage)]
        scored = iter(self.score_with_backoff(prepared))
        for item in pending:
            result = next(scored) if isinstance(item, PreparedImage) else item
            if result.ok:
                stats.scored += 1
            else:
                stats.failed += 1
            on_result(result)
        pending.clear()

    def score_with_backoff(self, batch: list[PreparedImage]) -> list[ScoreResult]:
        """``score_batch``, halving the batch on CUDA out-of-memory until one image alone fails."""
        if not batch:
            return []
        try:
            return self.scorer.score_batch(batch)
        except Exception as exc:
            if not out_of_gpu_memory(exc):
                return self.one_by_one(batch, exc)
            if len(batch) == 1:
                return [self.scorer.failure(batch[0].path, "out of GPU memory even alone (try --max-pixels)")]
            half = len(batch) // 2
            if half < self.batch_size:
                log.warning("out of GPU memory: batch size %d -> %d", self.batch_size, max(1, half))
                self.batch_size = max(1, half)
            return self.score_with_backoff(batch[:half]) + self.score_with_backoff(batch[half:])

    def one_by_one(self, batch: list[PreparedImage], exc: Exception) -> list[ScoreResult]:
        """After a failed batch: each picture alone, so that only the one that broke it gets a failure row."""
        if len(batch) > 1:
            return [result for item in batch for result in self.score_with_backoff([item])]
        log.debug("scoring %s failed", batch[0].path, exc_info=(type(exc), exc, exc.__traceback__))
        return [self.scorer.failure(batch[0].path, f"scoring failed ({type(exc).__name__}: {exc})")]


def out_of_gpu_memory(exc: Exception) -> bool:
    """Whether ``exc`` is PyTorch's CUDA out-of-memory (its cache emptied, then); never true where torch is not
    imported, as on the OpenVINO path."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(exc, torch.cuda.OutOfMemoryError):
        return False
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return True
