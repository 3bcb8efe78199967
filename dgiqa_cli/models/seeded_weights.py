"""Deterministic stand-in weights, for tests and benchmarks.

Real checkpoints cannot be downloaded here, so fidelity is checked on weights
generated from a manifest (key, shape, dtype, in order) and a seed, by the
recipe of ``shared/fidelity/seeded_state.py``; the golden outputs of the
authors' code were computed on exactly these tensors.
"""

from __future__ import annotations

import math

import torch

_SMALL_INIT = ("relative_position_bias_table", "cls_token", "pos_embed", "mask_token", "bunch_embedding")


def seeded_state(manifest, seed: int) -> dict[str, torch.Tensor]:
    """Return a state dict for ``manifest`` (list of ``[key, shape, dtype]``) drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape, dtype in manifest:
        if dtype.startswith("int"):
            out[key] = torch.zeros(shape, dtype=getattr(torch, dtype))
            continue
        t = torch.randn(shape, generator=g, dtype=torch.float32)
        if key.endswith("running_var"):
            t = 1 + 0.1 * t.abs()
        elif key.endswith("running_mean"):
            t = 0.1 * t
        elif key.endswith(".gamma") or (len(shape) == 1 and key.endswith(".weight")):
            t = 1 + 0.1 * t
        elif key.endswith("bias") or len(shape) <= 1 or any(s in key for s in _SMALL_INIT):
            t = 0.02 * t
        else:
            t = t / math.sqrt(math.prod(shape[1:]))
        out[key] = t
    return out


def manifest_of(state_dict) -> list[list]:
    """The manifest (key, shape, dtype) of a state dict, in its order."""
    return [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in state_dict.items()]
