"""Depth Anything V1 (Yang et al., 2024): a DINOv2 ViT/14 encoder with a DPT depth head.

The module tree mirrors the authors' release so that their checkpoints
(``LiheYoung/depth_anything_{vits,vitb,vitl}14``, ``pytorch_model.bin``) load
unchanged with ``load_state_dict(strict=True)``: the encoder lives under
``pretrained.*`` and the head under ``depth_head.*``.  The forward pass follows
the published code step by step (see ``SPEC.md`` section 2), including its
quirks, because downstream quality scores are computed from this depth map.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import nn

# DINOv2's patch size and position-embedding grid live with the other facts that need no torch (spec.py).
from dgiqa_cli.models.spec import PATCH_SIZE, POS_EMBED_GRID, POS_EMBED_INTERPOLATE_OFFSET

DEPTH_CONFIGS: dict[str, dict] = {
    "vits": {
        "embed_dim": 384,
        "depth": 12,
        "num_heads": 6,
        "features": 64,
        "out_channels": [48, 96, 192, 384],
        # Depth Anything V1 calls ``get_intermediate_layers(x, 4)``: the last four blocks.
        "intermediate_blocks": [8, 9, 10, 11],
    },
    "vitb": {
        "embed_dim": 768,
        "depth": 12,
        "num_heads": 12,
        "features": 128,
        "out_channels": [96, 192, 384, 768],
        "intermediate_blocks": [8, 9, 10, 11],
    },
    "vitl": {
        "embed_dim": 1024,
        "depth": 24,
        "num_heads": 16,
        "features": 256,
        "out_channels": [256, 512, 1024, 1024],
        "intermediate_blocks": [20, 21, 22, 23],
    },
}


class DinoV2Encoder(nn.Module):
    """DINOv2 ViT with patch 14, as released with Depth Anything (no registers, LayerScale on).

    It has no classification ``forward``: Depth Anything only reads intermediate
    block outputs.  ``mask_token`` (a pre-training device) is kept unused, solely
    so that the checkpoint's state dict matches.
    """

    def __init__(self, embed_dim: int, depth: int, num_heads: int, img_size: int = 518):
        super().__init__()
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        # Parameters first, then children: this is the checkpoint's key order.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, POS_EMBED_GRID**2 + 1, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        # strict_img_size=False: any multiple of 14 is accepted, not only 518.
        self.patch_embed = PatchEmbed(
            img_size=img_size, patch_size=PATCH_SIZE, in_chans=3, embed_dim=embed_dim, strict_img_size=False
        )
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=4.0,
                qkv_bias=True,
                init_values=1.0,
                norm_layer=norm_layer,
                act_layer=nn.GELU,
            )
            for _ in range(depth)
        )
        self.norm = norm_layer(embed_dim)

    def interpolate_pos_embed(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """Position embedding for a ``grid_h x grid_w`` token grid, computed as DINOv2 does.

        The resize is given as a *scale factor* ``(grid + 0.1) / 37``, not as a
        target size: PyTorch then maps output to input coordinates with that
        factor rather than with ``37 / grid``, which shifts the bicubic samples
        slightly (with ``size=`` the golden 518 x 686 depth map is off by ~2e-3).
        """
        if (grid_h, grid_w) == (POS_EMBED_GRID, POS_EMBED_GRID):
            return self.pos_embed
        pos_embed = self.pos_embed.float()
        class_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
        dim = patch_pos.shape[-1]
        patch_pos = patch_pos.reshape(1, POS_EMBED_GRID, POS_EMBED_GRID, dim).permute(0, 3, 1, 2)
        scale = (
            (grid_h + POS_EMBED_INTERPOLATE_OFFSET) / POS_EMBED_GRID,
            (grid_w + POS_EMBED_INTERPOLATE_OFFSET) / POS_EMBED_GRID,
        )
        patch_pos = F.interpolate(patch_pos, scale_factor=scale, mode="bicubic", antialias=False)
        if patch_pos.shape[-2:] != (grid_h, grid_w):
            raise RuntimeError(
                f"position embedding resized to {tuple(patch_pos.shape[-2:])}, expected {(grid_h, grid_w)}"
            )
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
        return torch.cat((class_pos, patch_pos), dim=1).to(self.pos_embed.dtype)

    def intermediate_features(self, x: torch.Tensor, block_indices: list[int]) -> list[torch.Tensor]:
        """Patch tokens after the given blocks, each through the final norm, as (N, C, h/14, w/14) maps."""
        batch, _, height, width = x.shape
        grid_h, grid_w = height // PATCH_SIZE, width // PATCH_SIZE
        tokens = self.patch_embed(x)
        tokens = torch.cat((self.cls_token.expand(batch, -1, -1), tokens), dim=1)
        tokens = tokens + self.interpolate_pos_embed(grid_h, grid_w)

        wanted = set(block_indices)
        features = []
        for index, block in enumerate(self.blocks):
            tokens = block(tokens)
            if index in wanted:
                patch_tokens = self.norm(tokens)[:, 1:]  # drop the class token (no readout in V1)
                features.append(patch_tokens.transpose(1, 2).reshape(batch, -1, grid_h, grid_w))
        return features


class ResidualConvUnit(nn.Module):
    """DPT's pre-activation residual unit: x + conv(relu(conv(relu(x))))."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Not in-place: the input is needed again for the skip connection.
        out = self.conv1(F.relu(x))
        out = self.conv2(F.relu(out))
        return out + x


class FeatureFusionBlock(nn.Module):
    """Merges the coarser path with a skip feature, then upsamples to the next finer level."""

    def __init__(self, features: int):
        super().__init__()
        # Registration order matters for the state dict: out_conv precedes the units.
        self.out_conv = nn.Conv2d(features, features, kernel_size=1, bias=True)
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(
        self, path: torch.Tensor, skip: torch.Tensor | None = None, size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        if skip is not None:
            path = path + self.resConfUnit1(skip)
        path = self.resConfUnit2(path)
        if size is None:
            path = F.interpolate(path, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            path = F.interpolate(path, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(path)


class DPTHead(nn.Module):
    """DPT decoder for a single output channel (relative inverse depth)."""

    def __init__(self, in_channels: int, features: int, out_channels: list[int]):
        super().__init__()
        self.projects = nn.ModuleList(nn.Conv2d(in_channels, c, kernel_size=1) for c in out_channels)
        # Turn the four equal-resolution ViT maps into a 4x / 2x / 1x / 0.5x pyramid.
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(out_channels[0], out_channels[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(out_channels[1], out_channels[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(out_channels[3], out_channels[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        scratch = nn.Module()
        for level, channels in enumerate(out_channels, start=1):
            setattr(scratch, f"layer{level}_rn", nn.Conv2d(channels, features, 3, padding=1, bias=False))
        for level in range(1, 5):
            setattr(scratch, f"refinenet{level}", FeatureFusionBlock(features))
        scratch.output_conv1 = nn.Conv2d(features, features // 2, kernel_size=3, padding=1)
        scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 1, kernel_size=1),
            nn.ReLU(),
        )
        self.scratch = scratch

    def forward(self, features: list[torch.Tensor], grid_h: int, grid_w: int) -> torch.Tensor:
        levels = [
            resize(project(feature))
            for feature, project, resize in zip(features, self.projects, self.resize_layers, strict=True)
        ]
        s = self.scratch
        layer1, layer2, layer3, layer4 = (
            s.layer1_rn(levels[0]),
            s.layer2_rn(levels[1]),
            s.layer3_rn(levels[2]),
            s.layer4_rn(levels[3]),
        )
        path = s.refinenet4(layer4, size=layer3.shape[2:])
        path = s.refinenet3(path, layer3, size=layer2.shape[2:])
        path = s.refinenet2(path, layer2, size=layer1.shape[2:])
        path = s.refinenet1(path, layer1)

        out = s.output_conv1(path)
        out = F.interpolate(out, size=(grid_h * PATCH_SIZE, grid_w * PATCH_SIZE), mode="bilinear", align_corners=True)
        return s.output_conv2(out)


class DepthAnything(nn.Module):
    """Depth Anything V1: (N, 3, H, W) normalized RGB, H and W multiples of 14 -> (N, H, W) inverse depth.

    ``encoder`` picks the authors' configuration; keyword arguments named as in ``DEPTH_CONFIGS``
    (``embed_dim``, ``depth``, ``num_heads``, ``features``, ``out_channels``, ``intermediate_blocks``)
    replace its values, for the small networks of plumbing tests (released checkpoints need none).
    """

    def __init__(self, encoder: str = "vits", **overrides):
        super().__init__()
        if encoder not in DEPTH_CONFIGS:
            raise ValueError(f"unknown encoder {encoder!r}; expected one of {sorted(DEPTH_CONFIGS)}")
        unknown = set(overrides) - set(DEPTH_CONFIGS[encoder])
        if unknown:
            raise ValueError(
                f"unknown Depth Anything options {sorted(unknown)}; expected {sorted(DEPTH_CONFIGS[encoder])}"
            )
        config = {**DEPTH_CONFIGS[encoder], **overrides}
        self.encoder = encoder
        self.intermediate_blocks = list(config["intermediate_blocks"])
        self.pretrained = DinoV2Encoder(config["embed_dim"], config["depth"], config["num_heads"])
        self.depth_head = DPTHead(config["embed_dim"], config["features"], config["out_channels"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height % PATCH_SIZE or width % PATCH_SIZE:
            raise ValueError(f"input size {height}x{width} is not a multiple of {PATCH_SIZE}")
        features = self.pretrained.intermediate_features(x, self.intermediate_blocks)
        depth = self.depth_head(features, height // PATCH_SIZE, width // PATCH_SIZE)
        depth = F.interpolate(depth, size=(height, width), mode="bilinear", align_corners=True)
        return F.relu(depth).squeeze(1)
