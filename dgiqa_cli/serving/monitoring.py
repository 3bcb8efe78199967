"""Prometheus metrics of one server: requests, pictures, failures by reason, queue depth, batches, latency,
and the process's own (resident memory, CPU time).

Each app has its own registry, so that several apps in one process (tests, Ray replicas) never mix counts.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServerMetrics:
    def __init__(self, queue_depth: Callable[[], float]):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "dgiqa_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.pictures = Counter(
            "dgiqa_pictures", "Pictures answered, by outcome (scored or failed)", ["outcome"], registry=self.registry
        )
        self.failures = Counter(
            "dgiqa_failures", "Pictures and requests refused, by reason", ["reason"], registry=self.registry
        )
        self.latency = Histogram(
            "dgiqa_request_seconds", "Time from a request's arrival to its answer", ["route"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.batch_size = Histogram(
            "dgiqa_batch_size", "Pictures per scored batch", buckets=BATCH_BUCKETS, registry=self.registry
        )
        self.queue_depth = Gauge("dgiqa_queue_depth", "Pictures received and not yet answered", registry=self.registry)
        self.queue_depth.set_function(queue_depth)
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, CPU seconds, open files

    def picture(self, error: str | None) -> None:
        self.pictures.labels("failed" if error else "scored").inc()
        if error:
            self.failure(error)

    def failure(self, reason: str) -> None:
        """Count a failure under its kind: the reason without its details, e.g. ``too small to score``."""
        self.failures.labels(reason.split(" (")[0].split(":")[0][:60]).inc()

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
