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


# Small configurations of the same networks (``build_model`` keyword arguments), as timm's tests use a tiny ViT:
# every code path of the real architectures at a hundredth of the cost, for tests of plumbing rather than numbers.
# The golden and fidelity tests keep the authors' sizes.
SMALL_CONFIGS: dict[str, dict] = {
    "dgiqa": {
        "swin": {"embed_dim": 24, "depths": [1, 1, 1, 1], "num_heads": [1, 2, 4, 8]},
        "bridge_channels": [16, 16, 32, 32],
        "attention_heads": 4,
        "head_channels": 32,
    },
    "depth-anything-vits": {
        "embed_dim": 48,
        "depth": 4,
        "num_heads": 2,
        "features": 16,
        "out_channels": [8, 16, 32, 48],
        "intermediate_blocks": [0, 1, 2, 3],
    },
    "life-iqa": {
        "embed_dim": 48,
        "depth": 1,
        "backbone_config": {"embed_dim": 32, "depths": [1, 1, 1, 1], "num_heads": [1, 2, 4, 8]},
    },
}


def small_state(arch: str, seed: int) -> dict[str, torch.Tensor]:
    """Seeded stand-in weights (the recipe above) for the small configuration of ``arch``."""
    from dgiqa_cli.models import build_model

    return seeded_state(manifest_of(build_model(arch, **SMALL_CONFIGS[arch]).state_dict()), seed)
