"""From decoded pixels to network inputs, step for step as the authors' scripts do it.

DGIQA (``single_image_inference.py``): RGB and depth picture resized so the
short side is 384 (OpenCV bilinear on uint8), ImageNet-normalised, and N crops
of 224 at the same positions in both. Depth Anything (``depth_utils.py``): RGB
/ 255 resized with OpenCV bicubic to at least 518 on both sides, each a
multiple of 14, ImageNet-normalised. Normalisation commutes with cropping, so
crops are cut from the uint8 frame and normalised on the device, in one batch.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image

if TYPE_CHECKING:  # the tensor twins below are for PyTorch networks; the OpenVINO path never imports torch
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SHORT_SIDE = 384
CROP = 224
DEPTH_SIDE = 518
PATCH = 14
CROP_MODES = ("official", "grid")


def short_side_size(height: int, width: int, short_side: int = SHORT_SIDE) -> tuple[int, int]:
    """(H, W) after scaling the shorter side to ``short_side``, rounded as albumentations' SmallestMaxSize."""
    scale = short_side / min(height, width)
    return round(height * scale), round(width * scale)


def resize_short_side(img: np.ndarray, short_side: int = SHORT_SIDE) -> np.ndarray:
    """Bilinear resize (uint8 in, uint8 out) so that the shorter side is ``short_side``; a no-op if it already is."""
    height, width = img.shape[:2]
    if min(height, width) == short_side:
        return img
    new_h, new_w = short_side_size(height, width, short_side)
    return cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)


def shrink_short_side(img: np.ndarray, short_side: int) -> np.ndarray:
    """Shrink (never enlarge) so that the shorter side is ``short_side``, area-averaged (no aliasing)."""
    height, width = img.shape[:2]
    if min(height, width) <= short_side:
        return img
    new_h, new_w = short_side_size(height, width, short_side)
    return cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_AREA)


def resize_exact(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to exactly (H, W), aspect ratio not kept, as torchvision's ``Resize((H, W))`` on a PIL image.

    That is Pillow's bilinear filter, which widens its support when shrinking
    (antialiasing); Life-IQA's test transform resizes this way.
    """
    height, width = size
    if img.shape[:2] == (height, width):
        return img
    return np.asarray(Image.fromarray(img).resize((width, height), Image.BILINEAR))


def crop_positions(
    height: int, width: int, count: int, mode: str = "official", seed: int = 42, crop: int = CROP
) -> list[tuple[int, int]]:
    """Top-left corners (x, y) of ``count`` crops in a ``height`` x ``width`` frame.

    ``official``: the authors' sequence, ``random.seed(seed)`` then for each crop
    ``x = randint(0, W - crop)``, ``y = randint(0, H - crop)``; the same image
    always gets the same crops. ``grid``: evenly spread over a rows x columns
    grid shaped like the frame, corners included, with no randomness at all.
    """
    if mode not in CROP_MODES:
        raise ValueError(f"unknown crop mode {mode!r}; choose one of {', '.join(CROP_MODES)}")
    if count < 1:
        raise ValueError("the number of crops must be at least 1")
    max_x, max_y = width - crop, height - crop
    if max_x < 0 or max_y < 0:
        raise ValueError(f"a {crop}x{crop} crop does not fit in a {width}x{height} frame")
    if mode == "official":
        rng = random.Random(seed)
        positions = []
        for _ in range(count):
            x = rng.randint(0, max_x)
            y = rng.randint(0, max_y)
            positions.append((x, y))
        return positions
    cols = max(1, min(count, round(math.sqrt(count * width / height))))
    rows = math.ceil(count / cols)
    xs = np.linspace(0, max_x, cols).round().astype(int) if cols > 1 else np.array([max_x // 2])
    ys = np.linspace(0, max_y, rows).round().astype(int) if rows > 1 else np.array([max_y // 2])
    cells = [(int(x), int(y)) for y in ys for x in xs]
    keep = np.linspace(0, len(cells) - 1, count).round().astype(int)
    return [cells[i] for i in keep]


def cut_crops(frame: np.ndarray, positions: list[tuple[int, int]], crop: int = CROP) -> np.ndarray:
    """Stack the ``crop`` x ``crop`` windows at ``positions`` of an (H, W, C) frame: (N, crop, crop, C)."""
    return np.stack([frame[y : y + crop, x : x + crop] for x, y in positions])


def normalize_uint8(batch: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32, (v / 255 - mean) / std, on ``batch``'s device."""
    import torch

    mean = torch.tensor(IMAGENET_MEAN, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=batch.device).view(1, 3, 1, 1)
    x = batch.permute(0, 3, 1, 2).float().div_(255.0)
    return x.sub_(mean).div_(std)


def normalize_uint8_array(batch: np.ndarray) -> np.ndarray:
    """:func:`normalize_uint8` in NumPy, in the same float32 operations (the same bits): for networks that take
    arrays (OpenVINO), where torch operations would wake PyTorch's threads to compete with OpenVINO's."""
    mean = np.array(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1)
    std = np.array(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1)
    x = batch.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray((x - mean) / std)


def depth_input_size(height: int, width: int, side: int = DEPTH_SIDE, multiple: int = PATCH) -> tuple[int, int]:
    """Depth Anything's 'lower bound' resize: both sides >= ``side``, aspect kept, multiples of 14."""
    scale = max(side / height, side / width)

    def constrain(x: float) -> int:
        y = int(np.round(x / multiple) * multiple)
        return y if y >= side else int(np.ceil(x / multiple) * multiple)

    return constrain(scale * height), constrain(scale * width)


def depth_input(rgb: np.ndarray, exact: bool = True) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> Depth Anything input (3, h, w) float32.

    ``exact``: in float64 like the published transform (``rgb / 255.0`` is a
    float64 array there), cast at the end, so that the depth picture, which is
    truncated to uint8 later, sees the same values. Otherwise in float32, three
    times faster and within 5e-5 of it: for the half-precision paths, whose
    networks differ from the reference far more than that anyway.
    """
    new_h, new_w = depth_input_size(*rgb.shape[:2])
    dtype = np.float64 if exact else np.float32
    x = cv2.resize(rgb.astype(dtype) / dtype(255), (new_w, new_h), interpolation=cv2.INTER_CUBIC)
    x = (x - np.array(IMAGENET_MEAN, dtype)) / np.array(IMAGENET_STD, dtype)
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def depth_to_uint8(depth: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Relative depth (h, w) -> the authors' depth picture: (H, W) uint8, min-max scaled, truncated.

    Stays on ``depth``'s device, so only bytes cross to the host. The arithmetic
    is the published NumPy code's, in the same float32 operations:
    ``(d - min) / (max - min + 1e-8) * 255``, then truncation. One channel is
    returned; the published code replicates it to three, which the caller does
    when it builds crops (resizing and cropping act per channel).
    """
    import torch

    full = torch.nn.functional.interpolate(
        depth[None, None].float(), (height, width), mode="bilinear", align_corners=False
    )[0, 0]
    lo, hi = full.min(), full.max()
    return ((full - lo) / (hi - lo + 1e-8) * 255).to(torch.uint8)


def depth_to_uint8_array(depth: np.ndarray, height: int, width: int) -> np.ndarray:
    """:func:`depth_to_uint8` in NumPy and OpenCV, for networks that give arrays (OpenVINO): the same half-pixel
    bilinear resize (OpenCV's float weights, within 2e-6 of PyTorch's relative to the depth range) and the same
    float32 scaling and truncation."""
    full = cv2.resize(np.asarray(depth, np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    lo, hi = full.min(), full.max()
    return ((full - lo) / (hi - lo + np.float32(1e-8)) * np.float32(255)).astype(np.uint8)
