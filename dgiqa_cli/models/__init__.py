"""The networks, as bare ``nn.Module``s whose state dicts match the authors' checkpoints.

``build_model(name)`` is the one way in (like ``timm.create_model``):

- ``'dgiqa'``: ``forward(rgb, depth) -> (N,)``, crops of 224 x 224, scores in [0, 1];
- ``'depth-anything-vits'`` / ``-vitb`` / ``-vitl``: ``forward(x) -> (N, H, W)`` relative inverse depth;
- ``'life-iqa'``: ``forward(x) -> (N,)``, crops of 224 x 224, unbounded MOS regression.

Weights are not loaded here (see :func:`dgiqa_cli.weights.load_network`); each architecture's
``checkpoint_filter`` adapts foreign checkpoints, as timm's filter functions do. What a family *is*
(framing, depth, attention, score range) is in :mod:`.spec`; the scoring pipeline that puts
networks, weights and pre-processing together is :func:`dgiqa_cli.create_model`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from dgiqa_cli.models.spec import FAMILIES, SPECS, ModelSpec, spec_for

if TYPE_CHECKING:  # torch is imported by the builders, so that the specs load without it
    import torch
    from torch import nn

__all__ = ["ARCHITECTURES", "DEPTH_ENCODERS", "FAMILIES", "SPECS", "ModelSpec", "build_model", "spec_for"]

DEPTH_ENCODERS = ("vits", "vitb", "vitl")
ARCHITECTURES = ("dgiqa", *(f"depth-anything-{e}" for e in DEPTH_ENCODERS), "life-iqa")

# Buffers that timm versions before 0.9 saved in Swin state dicts and that newer
# timm recomputes (non-persistent): present in older checkpoints, harmless to drop.
_STALE_SWIN_BUFFERS = ("relative_position_index", "attn_mask")


def build_model(name: str, **config) -> nn.Module:
    """A freshly initialised model of architecture ``name`` in eval mode (no weights downloaded)."""
    if name == "dgiqa":
        from dgiqa_cli.models.dgiqa import DGIQA

        model = DGIQA(**config)
    elif name.startswith("depth-anything-") and name.removeprefix("depth-anything-") in DEPTH_ENCODERS:
        from dgiqa_cli.models.depth_anything import DepthAnything

        model = DepthAnything(name.removeprefix("depth-anything-"), **config)
    elif name == "life-iqa":
        from dgiqa_cli.models.life_iqa import LifeIQA

        model = LifeIQA(**config)
    else:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    return model.eval()


def drop_stale_swin_buffers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoint filter for Swin-based models: drop buffers older timm versions saved."""
    return {k: v for k, v in state_dict.items() if not k.endswith(_STALE_SWIN_BUFFERS)}


def checkpoint_filter(arch: str) -> Callable[[dict], dict]:
    """The function that adapts a checkpoint of ``arch`` before ``load_state_dict``.

    Life-IQA holds every backbone tensor under two names; a checkpoint saved
    with one copy only (safetensors refuses shared tensors, so ``dgiqa weights
    import`` keeps ``pretrain_model.*``) gets the twins back here.
    """
    if arch == "life-iqa":

        def life_iqa_filter(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            from dgiqa_cli.models.life_iqa import fill_twin_keys

            return fill_twin_keys(drop_stale_swin_buffers(state_dict))

        return life_iqa_filter
    if arch == "dgiqa":
        return drop_stale_swin_buffers
    return dict


def detect_architecture(state_dict: dict[str, torch.Tensor]) -> str:
    """Tell which of our architectures a state dict belongs to, from its key names and shapes."""
    keys = state_dict.keys()
    if "depth_guided_cross_attention.multihead_attn.in_proj_weight" in keys:
        return "dgiqa"
    if "bunch_embedding" in keys:
        return "life-iqa"
    embed = state_dict.get("pretrained.cls_token")
    if embed is not None and any(k.startswith("depth_head.") for k in keys):
        encoder = {384: "vits", 768: "vitb", 1024: "vitl"}.get(embed.shape[-1])
        if encoder:
            return f"depth-anything-{encoder}"
    raise ValueError("the weights match none of: " + ", ".join(ARCHITECTURES))
