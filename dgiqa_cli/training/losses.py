"""Training losses on a batch of predictions and targets, and sums of them (``mse+plcc``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def plcc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(1 - Pearson's r) / 2 within the batch: 0 when perfectly correlated, whatever the scale.

    Needs at least 3 pictures with different targets in a batch to carry information (2 points are always
    perfectly correlated); a batch whose targets are all equal contributes 0.
    """
    p, t = pred.float() - pred.float().mean(), target.float() - target.float().mean()
    denominator = p.norm() * t.norm()
    if pred.numel() < 2 or denominator.item() == 0:
        return pred.sum() * 0.0
    return (1 - (p * t).sum() / (denominator + 1e-8)) / 2


def rank_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pairwise ranking hinge: every pair whose predictions are ordered against their targets, or closer than
    the targets are, costs ``max(0, |dt| - sign(dt) * dp)``. Pairs with equal targets are ignored."""
    dp = pred.float()[:, None] - pred.float()[None, :]
    dt = target.float()[:, None] - target.float()[None, :]
    mask = dt > 0
    if not mask.any():
        return pred.sum() * 0.0
    return F.relu(dt[mask] - dp[mask]).mean()


LOSSES: dict[str, LossFn] = {
    "mse": lambda pred, target: F.mse_loss(pred.float(), target.float()),
    "l1": lambda pred, target: F.l1_loss(pred.float(), target.float()),
    "plcc": plcc_loss,
    "rank": rank_loss,
}


def parse_loss(spec: str) -> list[str]:
    """``'mse+plcc'`` -> ``['mse', 'plcc']``; an unknown or repeated term is a ValueError naming the choices."""
    terms = [term.strip().lower() for term in spec.split("+")]
    unknown = [term for term in terms if term not in LOSSES]
    if unknown or not terms:
        what = "+".join(unknown) or spec
        raise ValueError(f"unknown loss {what!r}; choose {', '.join(LOSSES)} or a sum like mse+plcc")
    if len(set(terms)) != len(terms):
        raise ValueError(f"loss {spec!r} names a term twice")
    return terms


def make_loss(spec: str) -> LossFn:
    """The loss ``spec`` names: one term, or the unweighted sum of several."""
    terms = [LOSSES[term] for term in parse_loss(spec)]

    def loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(term(pred, target) for term in terms)

    return loss
