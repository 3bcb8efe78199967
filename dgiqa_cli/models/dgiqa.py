"""DGIQA: depth-guided cross-attention and refinement over two Swin-T backbones.

Ramesh, Liu, Wang, Islam (2025), arXiv 2505.24002. Module and parameter names
follow the authors' code so that their released ``.pth`` state dicts load
unchanged (``tests/fixtures/manifest_dgiqa.json`` lists every key).
"""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import nn

BRIDGE_CHANNELS = (64, 128, 256, 512)
TOKEN_DIM = sum(BRIDGE_CHANNELS)  # 960
GRID = 7  # the coarsest Swin-T stage is 7 x 7 for a 224 crop
CROP = 224


def swin_tiny_features(**swin) -> nn.Module:
    """A Swin-T feature extractor (four stages, channels-last) with random weights.

    ``pretrained=False`` always: the DGIQA checkpoint carries the backbone
    weights, so ImageNet weights would only be downloaded to be overwritten.
    ``swin``: timm ``SwinTransformer`` keyword arguments that replace Swin-T's
    (``embed_dim``, ``depths``, ``num_heads``), for the small test configurations.
    """
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, features_only=True, **swin)


class TransformerCNNBridge(nn.Module):
    """Turns one Swin stage into CNN features: 1x1 conv, channel gate, 3x3 conv, BN, ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1)
        self.attention = nn.Sequential(
            nn.Conv2d(out_channels, out_channels // 16, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels // 16, out_channels, 1),
            nn.Sigmoid(),
        )
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.norm = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout2d(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = x * self.attention(x)
        return self.dropout(F.relu(self.norm(self.conv2(x))))


class AttentionBlock(nn.Module):
    """Post-norm transformer block: y = norm1(q + attn(q, kv)); y = norm2(y + mlp(y)).

    Sequence-first layout (L, N, C) as in the authors' code. The two Depth-CAR
    blocks share this shape but not their parameter names, so the names of the
    submodules are given by the subclasses below.
    """

    attn_name = "multihead_attn"
    norm_names = ("norm1", "norm2")
    mlp_name = "fc"

    def __init__(self, dim: int = TOKEN_DIM, heads: int = 16, dropout: float = 0.1):
        super().__init__()
        self.add_module(self.attn_name, nn.MultiheadAttention(dim, heads, dropout=dropout))
        for name in self.norm_names:
            self.add_module(name, nn.LayerNorm(dim))
        self.add_module(self.mlp_name, nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)))
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, query: torch.Tensor, key_value: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn: nn.MultiheadAttention = getattr(self, self.attn_name)
        norm1, norm2 = (getattr(self, n) for n in self.norm_names)
        mlp = getattr(self, self.mlp_name)
        out, weights = attn(query, key_value, key_value, need_weights=need_weights, average_attn_weights=True)
        y = norm1(query + self.dropout(out))
        y = norm2(y + self.dropout(mlp(y)))
        return y, weights


class DepthGuidedCrossAttention(AttentionBlock):
    """Depth tokens ask, RGB tokens answer: query = depth, key = value = RGB."""


class RefinementAttention(AttentionBlock):
    """Self-attention over the fused tokens."""

    attn_name = "multihead_attn_spatial"
    norm_names = ("norm1_spatial", "norm2_spatial")
    mlp_name = "fc_spatial"


class DGIQA(nn.Module):
    """Scores 224 x 224 RGB crops guided by the matching depth crops; one score in [0, 1] per crop.

    The defaults are the authors' network (their checkpoints load into it unchanged). Smaller values make
    the same network in miniature, for tests of plumbing rather than numbers (as timm's tests use a tiny
    ViT): ``swin`` (timm Swin keyword arguments, e.g. ``{"embed_dim": 24, "depths": [1, 1, 1, 1],
    "num_heads": [1, 2, 4, 8]}``), ``bridge_channels`` (each at least 16), ``attention_heads`` (divides
    their sum) and ``head_channels`` (the dilated convolutions).
    """

    def __init__(
        self,
        swin: dict | None = None,
        bridge_channels: tuple[int, ...] = BRIDGE_CHANNELS,
        attention_heads: int = 16,
        head_channels: int = 1024,
    ):
        super().__init__()
        swin = dict(swin or {})
        self.backbone = swin_tiny_features(**swin)
        self.depth_backbone = swin_tiny_features(**swin)
        stage_channels = self.backbone.feature_info.channels()
        self.token_dim = sum(bridge_channels)
        for i, (c_in, c_out) in enumerate(zip(stage_channels, bridge_channels, strict=True), start=1):
            setattr(self, f"tcb{i}", TransformerCNNBridge(c_in, c_out))
        for i, (c_in, c_out) in enumerate(zip(stage_channels, bridge_channels, strict=True), start=1):
            setattr(self, f"tcb{i}_depth", TransformerCNNBridge(c_in, c_out))
        self.depth_guided_cross_attention = DepthGuidedCrossAttention(self.token_dim, attention_heads)
        self.refinement_attention = RefinementAttention(self.token_dim, attention_heads)
        self.dilated_stack = nn.Sequential(
            nn.Conv2d(self.token_dim, head_channels, 3, padding=2, dilation=2),
            nn.BatchNorm2d(head_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(head_channels, head_channels, 3, padding=4, dilation=4),
            nn.BatchNorm2d(head_channels),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(head_channels, 1)

    def bridged_features(self, x: torch.Tensor, depth: bool) -> torch.Tensor:
        """Swin stages -> bridges -> all resized to 7 x 7 -> concatenated: (N, 960, 7, 7)."""
        backbone = self.depth_backbone if depth else self.backbone
        suffix = "_depth" if depth else ""
        maps = []
        for i, stage in enumerate(backbone(x), start=1):
            bridged = getattr(self, f"tcb{i}{suffix}")(stage.permute(0, 3, 1, 2))
            if bridged.shape[-1] != GRID:
                bridged = F.interpolate(bridged, size=(GRID, GRID), mode="bilinear", align_corners=False)
            maps.append(bridged)
        return torch.cat(maps, dim=1)

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor, return_attention: bool = False):
        """Score crops. ``rgb`` and ``depth``: (N, 3, 224, 224), ImageNet-normalised.

        Returns (N,) scores, or ``(scores, {"cross": (N, 49, 49), "refine": (N, 49, 49)})``
        with head-averaged attention weights (rows: query tokens, columns: key
        tokens, row-major over the 7 x 7 grid) when ``return_attention``. The
        weights come from the same pass; asking for them does not change the score.
        """
        rgb_tokens = self.tokens(self.bridged_features(rgb, depth=False))
        depth_tokens = self.tokens(self.bridged_features(depth, depth=True))
        fused, cross = self.depth_guided_cross_attention(depth_tokens, rgb_tokens, need_weights=return_attention)
        refined, refine = self.refinement_attention(fused, fused, need_weights=return_attention)
        n = rgb.shape[0]
        grid = refined.permute(1, 2, 0).reshape(n, self.token_dim, GRID, GRID)
        pooled = self.dilated_stack(grid).mean(dim=(2, 3))
        scores = torch.sigmoid(self.fc(pooled)).squeeze(1)
        if return_attention:
            return scores, {"cross": cross, "refine": refine}
        return scores

    @staticmethod
    def tokens(features: torch.Tensor) -> torch.Tensor:
        """(N, C, 7, 7) -> (49, N, C), the sequence-first layout of ``nn.MultiheadAttention``."""
        return features.flatten(2).permute(2, 0, 1)
