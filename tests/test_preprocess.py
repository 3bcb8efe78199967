"""Resizing, crop positions and normalisation, step for step as the authors' scripts."""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest
import torch

from dgiqa_cli.inference import preprocess as pp


@pytest.mark.parametrize(
    ("size", "expected"),
    [((480, 640), (384, 512)), ((600, 400), (576, 384)), ((384, 1000), (384, 1000)), ((1000, 1333), (384, 512))],
)
def test_short_side_becomes_384(size, expected):
    assert pp.short_side_size(*size) == expected
    frame = pp.resize_short_side(np.zeros((*size, 3), np.uint8))
    assert frame.shape[:2] == expected


def test_resize_is_skipped_at_384():
    img = np.random.default_rng(0).integers(0, 256, (384, 500, 3), dtype=np.uint8)
    assert pp.resize_short_side(img) is img


def test_official_crops_are_the_authors_seeded_sequence():
    """random.seed(42), then x = randint(0, W-224), y = randint(0, H-224) per crop (single_image_inference.py)."""
    random.seed(42)
    expected = []
    for _ in range(20):
        x = random.randint(0, 512 - 224)
        y = random.randint(0, 384 - 224)
        expected.append((x, y))
    assert pp.crop_positions(384, 512, 20) == expected
    assert pp.crop_positions(384, 512, 20, seed=7) != expected


def test_grid_crops_are_spread_deterministic_and_reach_the_corners():
    positions = pp.crop_positions(384, 683, 20, mode="grid")
    assert len(positions) == 20 and positions == pp.crop_positions(384, 683, 20, mode="grid")
    xs, ys = zip(*positions, strict=False)
    assert min(xs) == 0 and max(xs) == 683 - 224
    assert min(ys) == 0 and max(ys) == 384 - 224
    assert len(set(positions)) == 20
    assert pp.crop_positions(384, 384, 1, mode="grid") == [(80, 80)]


def test_bad_crop_requests_are_refused():
    with pytest.raises(ValueError, match="unknown crop mode"):
        pp.crop_positions(384, 512, 3, mode="center")
    with pytest.raises(ValueError, match="does not fit"):
        pp.crop_positions(100, 512, 3)


def test_cut_crops_takes_windows_at_positions():
    frame = np.arange(384 * 512).reshape(384, 512)
    crops = pp.cut_crops(frame, [(0, 0), (10, 20)])
    assert crops.shape == (2, 224, 224)
    assert crops[1, 0, 0] == frame[20, 10]


def test_normalisation_is_imagenet():
    batch = torch.randint(0, 256, (2, 5, 7, 3), dtype=torch.uint8)
    mean = torch.tensor(pp.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(pp.IMAGENET_STD).view(1, 3, 1, 1)
    expected = (batch.permute(0, 3, 1, 2).float() / 255 - mean) / std
    torch.testing.assert_close(pp.normalize_uint8(batch), expected)


def test_normalisation_in_numpy_gives_the_same_bits():
    """What OpenVINO networks get (arrays) is what PyTorch networks get (tensors), bit for bit."""
    batch = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    got = pp.normalize_uint8_array(batch)
    assert got.dtype == np.float32 and got.shape == (3, 3, 224, 224) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, pp.normalize_uint8(torch.from_numpy(batch)).numpy())


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((518, 518), (518, 518)),
        ((480, 640), (518, 686)),
        ((1000, 400), (1288, 518)),
    ],  # 1295 / 14 = 92.5 rounds half to even
)
def test_depth_input_is_lower_bound_518_in_multiples_of_14(size, expected):
    assert pp.depth_input_size(*size) == expected
    x = pp.depth_input(np.zeros((*size, 3), np.uint8))
    assert x.shape == (3, *expected) and x.dtype == np.float32


def test_depth_picture_is_min_max_scaled_and_truncated():
    depth = torch.tensor([[0.0, 1.0], [2.0, 4.0]])
    picture = pp.depth_to_uint8(depth, 2, 2)
    assert picture.dtype == torch.uint8
    assert picture.tolist() == [[0, 63], [127, 255]]  # 255 * v / (4 + 1e-8), truncated


@pytest.mark.parametrize(
    ("depth_shape", "picture"), [((37, 49), (540, 720)), ((518, 686), (300, 400)), ((92, 37), (4000, 1600))]
)
def test_depth_picture_in_numpy_matches_pytorch(depth_shape, picture):
    """The OpenVINO path's twin (OpenCV's bilinear, whose weights round differently in the last bits): within
    2e-6 of the depth range before truncation, so a pixel may move by one grey level, and only a rare one."""
    rng = np.random.default_rng(sum(depth_shape))
    smooth = np.cumsum(np.cumsum(rng.random(depth_shape, dtype=np.float32), 0), 1)  # a depth-like ramp
    depth = (smooth / smooth.max() * 7.5).astype(np.float32)
    ours = pp.depth_to_uint8_array(depth, *picture)
    reference = pp.depth_to_uint8(torch.from_numpy(depth), *picture).numpy()
    assert ours.dtype == np.uint8 and ours.shape == picture
    differs = ours.astype(int) - reference
    assert np.abs(differs).max() <= 1 and np.count_nonzero(differs) <= 1e-3 * differs.size
    full = torch.nn.functional.interpolate(torch.from_numpy(depth)[None, None], picture, mode="bilinear")[0, 0]
    resized = cv2.resize(depth, picture[::-1], interpolation=cv2.INTER_LINEAR)
    assert np.abs(resized - full.numpy()).max() <= 2e-6 * (depth.max() - depth.min())


def test_flat_depth_gives_a_black_picture_in_both():
    depth = np.full((20, 30), 3.0, np.float32)
    assert not pp.depth_to_uint8_array(depth, 40, 60).any()
    assert not pp.depth_to_uint8(torch.from_numpy(depth), 40, 60).any()
