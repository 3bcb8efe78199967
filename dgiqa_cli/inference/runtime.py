"""Where and in what precision the networks run.

Choosing costs no PyTorch import where the answer is the CPU: torch takes 1-3 s to import, more than a
picture's scoring through OpenVINO, which never needs it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

import numpy as np

from dgiqa_cli.errors import UsageError

log = logging.getLogger("dgiqa")

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# What a GPU driver leaves on Linux: NVIDIA's control device, AMD's ROCm (kfd), WSL's GPU bridge.
GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")


class Device(str):
    """A device name (``cpu``, ``cuda``, ``cuda:1``, ``mps``) with ``torch.device``'s ``type`` and ``index``.

    PyTorch takes it wherever it takes a device; being a string, it needs no PyTorch to exist."""

    @property
    def type(self) -> str:
        return self.partition(":")[0]

    @property
    def index(self) -> int | None:
        number = self.partition(":")[2]
        return int(number) if number else None


def is_tensor(value) -> bool:
    """Whether ``value`` is a torch tensor, without importing torch (if it is not imported, nothing is one)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def host_array(value) -> np.ndarray:
    """A network's output as a NumPy array on the host: float tensors as float32, others (uint8 pictures) as
    they are; arrays as they are."""
    if is_tensor(value):
        value = value.detach().cpu()
        return (value.float() if value.is_floating_point() else value).numpy()
    return np.asarray(value)


def gpu_may_be_present() -> bool:
    """False only where PyTorch certainly sees no GPU: Linux without any GPU driver's device files. Elsewhere
    (and once torch is imported anyway) PyTorch is asked."""
    if "torch" in sys.modules or sys.platform != "linux":
        return True
    return any(os.path.exists(path) for path in GPU_DEVICE_FILES)


def pick_device(name: str = "auto") -> Device:
    """``auto``: CUDA if present, then Apple's MPS, else CPU. Asking for a missing one is an error."""
    if name not in DEVICES and not name.startswith("cuda:"):
        raise UsageError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)} (or cuda:N)")
    if name == "cpu" or (name == "auto" and not gpu_may_be_present()):
        return Device("cpu")
    import torch

    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if name == "auto":
        if torch.cuda.is_available():
            return Device("cuda")
        return Device("mps" if has_mps else "cpu")
    if name.startswith("cuda:") and not name.removeprefix("cuda:").isdigit():
        raise UsageError(f"device {name}: GPUs are named cuda:N, numbered from 0")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("device cuda was asked for, but PyTorch sees no CUDA GPU (is this a CPU build of torch?)")
    if name.startswith("cuda:") and int(name.removeprefix("cuda:")) >= torch.cuda.device_count():
        raise UsageError(f"device {name}: PyTorch sees {torch.cuda.device_count()} CUDA GPU(s), numbered from 0")
    if name == "mps" and not has_mps:
        raise UsageError("device mps was asked for, but Apple's Metal backend is not available here")
    return Device(name)


def cpu_computes_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX-512 BF16 or AMX). Elsewhere bf16 is emulated, and
    slower than fp32. On Linux the kernel's CPU flags say; elsewhere PyTorch's CPU checks."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
                flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
            return bool({"avx512_bf16", "amx_bf16"} & set(flags))
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


def pick_precision(name: str | None, device) -> str:
    """``auto`` (``None``: ``$DGIQA_PRECISION``, else auto): bf16 where the hardware computes it (GPUs that
    have it; CPUs with AVX-512 BF16 or AMX), fp16 on other GPUs, fp32 on other CPUs (where half is slower).
    ``fp32`` is the exact mode: the authors' arithmetic."""
    name = name or os.environ.get("DGIQA_PRECISION") or "auto"
    if name not in PRECISIONS:
        raise UsageError(f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}")
    if name == "fp16" and device.type == "cpu":
        log.warning("fp16 on the CPU is slower than fp32 (CPUs lack fast fp16 arithmetic); bf16 is the fast choice")
    if name != "auto":
        return name
    if device.type == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "mps":
        return "fp16"
    return "bf16" if cpu_computes_bf16() else "fp32"


def autocast(device, precision: str):
    """Mixed precision for ``precision`` (a no-op for fp32): matrix work in half, reductions in fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def inference_context(device, precision: str):
    """One forward pass's settings, restored afterwards: the caller's process keeps its own torch flags.

    CUDA: cuDNN picks its fastest kernels for our fixed shapes (``benchmark``), and fp32 keeps TF32 off
    for convolutions and matrix products, which would break its promise of the authors' numbers. Then
    mixed precision for ``precision`` (a no-op for fp32).
    """
    if device.type != "cuda":
        with autocast(device, precision):
            yield
        return
    import torch

    exact = precision == "fp32"
    matmul = torch.backends.cuda.matmul
    caller_tf32 = matmul.allow_tf32
    try:
        if exact:
            matmul.allow_tf32 = False
        with (
            torch.backends.cudnn.flags(
                enabled=True,
                benchmark=True,
                deterministic=torch.backends.cudnn.deterministic,
                allow_tf32=not exact and torch.backends.cudnn.allow_tf32,
            ),
            autocast(device, precision),
        ):
            yield
    finally:
        matmul.allow_tf32 = caller_tf32
