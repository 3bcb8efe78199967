"""What differs between the model families when explaining a score: one :class:`Family` each.

A family has its :class:`~dgiqa_cli.models.spec.ModelSpec` (which attention kinds, whether a depth map),
how its explanation panel is headed, and its one pass over the scoring crops that returns the crop
scores *and* the attention weights together (so an explanation's score is ``Scorer.score``'s).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dgiqa_cli.errors import UsageError
from dgiqa_cli.inference import preprocess as pp
from dgiqa_cli.inference.runtime import host_array
from dgiqa_cli.models.spec import DGIQA, LIFE_IQA, ModelSpec

ATTENTION_KINDS = ("cross", "refine")


@dataclass
class CropPass:
    """One pass of a model over a picture's scoring crops, and how to score more windows of the same frame."""

    scores: np.ndarray  # (N,) float32: the crop scores, as Scorer.score averages them
    attention: dict[str, np.ndarray]  # kind -> (N, queries, 49) head-averaged weights, from the same pass
    score_windows: Callable[[list[tuple[int, int]]], np.ndarray]  # 224 windows (x, y) of the frame -> (K,) scores
    depth: np.ndarray | None = None  # (h, w) float32, Depth Anything's relative inverse depth (DGIQA)
    depth_frame: np.ndarray | None = None  # (H', W') uint8, the depth picture DGIQA sees


def dgiqa_pass(model, prepared, depth=None) -> CropPass:
    """DGIQA: depth map (unless given), then RGB and depth crops together; Depth-CAR attention."""
    if depth is None:
        depth = model.depth_map(prepared.depth_input)
    depth_frame = model.depth_frame(prepared, depth)
    frame, positions = prepared.frame, prepared.positions
    scores, weights = model.score_crops(prepared.rgb_crops, pp.cut_crops(depth_frame, positions), return_attention=True)

    def score_windows(windows):
        return model.score_crops(pp.cut_crops(frame, windows), pp.cut_crops(depth_frame, windows))

    return CropPass(
        scores=scores,
        attention=weights,
        score_windows=score_windows,
        depth=host_array(depth),
        depth_frame=depth_frame,
    )


def life_iqa_pass(model, prepared, depth=None) -> CropPass:
    """Life-IQA: RGB crops alone; its query decoder's last cross-attention over the 7 x 7 stage-3 grid."""
    if depth is not None:
        raise ValueError("Life-IQA has no depth stage: it takes no depth map")
    frame = prepared.frame
    scores, weights = model.score_rgb_crops(prepared.rgb_crops, return_attention=True)

    def score_windows(windows):
        return model.score_rgb_crops(pp.cut_crops(frame, windows))

    return CropPass(scores=scores, attention={"cross": weights}, score_windows=score_windows)


@dataclass(frozen=True)
class Family:
    """How an explanation of one model family is shown and made; the family's facts are its :class:`ModelSpec`."""

    spec: ModelSpec  # the attention kinds it has, whether it has a depth map
    heading: str  # the panel's score, formatted with score and scale
    setup: str  # the panel's setup line, formatted with model, depth_model and crops
    run: Callable[..., CropPass]  # (model, prepared, depth) -> CropPass

    @property
    def name(self) -> str:
        return self.spec.title

    @property
    def attention(self) -> Mapping[str, str]:
        return self.spec.attention

    @property
    def has_depth(self) -> bool:
        return self.spec.needs_depth


FAMILIES = {
    "dgiqa": Family(
        DGIQA, heading="DGIQA score {score:.4f}", setup="{model}, depth {depth_model}, {crops} crops", run=dgiqa_pass
    ),
    "life-iqa": Family(
        LIFE_IQA, heading="Life-IQA score {score:.4g} ({scale})", setup="{model}, {crops} crops", run=life_iqa_pass
    ),
}


def family_of(scorer) -> Family:
    """The :class:`Family` of a scorer's model; ``ValueError`` for a model explain does not know."""
    arch = getattr(scorer, "arch", "dgiqa")
    if arch not in FAMILIES:
        known = ", ".join(f.name for f in FAMILIES.values())
        raise ValueError(f"explain knows {known}; {scorer.model_name} is {arch}")
    return FAMILIES[arch]


def check_attention_kinds(kinds: Sequence[str], family: Family = FAMILIES["dgiqa"]) -> tuple[str, ...]:
    """The attention kinds asked for, deduplicated; ``ValueError`` for one the family does not have."""
    kinds = tuple(dict.fromkeys(kinds))
    for kind in kinds:
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"unknown attention {kind!r}; choose from {', '.join(ATTENTION_KINDS)}")
        if kind not in family.attention:
            has = " or ".join(f"{k} ({title.lower()})" for k, title in family.attention.items())
            raise UsageError(f"{family.name} has no {kind!r} attention; choose {has}")
    return kinds
