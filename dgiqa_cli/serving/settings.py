"""What a scoring service is allowed to do: batch sizes, waits, queue, upload size, key, grace.

One object (:class:`ServeSettings`) travels from the command line, or from the
environment (``serve run dgiqa_cli.serving:app``), to the app and the batcher.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

#: Scorer options read from the environment by :func:`scorer_options_from_env` (``serve run``, Ray replicas).
SCORER_ENV = {
    "model": "DGIQA_MODEL",
    "weights": "DGIQA_WEIGHTS",
    "depth_model": "DGIQA_DEPTH_MODEL",
    "depth_weights": "DGIQA_DEPTH_WEIGHTS",
    "crops": "DGIQA_CROPS",
    "crop_mode": "DGIQA_CROP_MODE",
    "seed": "DGIQA_SEED",
    "device": "DGIQA_DEVICE",
    "precision": "DGIQA_PRECISION",
    "backend": "DGIQA_BACKEND",
    "max_pixels": "DGIQA_MAX_PIXELS",
}
_INTEGER_OPTIONS = ("crops", "seed", "max_pixels")


@dataclass(frozen=True)
class ServeSettings:
    """Limits and batching of one server (or one Ray Serve replica)."""

    max_batch: int | None = None  # pictures scored together; None: the batch engine's default for the device
    max_wait_ms: float = 5.0  # how long the first picture of a batch waits for others
    max_queue: int = 64  # pictures received and not yet answered; beyond: 503 with Retry-After
    timeout: float = 60.0  # seconds one request may take before it is answered 504
    max_upload_mb: float = 50.0  # a request body larger than this is refused (413) while it is read
    api_key: str | None = None  # `Authorization: Bearer KEY` on /v1/* and /metrics; None: open
    workers: int | None = None  # decoding threads; None: the batch engine's default for the device
    grace: float = 30.0  # seconds SIGTERM waits for requests already received

    def __post_init__(self):
        if self.max_batch is not None and self.max_batch < 1:
            raise ValueError("--max-batch must be at least 1")
        if self.max_wait_ms < 0 or self.max_queue < 1 or self.timeout <= 0 or self.max_upload_mb <= 0:
            raise ValueError("--max-wait-ms must be >= 0, --max-queue >= 1, --timeout and --max-upload-mb > 0")
        if self.workers is not None and self.workers < 1:
            raise ValueError("--workers must be at least 1")
        if self.api_key == "":
            raise ValueError("the API key is empty")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @classmethod
    def from_env(cls, environ=os.environ) -> ServeSettings:
        """``DGIQA_SERVE_MAX_BATCH``, ``DGIQA_SERVE_TIMEOUT``, ... (one per field) and ``DGIQA_API_KEY``."""
        values = {}
        for f in fields(cls):
            name = "DGIQA_API_KEY" if f.name == "api_key" else f"DGIQA_SERVE_{f.name.upper()}"
            if environ.get(name):
                raw = environ[name]
                values[f.name] = raw if f.name == "api_key" else (int(raw) if f.name in _INT_FIELDS else float(raw))
        return cls(**values)


_INT_FIELDS = ("max_batch", "max_queue", "workers")


def scorer_options_from_env(environ=os.environ) -> dict:
    """``Scorer`` keyword arguments from ``DGIQA_WEIGHTS``, ``DGIQA_CROPS``, ... (unset ones keep their defaults)."""
    options = {}
    for option, name in SCORER_ENV.items():
        if environ.get(name):
            options[option] = int(environ[name]) if option in _INTEGER_OPTIONS else environ[name]
    return options
