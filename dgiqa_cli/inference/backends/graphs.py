"""Our networks as graphs an exporter can trace: fixed inputs, no Python control flow on values.

``network_graph(module, arch)`` wraps a loaded network in a module whose
``forward`` takes only tensors and returns one tensor, and says which input
dimensions are dynamic. Tracing (``openvino.convert_model``,
``torch.onnx.export``) records the wrapped module's own forward pass; only one
step is replaced while tracing: Depth Anything's position-embedding resize,
whose bicubic *scale factor* ``(grid + 0.1) / 37`` depends on the input size
(a Python float a tracer would freeze). :func:`bicubic_matrix` computes the same
resize as two small matrix products built from the traced input size, so one
graph serves every picture shape.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from dgiqa_cli.inference.backends.signatures import GraphInput, graph_io, input_spec
from dgiqa_cli.models.spec import POS_EMBED_GRID, POS_EMBED_INTERPOLATE_OFFSET

BICUBIC_A = -0.75  # PyTorch's (and OpenCV's) cubic convolution coefficient


@dataclass
class NetworkGraph:
    """A traceable network: ``module(*inputs) -> output``, with its inputs' names and dynamic dimensions."""

    module: nn.Module
    arch: str
    inputs: tuple[GraphInput, ...]
    output: str
    output_shape: tuple[str | int, ...]

    def examples(self, seed: int = 0) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        return tuple(torch.randn(i.example, generator=g) for i in self.inputs)

    def checks(self, seed: int = 1) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        return tuple(torch.randn(i.check, generator=g) for i in self.inputs)

    @property
    def spec(self) -> str:
        """The dynamic-shape spec, part of the compiled-model cache key: e.g. ``image[?,3,?,?]``."""
        return input_spec(self.inputs)


def _cubic_weights(t: torch.Tensor) -> list[torch.Tensor]:
    """Keys cubic convolution weights of the four taps at offsets -1, 0, 1, 2 for fractions ``t``."""
    a = BICUBIC_A

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def bicubic_matrix(
    size: torch.Tensor | int, source: int = POS_EMBED_GRID, identity: torch.Tensor | bool = False
) -> torch.Tensor:
    """(size, source) matrix M with ``M @ v`` = PyTorch's bicubic resize of ``v`` (align_corners=False)
    by the scale factor ``(size + 0.1) / source``, as DINOv2 asks for it; border taps clamped.
    Where ``identity`` holds (a traced boolean, or a bool), M is the identity instead.

    ``size`` may be a traced 0-d tensor: the matrix is then built from the graph's input size."""
    size = torch.as_tensor(size)
    index = torch.arange(size, dtype=torch.float32)
    # upsample_bicubic2d with a scale factor maps output i to (i + 0.5) / scale - 0.5
    inverse_scale = source / (size.to(torch.float32) + POS_EMBED_INTERPOLATE_OFFSET)
    position = (index + 0.5) * inverse_scale - 0.5
    left = torch.floor(position)
    weights = _cubic_weights(position - left)
    taps = torch.arange(source, dtype=torch.float32)
    matrix = torch.zeros(index.shape[0], source)
    for offset, weight in zip((-1, 0, 1, 2), weights, strict=True):
        tap = torch.clamp(left + offset, 0, source - 1)
        matrix = matrix + weight[:, None] * (tap[:, None] == taps[None, :]).to(torch.float32)
    same = (index[:, None] == taps[None, :]).to(torch.float32)
    return torch.where(torch.as_tensor(identity), same, matrix)


def traceable_pos_embed(pos_embed: torch.Tensor, grid_h, grid_w) -> torch.Tensor:
    """DinoV2Encoder.interpolate_pos_embed written with matrix products (the class token untouched)."""
    class_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    dim = patch_pos.shape[-1]
    grid = patch_pos.reshape(POS_EMBED_GRID, POS_EMBED_GRID, dim)
    # DINOv2 leaves the embedding alone when the grid is already 37 x 37 (and resizes both sides otherwise)
    unchanged = (torch.as_tensor(grid_h) == POS_EMBED_GRID) & (torch.as_tensor(grid_w) == POS_EMBED_GRID)
    rows, cols = bicubic_matrix(grid_h, identity=unchanged), bicubic_matrix(grid_w, identity=unchanged)
    resized = torch.einsum("hi,ijc,wj->hwc", rows, grid, cols)
    return torch.cat((class_pos, resized.reshape(1, -1, dim)), dim=1)


@contextlib.contextmanager
def traceable_depth(depth: nn.Module):
    """Within this block, ``depth``'s encoder resizes its position embedding with :func:`traceable_pos_embed`."""
    encoder = depth.pretrained
    encoder.interpolate_pos_embed = lambda h, w: traceable_pos_embed(encoder.pos_embed, h, w)
    try:
        yield depth
    finally:
        del encoder.interpolate_pos_embed


class _DepthGraph(nn.Module):
    def __init__(self, depth: nn.Module):
        super().__init__()
        self.depth = depth

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        with traceable_depth(self.depth):
            return self.depth(image)


class _ScoreGraph(nn.Module):
    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, *crops: torch.Tensor) -> torch.Tensor:
        return self.network(*crops, return_attention=False)


def network_graph(module: nn.Module, arch: str) -> NetworkGraph:
    """The traceable form of a loaded network of architecture ``arch``."""
    inputs, output, output_shape = graph_io(arch)
    wrapper = _DepthGraph(module) if arch.startswith("depth-anything-") else _ScoreGraph(module)
    return NetworkGraph(wrapper.eval(), arch, inputs, output, output_shape)
