"""Where the networks run: PyTorch, or OpenVINO on the CPU (the fast path).

    network = accelerate(module, "dgiqa", precision="fp32", weights_sha256=sha)
    scores = network(rgb, depth)            # same call as the module, torch tensors in and out

``pick_backend("auto", device)`` chooses OpenVINO on a CPU that it supports
and PyTorch on CUDA / MPS. Whatever goes wrong on the way (OpenVINO missing or
broken, a CPU without the asked precision, a network that does not convert),
:func:`accelerate` logs one warning and hands back the PyTorch module, so a
run never fails for the sake of speed.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from dgiqa_cli.inference.backends.openvino_runtime import (
    BackendUnavailable,
    OpenVINONetwork,
    cached_network,
    default_cache_dir,
    openvino_network,
    openvino_problem,
    scoring_streams,
    supports_precision,
)
from dgiqa_cli.inference.runtime import Device

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "BACKENDS",
    "BackendUnavailable",
    "OpenVINONetwork",
    "accelerate",
    "default_cache_dir",
    "from_cache",
    "pick_backend",
    "scoring_streams",
    "supports_precision",
]

log = logging.getLogger("dgiqa")

BACKENDS = ("auto", "torch", "openvino")
_warned: set[str] = set()


def warn_once(message: str, *args) -> None:
    """One warning per distinct message in a process (a broken install would otherwise warn per network)."""
    text = message % args if args else message
    if text not in _warned:
        _warned.add(text)
        log.warning(text)


def pick_backend(name: str, device) -> str:
    """``torch`` or ``openvino``. ``auto``: OpenVINO on the CPU when it is installed and runs here, PyTorch on
    CUDA / MPS. ``openvino`` on a GPU device, or where OpenVINO cannot run, is ``torch`` with one warning."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    device = Device(str(device))
    if name == "torch":
        return "torch"
    if device.type != "cpu":
        if name == "openvino":
            warn_once("--backend openvino runs on the CPU only; the %s device keeps PyTorch", device.type)
        return "torch"
    problem = openvino_problem()
    if problem:
        warn_once("%s: running with PyTorch (slower on the CPU)", problem)
        return "torch"
    return "openvino"


def accelerate(
    module: nn.Module,
    arch: str,
    *,
    precision: str,
    weights_sha256: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    threads: int | None = None,
    fixed_batch: int | None = None,
    streams: int = 1,
):
    """``module`` compiled by OpenVINO for the CPU, callable like ``module``; ``module`` itself on failure.

    ``arch``: ``dgiqa``, ``life-iqa`` or ``depth-anything-vits/vitb/vitl``. ``precision``: ``fp32``
    (scores within 1e-4 of PyTorch fp32) or ``bf16`` (fast; CPUs with native bf16 only).
    ``weights_sha256``: the digest of the weights file, the cache key (default: a digest of the
    module's state dict, slower). ``cache_dir``: default :func:`default_cache_dir`. ``threads``:
    OpenVINO's inference threads (default: every core). ``fixed_batch``: the batch most calls have (a picture's
    crops, per stream), compiled for that shape; ``streams``: parts a call's batch runs in at once
    (:class:`OpenVINONetwork`)."""
    try:
        return openvino_network(
            module,
            arch,
            precision=precision,
            weights_sha256=weights_sha256,
            cache_dir=cache_dir,
            threads=threads,
            fixed_batch=fixed_batch,
            streams=streams,
        )
    except BackendUnavailable as exc:  # the same words as pick_backend's, so a broken install warns once
        warn_once("%s: running with PyTorch (slower on the CPU)", exc)
        return module
    except Exception as exc:  # noqa: BLE001 - any failure here means "keep PyTorch", by design
        log.debug("OpenVINO could not take %s", arch, exc_info=True)
        warn_once("OpenVINO could not run %s (%s: %s): running it with PyTorch", arch, type(exc).__name__, exc)
        return module


def from_cache(
    arch: str,
    weights_sha256: str,
    load_module,
    *,
    precision: str,
    cache_dir=None,
    threads=None,
    fixed_batch=None,
    streams: int = 1,
):
    """The network compiled from OpenVINO's cache entry for these weights, without building the PyTorch module
    (``load_module`` makes it if a caller asks for attention maps); None when the cache has no entry (or a
    damaged). Raises :class:`BackendUnavailable` where OpenVINO cannot run it (:func:`accelerate` says why)."""
    try:
        return cached_network(
            arch,
            weights_sha256,
            load_module,
            precision=precision,
            cache_dir=cache_dir,
            threads=threads,
            fixed_batch=fixed_batch,
            streams=streams,
        )
    except BackendUnavailable:
        raise
    except Exception:  # noqa: BLE001 - any failure here means "convert again", by design
        log.debug("no usable cached OpenVINO network for %s", arch, exc_info=True)
        return None
