"""Life-IQA: GCN-enhanced layer interaction and MoE feature decoupling on a Swin-B backbone.

Tang et al. (2025), arXiv 2511.19024. Module and parameter names follow the
authors' code so that their released state dicts load unchanged with
``strict=True`` (``tests/fixtures/manifest_life_iqa.json`` lists every key).

Quirk kept on purpose: the authors' model holds the timm backbone under
``pretrain_model`` *and* registers the same stage modules again in
``backbone_stages``, so every backbone tensor appears twice in a checkpoint.
We register the same module objects twice too, which reproduces both key sets
while storing the weights once.
"""

from __future__ import annotations

import re

import timm
import torch
import torch.nn.functional as F
from torch import nn

CROSS_ATTENTION_HEADS = 6  # fixed in the authors' decoder, independent of the config
MEMORY_GRID = 7  # stage-3 features are averaged onto a 7 x 7 grid -> 49 memory tokens
EXPERT_DROPOUT = 0.1

# Keyword arguments of ``LifeIQA`` for the authors' KonIQ-10k configuration (configs/swin/swin_koniq.yaml).
LIFE_IQA_KONIQ_CONFIG = {
    "embed_dim": 384,
    "num_queries": 6,
    "num_experts": 2,
    "top_k": 2,
    "depth": 4,
    "backbone": "swin_base_patch4_window7_224",
}


def normalized_full_adjacency(num_nodes: int) -> torch.Tensor:
    """D^-1/2 (A + I) D^-1/2 for the all-ones adjacency A: the queries form a complete graph."""
    adjacency = torch.ones(num_nodes, num_nodes) + torch.eye(num_nodes)
    inv_sqrt_degree = adjacency.sum(-1).clamp_min(1e-6).pow(-0.5)
    return inv_sqrt_degree.unsqueeze(-1) * adjacency * inv_sqrt_degree.unsqueeze(-2)


def grid_average(features: torch.Tensor, grid: int = MEMORY_GRID) -> torch.Tensor:
    """Average channels-last features (N, H, W, C) over a grid x grid partition -> (N, grid*grid, C).

    Bin edges are ``linspace(0, size, grid + 1)`` truncated to integers, as in
    the authors' ``UPP_Layer``; unlike ``adaptive_avg_pool2d`` the bins never
    overlap. Tokens are ordered row by row.
    """
    _, height, width, _ = features.shape
    rows = torch.linspace(0, height, grid + 1, dtype=torch.int).tolist()
    cols = torch.linspace(0, width, grid + 1, dtype=torch.int).tolist()
    cells = [
        features[:, rows[i] : rows[i + 1], cols[j] : cols[j + 1], :].mean(dim=(1, 2))
        for i in range(grid)
        for j in range(grid)
    ]
    return torch.stack(cells, dim=1)


class GraphConvolution(nn.Module):
    """One graph convolution, A (X W) + b, with the weight stored (in, out) as in the checkpoint."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        nn.init.kaiming_uniform_(self.weight)

    def forward(self, adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return adjacency @ (x @ self.weight) + self.bias


class QueryGCN(nn.Module):
    """Three graph convolutions (d -> d/2 -> d/4 -> d) that mix information between the queries."""

    def __init__(self, dim: int):
        super().__init__()
        self.gcn1 = GraphConvolution(dim, dim // 2)
        self.gcn2 = GraphConvolution(dim // 2, dim // 4)
        self.gcn3 = GraphConvolution(dim // 4, dim)

    def forward(self, adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.gcn1(adjacency, x))
        x = F.relu(self.gcn2(adjacency, x))
        return self.gcn3(adjacency, x)


class GCNDecoderLayer(nn.Module):
    """x = x + GCN(x) over the queries, then x = x + cross-attention(norm2(x), memory).

    The GCN branch is not normalized first: the authors' layer applies
    ``norm2`` only before the cross-attention.
    """

    def __init__(self, dim: int, num_queries: int):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(dim, CROSS_ATTENTION_HEADS, dropout=0.0, batch_first=True)
        self.GCN = QueryGCN(dim)
        self.norm2 = nn.LayerNorm(dim)
        # Not in the checkpoint: derived from the number of queries.
        self.register_buffer("adjacency", normalized_full_adjacency(num_queries), persistent=False)

    def forward(
        self, queries: torch.Tensor, memory: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = queries + self.GCN(self.adjacency, queries)
        attended, weights = self.multihead_attn(
            self.norm2(x), memory, memory, need_weights=need_weights, average_attn_weights=True
        )
        return x + attended, weights


class QueryDecoder(nn.Module):
    """A stack of ``GCNDecoderLayer`` (no final norm), named ``bunch_decoder`` in the checkpoint."""

    def __init__(self, dim: int, num_queries: int, depth: int):
        super().__init__()
        self.layers = nn.ModuleList(GCNDecoderLayer(dim, num_queries) for _ in range(depth))

    def forward(
        self, queries: torch.Tensor, memory: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return the decoded queries and, if asked, the last layer's head-averaged attention."""
        weights = None
        for layer in self.layers:
            queries, weights = layer(queries, memory, need_weights=need_weights)
        return queries, weights


class TopKRouter(nn.Module):
    """Softmax over the top-k router logits; experts outside the top k get weight exactly 0."""

    def __init__(self, dim: int, num_experts: int, top_k: int):
        super().__init__()
        self.top_k = top_k
        self.linear = nn.Linear(dim, num_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.linear(x)
        top_logits, top_index = logits.topk(self.top_k, dim=-1)
        sparse = torch.full_like(logits, float("-inf")).scatter(-1, top_index, top_logits)
        return sparse.softmax(dim=-1)


class Expert(nn.Module):
    """Feed-forward expert: Linear(d, 4d), ReLU, Dropout, Linear(4d, d)."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Dropout(EXPERT_DROPOUT), nn.Linear(4 * dim, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SparseMoE(nn.Module):
    """Mixture of experts over the query tokens, weighted by the top-k router.

    Every expert runs on every token (there are only a handful of tokens) and
    unselected experts are multiplied by a weight of exactly 0, which gives the
    same result as the authors' masked dispatch, summed in the same order.
    """

    def __init__(self, dim: int, num_experts: int, top_k: int):
        super().__init__()
        self.router = TopKRouter(dim, num_experts, top_k)
        self.experts = nn.ModuleList(Expert(dim) for _ in range(num_experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = self.router(x)
        out = torch.zeros_like(x)
        for index, expert in enumerate(self.experts):
            out = out + gates[..., index : index + 1] * expert(x)
        return out


class SingleExpertMLP(nn.Module):
    """The authors' replacement for the MoE when ``num_experts == 1``: Linear, GELU, Linear, Dropout."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(EXPERT_DROPOUT)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LifeIQA(nn.Module):
    """Life-IQA quality regressor: (N, 3, 224, 224) normalized RGB crops -> (N,) unbounded scores."""

    def __init__(
        self,
        embed_dim: int = 384,
        num_queries: int = 6,
        num_experts: int = 2,
        top_k: int = 2,
        depth: int = 4,
        backbone: str = "swin_base_patch4_window7_224",
        backbone_config: dict | None = None,
    ):
        """``backbone_config``: timm keyword arguments that replace the backbone's own (``embed_dim``,
        ``depths``, ``num_heads``), for the small networks of plumbing tests; the authors' checkpoints need none.
        ``embed_dim`` must be a multiple of the decoder's 6 cross-attention heads."""
        super().__init__()
        if num_experts > 1 and not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in [1, num_experts={num_experts}], got {top_k}")
        # Registration order matters: it fixes the state-dict key order of the checkpoint.
        self.bunch_embedding = nn.Parameter(torch.empty(1, num_queries, embed_dim))
        nn.init.trunc_normal_(self.bunch_embedding, std=0.02)
        self.gamma = nn.Parameter(torch.tensor(0.1))

        # pretrained=False always: the checkpoint carries the backbone weights.
        self.pretrain_model = timm.create_model(backbone, pretrained=False, num_classes=0, **(backbone_config or {}))
        self.backbone_stages = nn.ModuleList(
            [
                nn.Sequential(self.pretrain_model.patch_embed, self.pretrain_model.layers[0]),
                *self.pretrain_model.layers[1:4],
            ]
        )
        # The authors delete the classifier's final norm and head; their keys are absent from checkpoints.
        del self.pretrain_model.norm
        del self.pretrain_model.head
        stage_channels = [info["num_chs"] for info in self.pretrain_model.feature_info]

        self.proj_layer3 = nn.Linear(stage_channels[2], embed_dim)
        self.proj_layer4 = nn.Conv2d(stage_channels[3], embed_dim, kernel_size=1)
        self.bunch_decoder = QueryDecoder(embed_dim, num_queries, depth)
        self.MOE = SingleExpertMLP(embed_dim) if num_experts == 1 else SparseMoE(embed_dim, num_experts, top_k)
        self.norm3 = nn.LayerNorm(embed_dim)
        self.fc = nn.Linear(embed_dim, 1)

    def forward(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Score a batch of crops.

        With ``return_attention`` also return the last decoder layer's
        cross-attention, averaged over heads: (N, num_queries, 49), one weight
        per cell of the 7 x 7 grid over the stage-3 features (row by row).
        """
        features = []
        for stage in self.backbone_stages:
            x = stage(x)  # timm >= 1.0 Swin stages are channels-last (N, H, W, C)
            features.append(x)
        stage3, stage4 = features[2], features[3]

        deep = self.proj_layer4(stage4.permute(0, 3, 1, 2)).flatten(2).transpose(1, 2)
        queries = self.bunch_embedding + deep.mean(dim=1, keepdim=True)
        memory = self.proj_layer3(grid_average(stage3, MEMORY_GRID))

        decoded, attention = self.bunch_decoder(queries, memory, need_weights=return_attention)
        decoded = self.norm3(decoded)
        decoded = decoded + self.gamma * self.MOE(decoded)
        scores = self.fc(decoded).squeeze(-1).mean(dim=1)
        if return_attention:
            return scores, attention
        return scores


_TWIN_PREFIXES = (
    ("pretrain_model.patch_embed.", "backbone_stages.0.0."),
    ("pretrain_model.layers.0.", "backbone_stages.0.1."),
)
_LAYER_KEY = re.compile(r"^pretrain_model\.layers\.([1-9]\d*)\.")
_STAGE_KEY = re.compile(r"^backbone_stages\.([1-9]\d*)\.")


def twin_key(key: str) -> str | None:
    """The other name of a backbone tensor (``pretrain_model.*`` <-> ``backbone_stages.*``), else None."""
    for left, right in _TWIN_PREFIXES:
        if key.startswith(left):
            return right + key[len(left) :]
        if key.startswith(right):
            return left + key[len(right) :]
    if match := _LAYER_KEY.match(key):
        return f"backbone_stages.{match.group(1)}." + key[match.end() :]
    if match := _STAGE_KEY.match(key):
        return f"pretrain_model.layers.{match.group(1)}." + key[match.end() :]
    return None


def fill_twin_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add whichever copy of each backbone tensor is missing, for checkpoints saved deduplicated.

    The published checkpoints hold both copies and need no help. A state dict
    stripped of shared tensors (safetensors refuses to store aliased tensors)
    holds only one; this restores the other so that ``strict=True`` loading
    works. Existing keys are never overwritten.
    """
    filled = dict(state_dict)
    for key, tensor in state_dict.items():
        other = twin_key(key)
        if other is not None and other not in filled:
            filled[other] = tensor
    return filled
