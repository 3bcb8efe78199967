"""What each model family is, in one table: the only place family facts live.

As pyiqa's metric table and timm's ``PretrainedCfg``: a :class:`ModelSpec` says how a family's
pictures are framed and cropped, whether it needs a depth map, which attention it can show, and
what its scores mean. Everything else (the scorer, explain, export, fine-tuning, the command line)
reads these facts from here. Importing this module does not import torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from dgiqa_cli.errors import UsageError

CROP = 224  # side of the square crops both families score


@dataclass(frozen=True)
class ModelSpec:
    """One model family's facts."""

    family: str  # the architecture name in weights cards and on the command line
    title: str  # as printed: "DGIQA", "Life-IQA"
    needs_depth: bool  # a Depth Anything map goes in beside the RGB crops
    # The frame crops are cut from: None = short side resized to 384 (DGIQA); (H, W) = resized exactly to it.
    input_size: tuple[int, int] | None
    score_range: tuple[float | None, float | None]  # when the weights' card does not say; (None, None) = unbounded
    lower_better: bool  # False for both families: a higher score is a better picture
    attention: Mapping[str, str] = field(default_factory=dict)  # attention kinds -> their titles
    # timm's ImageNet backbone that fine-tuning from scratch starts from, and the modules it goes into.
    imagenet_backbone: str = ""
    imagenet_modules: tuple[str, ...] = ()  # the modules that backbone's weights load into
    backbones: tuple[str, ...] = ()  # the Swin backbone modules (what ``freeze backbones`` freezes)
    crop: int = CROP

    def frame_size(self, config: dict) -> tuple[int, int] | None:
        """The fixed (H, W) frame a weights card's ``config`` records, else the family's (None: short side 384)."""
        return tuple(config.get("input_size", self.input_size or ())) or None

    def describe_scale(self, score_range=None, trained_on: str = "", lower_better: bool | None = None) -> str:
        """The score scale in words, printed beside every number (the card's range and direction, when given)."""
        low, high = score_range or self.score_range
        if low is None or high is None:
            return f"MOS{f' of {trained_on}' if trained_on else ''}, unbounded"
        lower = self.lower_better if lower_better is None else lower_better
        return f"{low:g} to {high:g}, {'lower' if lower else 'higher'} is better"


DGIQA = ModelSpec(
    family="dgiqa",
    title="DGIQA",
    needs_depth=True,
    input_size=None,
    score_range=(0.0, 1.0),
    lower_better=False,
    attention=MappingProxyType({"cross": "Depth-CAR cross-attention", "refine": "Refinement self-attention"}),
    imagenet_backbone="swin_tiny_patch4_window7_224.ms_in1k",
    imagenet_modules=("backbone", "depth_backbone"),
    backbones=("backbone", "depth_backbone"),
)

LIFE_IQA = ModelSpec(
    family="life-iqa",
    title="Life-IQA",
    needs_depth=False,
    input_size=(512, 384),  # (H, W) of the KonIQ configuration's test-time resize
    score_range=(None, None),  # MOS regression: the range is the training set's
    lower_better=False,
    attention=MappingProxyType({"cross": "Decoder cross-attention"}),
    imagenet_backbone="swin_base_patch4_window7_224.ms_in22k_ft_in1k",
    imagenet_modules=("pretrain_model",),
    # Life-IQA's stages are registered twice, as in the authors' code: both names are frozen.
    backbones=("pretrain_model", "backbone_stages"),
)

# Depth Anything's DINOv2 encoder (models/depth_anything.py); here so that the graphs OpenVINO runs can be
# described without importing timm.
PATCH_SIZE = 14
# The released position embedding covers a 37 x 37 grid (518 x 518 pixels).
POS_EMBED_GRID = 37
# DINOv2 adds this to the target grid before turning it into a scale factor,
# so that floor(37 * scale) lands on the intended size despite rounding.
POS_EMBED_INTERPOLATE_OFFSET = 0.1

SPECS: Mapping[str, ModelSpec] = MappingProxyType({spec.family: spec for spec in (DGIQA, LIFE_IQA)})
FAMILIES = tuple(SPECS)


def spec_for(family: str) -> ModelSpec:
    """The spec of ``family``; a :class:`UsageError` (a ``ValueError``) naming the families for anything else."""
    try:
        return SPECS[family]
    except KeyError:
        raise UsageError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}") from None
