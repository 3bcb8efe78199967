"""The network training starts from (``--init``), its depth stage, and which of its modules train (``--freeze``)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from dgiqa_cli.errors import UsageError
from dgiqa_cli.inference.model import load_depth_stage, load_scoring_weights
from dgiqa_cli.models import build_model, spec_for
from dgiqa_cli.weights import LoadedNetwork, WeightsError, load_network

IMAGENET = "imagenet"


@dataclass
class Initial:
    """Where training starts: the network, what it is, and (DGIQA) the frozen depth network."""

    network: nn.Module
    arch: str
    label: str  # how --init named it
    sha256: str | None  # of the weights file (None for ImageNet backbones)
    model_config: dict
    input_size: tuple[int, int] | None  # Life-IQA's fixed frame; None: DGIQA's short side 384
    card: object | None  # RegistryEntry of the initial weights
    depth: LoadedNetwork | None
    depth_model: str | None


def load_initial(
    init: str,
    *,
    model: str | None = None,
    depth_model: str | None = None,
    depth_weights: str | None = None,
    backbone_weights: str | None = None,
) -> Initial:
    """``init``: a registry name, a file, a Hub-format folder, ``hf://...``, or ``imagenet`` (timm's ImageNet
    backbones, downloaded from the Hub unless ``backbone_weights`` names a local file of them)."""
    if init == IMAGENET:
        spec = spec_for(model or "dgiqa")
        network = build_model(spec.family)
        load_imagenet_backbones(network, spec.family, backbone_weights)
        initial = Initial(network, spec.family, IMAGENET, None, {}, spec.input_size, None, None, None)
        trained_with = None
    else:
        if backbone_weights is not None:
            raise UsageError("backbone weights are for an ImageNet start (init 'imagenet')")
        # Its own copy, loaded afresh (weights.load_network itself): training changes the network, which a
        # scorer's loader may share.
        loaded = load_scoring_weights(init, model, load=load_network)
        spec = spec_for(loaded.arch)
        config = loaded.card.config
        initial = Initial(
            loaded.network,
            loaded.arch,
            loaded.label,
            loaded.sha256,
            dict(config.get("model", {})),
            spec.frame_size(config),
            loaded.card,
            None,
            None,
        )
        trained_with = loaded.card.depth_model
    initial.depth_model, initial.depth = load_depth_stage(
        spec, trained_with, depth_model, depth_weights, load=load_network
    )
    return initial


def load_imagenet_backbones(network: nn.Module, arch: str, backbone_weights: str | None) -> None:
    """Put timm's ImageNet weights into the model's Swin backbone(s)."""
    import timm

    spec = spec_for(arch)
    name, modules = spec.imagenet_backbone, spec.imagenet_modules
    overlay = {"file": str(backbone_weights)} if backbone_weights else None
    features_only = arch == "dgiqa"
    try:
        source = timm.create_model(
            name, pretrained=True, features_only=features_only, pretrained_cfg_overlay=overlay
        ).state_dict()
    except Exception as exc:  # a download or a file that does not fit: one line, and what to do
        raise WeightsError(
            f"cannot load ImageNet weights for {name} ({type(exc).__name__}: {exc}); they are downloaded from "
            "the Hugging Face Hub, or give a local file of them (backbone weights)"
        ) from None
    for module_name in modules:
        missing, unexpected = getattr(network, module_name).load_state_dict(source, strict=False)
        missing = [k for k in missing if not k.endswith(("relative_position_index", "attn_mask"))]
        if missing:
            raise WeightsError(f"ImageNet weights for {name} lack {module_name} tensors: {missing[0]} …")


def freeze(network: nn.Module, arch: str, spec: str) -> list[str]:
    """Freeze what ``spec`` names: ``none``, ``backbones``, or a comma list of module names (``backbone,tcb1``).

    Frozen modules keep no gradients and stay in eval mode while the rest trains. Returns the frozen names.
    """
    spec = spec.strip()
    if spec in ("", "none"):
        return []
    names = list(spec_for(arch).backbones) if spec == "backbones" else [n.strip() for n in spec.split(",") if n.strip()]
    known = dict(network.named_modules())
    unknown = [n for n in names if n not in known or n == ""]
    if unknown:
        tops = ", ".join(n for n, _ in network.named_children())
        raise UsageError(
            f"cannot freeze {unknown[0]!r}: no module of that name in {arch}; its modules: {tops} (or backbones, none)"
        )
    for n in names:
        known[n].requires_grad_(False)
    if all(not p.requires_grad for p in network.parameters()):
        raise UsageError("freezing all of these leaves nothing to train")
    return names


def set_train_mode(network: nn.Module, frozen: list[str], update_bn_stats: bool = False) -> None:
    """Train mode for what trains; eval mode (no dropout, fixed BatchNorm statistics) for frozen modules.

    BatchNorm layers keep their running statistics unless ``update_bn_stats``: fine-tuning batches (a few
    crops) are far too small to estimate them, and train-mode statistics of two crops make the trained network
    another function than the one scoring runs. Their scale and shift still train.
    """
    network.train()
    modules = dict(network.named_modules())
    for n in frozen:
        modules[n].eval()
    if not update_bn_stats:
        for module in network.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
