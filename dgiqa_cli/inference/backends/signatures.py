"""What each network's graph takes and gives: input names, dynamic dimensions, the output.

Known without building a network and without PyTorch, so that a start which finds its compiled networks in
the cache (their key is made of these) never imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

from dgiqa_cli.models.spec import PATCH_SIZE

CROP = 224
DEPTH_SIDE = 518


@dataclass(frozen=True)
class GraphInput:
    name: str
    shape: tuple[int | None, ...]  # None: dynamic
    example: tuple[int, ...]  # the shape traced with
    check: tuple[int, ...]  # another shape, that the converted graph must get right too


def input_spec(inputs: tuple[GraphInput, ...]) -> str:
    """The inputs' names and dynamic dimensions, e.g. ``image[?,3,?,?]``: part of the cache key."""
    return ";".join(f"{i.name}[{','.join('?' if d is None else str(d) for d in i.shape)}]" for i in inputs)


def graph_io(arch: str) -> tuple[tuple[GraphInput, ...], str, tuple[str | int, ...]]:
    """An architecture's graph inputs, output name and output shape."""
    crops, two, one = (None, 3, CROP, CROP), (2, 3, CROP, CROP), (1, 3, CROP, CROP)
    if arch == "dgiqa":
        return (GraphInput("rgb", crops, two, one), GraphInput("depth", crops, two, one)), "scores", ("batch",)
    if arch == "life-iqa":
        return (GraphInput("rgb", crops, two, one),), "scores", ("batch",)
    if arch.startswith("depth-anything-"):
        # A non-square example, so that neither side is mistaken for the other or for 37 patches; checked on
        # a portrait shape of two pictures.
        example, check = (1, 3, DEPTH_SIDE, 28 * PATCH_SIZE), (2, 3, 20 * PATCH_SIZE, 17 * PATCH_SIZE)
        return (GraphInput("image", (None, 3, None, None), example, check),), "depth", ("batch", "height", "width")
    raise ValueError(f"no graph for architecture {arch!r}")
