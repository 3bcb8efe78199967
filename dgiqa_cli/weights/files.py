"""Reading weight files safely, and checking that they are what they claim to be.

Weights are data: ``.pth`` files are opened with ``torch.load(weights_only=True)``
(safetensors preferred) and nothing in them is executed; a known checksum is
verified before loading; every tensor must fit the architecture exactly.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dgiqa_cli.errors import WeightsError
from dgiqa_cli.weights.digests import file_sha256
from dgiqa_cli.weights.registry import RegistryEntry

if TYPE_CHECKING:  # imported where tensors are read: checking a file's checksum needs no PyTorch
    import torch
    from torch import nn


@dataclass(frozen=True)
class ResolvedWeights:
    """A local weights file and what we know about it."""

    path: Path
    label: str  # how the user named it, for messages and output
    entry: RegistryEntry | None = None
    sha256: str | None = None  # expected checksum, when known


def verify_sha256(path: str | os.PathLike, expected: str, remedy: str = "") -> None:
    """Raise WeightsError naming the file and both hashes unless ``path`` hashes to ``expected``.

    The hash comes from the file's record when the file has not changed since it was hashed (``digests``)."""
    actual = file_sha256(path)
    if actual != expected.lower():
        raise WeightsError(
            f"{path}: checksum mismatch (sha256 {actual}, expected {expected}); the file is truncated, "
            "altered or not the release it claims to be. " + (remedy or "Delete it and download it again.")
        )


def checksum_remedy(weights: ResolvedWeights) -> str:
    """What to do about weights that fail their checksum, by where they came from."""
    entry = weights.entry
    if entry is None:
        return ""
    if entry.origin == "local":
        return (
            f"Import the checkpoint again: `dgiqa weights import {entry.source_file or 'FILE'} "
            f"--name {entry.name} --force`."
        )
    if entry.origin == "config" and entry.path:
        return "Replace the folder with a good copy (e.g. from the Hub repository it came from)."
    return f"Download it again: `dgiqa weights download {weights.label} --force`."


def read_state_dict(path: str | os.PathLike, mmap: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, without executing anything in it.

    ``mmap``: map a ``.pth`` file's tensors rather than read them (for a look at names and shapes); a file in
    the legacy format, which cannot be mapped, is read."""
    import torch

    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"{path}: refused to load; the file holds Python objects other than tensors, and weights are "
            f"never unpickled as code{_what_was_refused(exc)}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, TypeError) as exc:
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {exc}") from None
    return unwrap_state_dict(obj, path)


def _what_was_refused(exc: Exception) -> str:
    """The object torch refused to unpickle, without torch's advice to load it with weights_only=False."""
    found = re.search(r"Unsupported (?:global|operand)[^.;\n]*", str(exc))
    return f" ({found.group(0).strip()})" if found else ""


def unwrap_state_dict(obj, path) -> dict[str, torch.Tensor]:
    """Accept a bare state dict or the usual training wrappers ({'state_dict': ...}, 'module.' prefixes)."""
    import torch

    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: does not hold a state dict (a mapping of names to tensors)")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return obj


def load_into(model: nn.Module, arch: str, weights: ResolvedWeights, state_dict=None) -> nn.Module:
    """Load checked weights into ``model``; any missing, unexpected or misshapen tensor is an error.

    ``state_dict``: the file's tensors when the caller has read them already.
    """
    from dgiqa_cli.models import checkpoint_filter

    if weights.sha256:
        verify_sha256(weights.path, weights.sha256, checksum_remedy(weights))
    if state_dict is None:
        state_dict = read_state_dict(weights.path)
    state_dict = checkpoint_filter(arch)(state_dict)
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    misshapen = [
        f"{k} {tuple(state_dict[k].shape)} (model: {tuple(own[k].shape)})"
        for k in own
        if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    if missing or unexpected or misshapen:
        problems = []
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen)):
            if keys:
                problems.append(f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})")
        raise WeightsError(f"{weights.label}: these weights do not fit the {arch} architecture: " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=True)
    return model


def load_checked(arch: str, config: dict, weights: ResolvedWeights, state_dict=None) -> nn.Module:
    """A model of ``arch`` with ``weights`` loaded strictly (sha256 checked when expected)."""
    from dgiqa_cli.models import build_model

    try:
        model = build_model(arch, **config)
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"{weights.label}: cannot build {arch} with {config} ({exc})") from None
    return load_into(model, arch, weights, state_dict)
