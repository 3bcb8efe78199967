"""Dynamic batching: requests wait in a bounded queue and are scored together.

A request's picture is decoded and prepared in worker threads (never on the
event loop) by the batch engine's own :meth:`~dgiqa_cli.inference.engine.BatchRunner.prepare`,
so a bad upload gets the very reason a batch row would. Prepared pictures go
to one scoring thread, which takes the first one, waits up to ``max_wait_ms``
for more, up to ``max_batch``, and scores them in one
:meth:`~dgiqa_cli.inference.scorer.Scorer.score_batch` (through the engine's
out-of-memory backoff). Each request's future is settled on the event loop.

At most ``max_queue`` pictures are admitted and unanswered at once; one more
raises :class:`QueueFull` (the app answers 503). When the server is stopping,
:meth:`Batcher.drain` stops waiting for batches to fill: what is queued is
scored at once.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from dgiqa_cli.inference.engine import BatchRunner, default_batch_size, default_workers
from dgiqa_cli.inference.scorer import PreparedImage, Scorer, ScoreResult
from dgiqa_cli.io import interrupts
from dgiqa_cli.io.sources import Item
from dgiqa_cli.serving.settings import ServeSettings

log = logging.getLogger("dgiqa")


class QueueFull(Exception):
    """More pictures are waiting than ``max_queue`` allows."""


@dataclass
class _Waiting:
    prepared: PreparedImage
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


_WAKE = object()  # put in the queue to cut a batch's wait short (drain)
_STOP = object()  # put in the queue to end the scoring thread


class Batcher:
    """Scores uploaded pictures with one loaded :class:`Scorer`, batching requests that arrive together.

    ``on_batch(size)`` is called after each scored batch (for the metrics). ``start()`` before use,
    ``close()`` after the last request.
    """

    def __init__(self, scorer: Scorer, settings: ServeSettings, on_batch: Callable[[int], None] | None = None):
        self.scorer = scorer
        self.max_batch = settings.max_batch or default_batch_size(scorer.device)
        self.max_wait = settings.max_wait_ms / 1000
        self.max_queue = settings.max_queue
        self.on_batch = on_batch
        # The engine's decode -> prepare (hardened decoder, failure rows) and its out-of-memory backoff.
        self.runner = BatchRunner(scorer, batch_size=self.max_batch, workers=0)
        self.prepare_pool = ThreadPoolExecutor(
            settings.workers or default_workers(scorer.device), thread_name_prefix="dgiqa-prepare"
        )
        self.explain_pool = ThreadPoolExecutor(1, thread_name_prefix="dgiqa-explain")
        self.device_lock = threading.Lock()  # explanations use the same networks as the scoring thread
        self.in_flight = 0  # admitted and not answered; only touched on the event loop
        self._ready: queue.Queue = queue.Queue()
        self._draining = False
        self._thread: threading.Thread | None = None

    # -- the event loop's side ---------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._score_loop, name="dgiqa-score", daemon=True)
            self._thread.start()

    def admit(self) -> None:
        """Count one more picture in, or refuse it when the queue is full."""
        if self.in_flight >= self.max_queue:
            raise QueueFull(f"{self.in_flight} pictures are waiting (--max-queue {self.max_queue})")
        self.in_flight += 1

    async def score(self, data: bytes, name: str) -> ScoreResult:
        """One picture's result (a failure row for a picture that cannot be decoded); may raise QueueFull."""
        self.admit()
        try:
            loop = asyncio.get_running_loop()
            prepared = await loop.run_in_executor(self.prepare_pool, self.runner.prepare, Item(name, data=data))
            if isinstance(prepared, ScoreResult):
                return prepared
            return await self.score_prepared(prepared)
        finally:
            self.in_flight -= 1

    async def score_prepared(self, prepared: PreparedImage) -> ScoreResult:
        """Queue a prepared picture for the scoring thread and wait for its batch."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._ready.put(_Waiting(prepared, future, loop))
        interrupts.reached("queued")
        return await future

    async def run_exclusive(self, work: Callable):
        """Run ``work()`` (an explanation) in its own thread, holding the networks; counts against the queue."""
        self.admit()
        try:
            return await asyncio.get_running_loop().run_in_executor(self.explain_pool, self._locked, work)
        finally:
            self.in_flight -= 1

    def _locked(self, work: Callable):
        with self.device_lock:
            return work()

    def drain(self) -> None:
        """The server is stopping: score what is queued now instead of waiting for batches to fill."""
        self._draining = True
        self._ready.put(_WAKE)

    def close(self) -> None:
        """End the scoring thread after what is queued, and the worker threads."""
        self._draining = True
        self._ready.put(_STOP)
        if self._thread is not None:
            self._thread.join()
        self.prepare_pool.shutdown(wait=True, cancel_futures=True)
        self.explain_pool.shutdown(wait=True, cancel_futures=True)

    # -- the scoring thread ------------------------------------------------------------------------

    def _score_loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._ready.get()
            if first is _STOP:
                return
            batch = [] if first is _WAKE else [first]
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch and not self._draining:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._ready.get(timeout=remaining)
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                if item is not _WAKE:
                    batch.append(item)
            while self._draining and len(batch) < self.max_batch:  # stopping: take what is there, no waiting
                try:
                    item = self._ready.get_nowait()
                except queue.Empty:
                    break
                stopping = stopping or item is _STOP
                if isinstance(item, _Waiting):
                    batch.append(item)
            self._score(batch)

    def _score(self, batch: list[_Waiting]) -> None:
        batch = [w for w in batch if not w.future.done()]  # a request that timed out is not scored
        if not batch:
            return
        results = self.score_now([w.prepared for w in batch])
        for waiting, result in zip(batch, results, strict=True):
            waiting.loop.call_soon_threadsafe(_settle, waiting.future, result)

    def score_now(self, batch: list[PreparedImage]) -> list[ScoreResult]:
        """Score a batch in this thread, holding the networks; one result per picture, whatever happens."""
        try:
            with self.device_lock:
                results = self.runner.score_with_backoff(batch)
        except Exception as exc:  # never leave a request without an answer
            log.exception("scoring a batch failed")
            results = [self.scorer.failure(p.path, f"scoring failed ({type(exc).__name__})") for p in batch]
        if self.on_batch is not None:
            self.on_batch(len(batch))
        return results


def _settle(future: asyncio.Future, result: ScoreResult) -> None:
    if not future.done():  # cancelled by the request's timeout meanwhile
        future.set_result(result)
