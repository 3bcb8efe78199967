"""Training samples: pictures, their frames, the cached depth pictures, random crops and flips.

Training preprocessing is scoring's (:mod:`dgiqa_cli.inference.preprocess`): the RGB frame is the picture resized to
384 on the short side (Life-IQA: its fixed 512 x 384), and DGIQA's depth picture is the authors' one (the
whole picture's depth map, min-max scaled to uint8, resized like the frame), so a crop cut at (x, y) in
training is the crop scoring would cut there. Only where the crops fall differs: random in training, the
seeded official positions when validating.

The depth network is frozen, so each picture's depth picture is computed once and kept on disk
(:class:`DepthCache`), keyed by the picture's sha256 and the depth weights' sha256.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dgiqa_cli.inference import preprocess as pp
from dgiqa_cli.io.atomic import atomic_write
from dgiqa_cli.io.images import ImageError, decode_image, read_file_bytes, read_image

CACHE_FORMAT = "v1"  # bump when the stored depth picture changes (size, arithmetic)


@dataclass(frozen=True)
class LabelScale:
    """The data's MOS scale and the model's output scale, and the linear map between them.

    DGIQA ends in a sigmoid: MOS are mapped onto [0, 1] from the training data's own range, higher is better
    (DMOS-style labels are turned around). Life-IQA regresses MOS unbounded: labels keep their scale, and only
    the direction is turned around for DMOS. ``to_mos`` maps a score of the trained model back to the data's scale.
    """

    low: float
    high: float
    lower_is_better: bool
    bounded: bool  # True: targets in [0, 1] (DGIQA); False: the MOS scale (Life-IQA)

    def to_target(self, mos: float) -> float:
        if self.bounded:
            unit = (mos - self.low) / (self.high - self.low) if self.high > self.low else 0.5
            return 1.0 - unit if self.lower_is_better else unit
        return self.low + self.high - mos if self.lower_is_better else mos

    def to_mos(self, score: float) -> float:
        if self.bounded:
            unit = 1.0 - score if self.lower_is_better else score
            return self.low + unit * (self.high - self.low)
        return self.low + self.high - score if self.lower_is_better else score

    def as_dict(self) -> dict:
        if self.bounded:
            formula = "mos = " + ("high - score" if self.lower_is_better else "low + score") + " * (high - low)"
        else:
            formula = "mos = low + high - score" if self.lower_is_better else "mos = score"
        return {
            "mos_low": self.low,
            "mos_high": self.high,
            "lower_is_better": self.lower_is_better,
            "target_range": [0.0, 1.0] if self.bounded else [self.low, self.high],
            "score_to_mos": formula,
        }


@dataclass
class Sample:
    """One usable training picture: where it is, what it is rated, and the size of its frame."""

    path: str
    sha256: str
    mos: float
    target: float
    group: str | None
    frame_size: tuple[int, int]  # (H', W') of the frame crops are cut from


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


def make_frame(rgb: np.ndarray, arch: str, input_size: tuple[int, int] | None) -> np.ndarray:
    """The frame crops are cut from, as scoring makes it: exactly ``input_size`` (Life-IQA), else short side 384."""
    return pp.resize_exact(rgb, input_size) if input_size is not None else pp.resize_short_side(rgb)


class DepthCache:
    """Depth pictures on disk, ``<folder>/<depth sha256>/<picture sha256>.npy``, written atomically.

    A picture or depth network that changes gets another key, so a stale entry is never read.
    """

    def __init__(self, folder: str | os.PathLike, depth_sha256: str):
        self.folder = Path(folder) / CACHE_FORMAT / depth_sha256
        self.hits = self.misses = 0

    def path_for(self, picture_sha256: str) -> Path:
        return self.folder / picture_sha256[:2] / f"{picture_sha256}.npy"

    def get(self, picture_sha256: str) -> np.ndarray | None:
        path = self.path_for(picture_sha256)
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return array

    def put(self, picture_sha256: str, array: np.ndarray) -> None:
        path = self.path_for(picture_sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)


class DepthStage:
    """The frozen Depth Anything network, making the authors' depth picture exactly as :class:`Scorer` does.

    Always in fp32 with the exact depth input, whatever the training precision: it runs once per picture.
    """

    def __init__(self, network: torch.nn.Module, device: torch.device):
        self.network = network.to(device).eval().requires_grad_(False)
        self.device = device

    @torch.inference_mode()
    def depth_frame(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 picture -> (H', W') uint8 depth picture resized to 384 on the short side."""
        x = torch.from_numpy(pp.depth_input(rgb, exact=True))[None].to(self.device)
        depth = self.network(x).float()[0]
        picture = pp.depth_to_uint8(depth, rgb.shape[0], rgb.shape[1])
        return pp.resize_short_side(picture.cpu().numpy())


@dataclass
class Crop:
    """Where one training (or validation) crop is cut: sample index, top-left corner, flipped or not."""

    index: int
    x: int
    y: int
    flip: bool


def epoch_plan(samples: list[Sample], seed: int, epoch: int, flip: bool) -> list[Crop]:
    """The order of the pictures and one random crop (and flip) for each, for one epoch.

    Drawn from a generator seeded by (seed, epoch) alone, so an epoch resumed from a checkpoint sees exactly
    the crops it would have seen, and workers that load the crops cannot change them.
    """
    rng = np.random.default_rng([seed, epoch])
    plan = []
    for i in rng.permutation(len(samples)):
        height, width = samples[i].frame_size
        x = int(rng.integers(0, width - pp.CROP + 1))
        y = int(rng.integers(0, height - pp.CROP + 1))
        plan.append(Crop(int(i), x, y, bool(flip and rng.random() < 0.5)))
    return plan


def validation_plan(samples: list[Sample], crops: int, seed: int = 42) -> list[Crop]:
    """Scoring's crops: the official seeded positions, no flips (the model chosen here is the one scoring runs)."""
    plan = []
    for i, sample in enumerate(samples):
        for x, y in pp.crop_positions(*sample.frame_size, crops, "official", seed):
            plan.append(Crop(i, x, y, False))
    return plan


class CropSet(torch.utils.data.Dataset):
    """Crops of a plan as uint8 arrays: ``(rgb (224, 224, 3), depth (224, 224), target)``; depth empty for
    Life-IQA. Pictures are decoded again for every crop (workers share the work); depth pictures come from
    the cache. A picture that cannot be read any more is an error, never replaced."""

    def __init__(self, samples: list[Sample], plan: list[Crop], arch: str, input_size, cache: DepthCache | None):
        self.samples, self.plan, self.arch, self.input_size, self.cache = samples, plan, arch, input_size, cache

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int):
        crop = self.plan[i]
        sample = self.samples[crop.index]
        frame = make_frame(read_image(sample.path).rgb, self.arch, self.input_size)
        rgb = pp.cut_crops(frame, [(crop.x, crop.y)])[0]
        depth = np.zeros((0,), np.uint8)
        if self.cache is not None:
            picture = self.cache.get(sample.sha256)
            if picture is None or picture.shape[:2] != frame.shape[:2]:
                raise ImageError(sample.path, "its cached depth picture is missing or does not fit its frame")
            depth = pp.cut_crops(picture, [(crop.x, crop.y)])[0]
        if crop.flip:
            rgb = rgb[:, ::-1]
            depth = depth[:, ::-1] if depth.ndim == 2 else depth
        return np.ascontiguousarray(rgb), np.ascontiguousarray(depth), np.float32(sample.target), crop.index


def loader(dataset: CropSet, batch_size: int, workers: int) -> torch.utils.data.DataLoader:
    """Batches in the plan's order (the plan is already shuffled); workers only decode and cut."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers, drop_last=False, persistent_workers=False
    )


def steps_per_epoch(samples: int, batch_size: int, accumulate: int) -> int:
    """Optimiser steps in one epoch (a last, shorter accumulation still steps)."""
    return math.ceil(math.ceil(samples / batch_size) / accumulate)


def prepare_samples(images, scale: LabelScale, arch: str, input_size, depth: DepthStage | None, cache, progress=None):
    """Read every picture once: its sha256, its frame size and (DGIQA) its depth picture, from the cache or made.

    ``images``: :class:`LabelledImage` s. Returns ``(samples, skipped)``: a picture that cannot be read is
    reported in ``skipped`` with the reason, and left out; it is never replaced by anything else.
    ``progress(done, total, path)`` is called after each picture.
    """
    samples, skipped = [], []
    for n, image in enumerate(images, start=1):
        try:
            data = read_file_bytes(image.path)
            sha = hashlib.sha256(data).hexdigest()
            decoded = decode_image(data, image.path)
            frame_size = make_frame(decoded.rgb, arch, input_size).shape[:2]
            if depth is not None and cache.get(sha) is None:
                cache.put(sha, depth.depth_frame(decoded.rgb))
        except ImageError as exc:
            skipped.append(Skipped(image.path, exc.reason))
        except OSError as exc:
            skipped.append(Skipped(image.path, f"cannot be read ({exc.strerror or exc})"))
        else:
            samples.append(Sample(image.path, sha, image.mos, scale.to_target(image.mos), image.group, frame_size))
        if progress is not None:
            progress(n, len(images), image.path)
    return samples, skipped
