"""The scoring API: ``Scorer(...).score(path_or_array)``.

One image flows: decode -> depth map (Depth Anything) -> both frames resized
to 384 on the short side -> N crops at the same places -> DGIQA on all crops
in one batch -> mean. The steps are methods so that the batch engine can run
the CPU ones in workers and batch the device ones across images.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from . import preprocess as pp
from .hub import ResolvedWeights, WeightsError, load_into, read_state_dict, resolve_weights
from .images import MAX_PIXELS, DecodedImage, ImageError, decode_image, decoded_from_array, read_image
from .models import DEPTH_ENCODERS, build_model, detect_architecture
from .registry import RegistryEntry, default_model_name, depth_entry_for_arch, model_entries
from .runtime import autocast, pick_device, pick_precision

log = logging.getLogger("dgiqa")

DEFAULT_CROPS = 20
AUTHORS_DEPTH_MODEL = "vitl"  # what the authors trained and score with


@dataclass
class ScoreResult:
    """One image's outcome: a score, or the reason there is none."""

    path: str
    score: float | None
    error: str | None = None
    width: int | None = None
    height: int | None = None
    crops: int = 0
    model: str = ""
    depth_model: str | None = None
    crop_scores: list[float] | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self, with_crops: bool = False) -> dict:
        row = asdict(self)
        if not with_crops:
            row.pop("crop_scores")
        return row


@dataclass
class PreparedImage:
    """What the CPU makes of one picture before the device sees it."""

    path: str
    width: int
    height: int
    rgb: np.ndarray  # (H, W, 3) uint8, the decoded picture
    depth_input: np.ndarray  # (3, h, w) float32, Depth Anything's input
    frame: np.ndarray  # (H', W', 3) uint8, short side 384
    positions: list[tuple[int, int]]


class Scorer:
    """Scores pictures with DGIQA (depth from Depth Anything) the way the authors' script does.

    ``weights``: a registry name (default ``dgiqa-koniq``), a ``.pth`` /
    ``.safetensors`` file, or ``hf://owner/repo[/file]``. ``depth_model``:
    ``vits``/``vitb``/``vitl``, defaulting to the one the weights were trained
    with (ViT-L for the authors' releases); ``depth_weights`` overrides where
    its weights come from. ``crops``/``crop_mode``/``seed`` choose the 224-pixel
    crops (``official`` = the authors' seeded random positions).
    """

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        *,
        depth_model: str | None = None,
        depth_weights: str | os.PathLike | None = None,
        crops: int = DEFAULT_CROPS,
        crop_mode: str = "official",
        seed: int = 42,
        device: str = "auto",
        precision: str = "auto",
        max_pixels: int = MAX_PIXELS,
    ):
        if crops < 1:
            raise ValueError("--crops must be at least 1")
        if crop_mode not in pp.CROP_MODES:
            raise ValueError(f"unknown crop mode {crop_mode!r}; choose one of {', '.join(pp.CROP_MODES)}")
        self.crops, self.crop_mode, self.seed, self.max_pixels = crops, crop_mode, seed, max_pixels
        self.device = pick_device(device)
        self.precision = pick_precision(precision, self.device)

        resolved = resolve_weights(weights or default_model_name(), kind="model")
        self.model_name = resolved.label
        self.entry: RegistryEntry | None = resolved.entry
        self._state = None if resolved.entry else read_state_dict(resolved.path)
        self.arch = resolved.entry.arch if resolved.entry else detect_arch(resolved, self._state)
        if self.arch != "dgiqa":
            raise WeightsError(f"{resolved.label}: holds {self.arch} weights, not DGIQA weights")
        self.model = self._load("dgiqa", resolved, self._state)

        trained_with = (self.entry.depth_model if self.entry else None) or AUTHORS_DEPTH_MODEL
        self.depth_model_name = depth_model or trained_with
        if self.depth_model_name not in DEPTH_ENCODERS:
            raise ValueError(f"unknown depth model {depth_model!r}; choose one of {', '.join(DEPTH_ENCODERS)}")
        if self.depth_model_name != trained_with:
            log.warning(
                "depth model %s differs from the %s these DGIQA weights were trained with: scores will shift",
                self.depth_model_name,
                trained_with,
            )
        depth_resolved = resolve_weights(depth_weights or depth_entry_for_arch(self.depth_model_name).name, "depth")
        depth_arch = f"depth-anything-{self.depth_model_name}"
        self.depth = self._load(depth_arch, depth_resolved)
        del self._state

    @property
    def score_range(self) -> tuple[float, float]:
        return self.entry.score_range if self.entry else (0.0, 1.0)

    def _load(self, arch: str, weights: ResolvedWeights, state_dict=None) -> torch.nn.Module:
        model = load_into(build_model(arch), arch, weights, state_dict)
        return model.to(self.device).eval()

    # -- the steps -------------------------------------------------------------------------------

    def prepare(self, image: DecodedImage) -> PreparedImage:
        """CPU work for one picture: depth input, the 384 frame and the crop positions."""
        frame = pp.resize_short_side(image.rgb)
        positions = pp.crop_positions(frame.shape[0], frame.shape[1], self.crops, self.crop_mode, self.seed)
        return PreparedImage(
            image.path, image.width, image.height, image.rgb, pp.depth_input(image.rgb), frame, positions
        )

    @torch.inference_mode()
    def depth_map(self, depth_input: np.ndarray) -> torch.Tensor:
        """Relative inverse depth (h, w), float32 on the device, for one depth input."""
        x = torch.from_numpy(depth_input).unsqueeze(0).to(self.device)
        with autocast(self.device, self.precision):
            return self.depth(x)[0].float()

    def depth_frame(self, prepared: PreparedImage, depth: torch.Tensor) -> np.ndarray:
        """The authors' depth picture at full size, then resized like the RGB frame: (H', W') uint8."""
        picture = pp.depth_to_uint8(depth, prepared.height, prepared.width)
        return pp.resize_short_side(picture)

    @torch.inference_mode()
    def score_crops(self, rgb_crops: np.ndarray, depth_crops: np.ndarray, return_attention: bool = False):
        """DGIQA on uint8 crops (N, 224, 224, 3) and (N, 224, 224) -> (N,) scores (and attention)."""
        rgb = pp.normalize_uint8(torch.from_numpy(rgb_crops).to(self.device))
        depth = torch.from_numpy(depth_crops).to(self.device)[..., None].expand(-1, -1, -1, 3)
        depth = pp.normalize_uint8(depth)
        with autocast(self.device, self.precision):
            out = self.model(rgb, depth, return_attention=return_attention)
        if return_attention:
            scores, attention = out
            return scores.float(), {k: v.float() for k, v in attention.items()}
        return out.float()

    # -- whole images ----------------------------------------------------------------------------

    def score_prepared(self, prepared: PreparedImage) -> ScoreResult:
        depth = self.depth_frame(prepared, self.depth_map(prepared.depth_input))
        rgb_crops = pp.cut_crops(prepared.frame, prepared.positions)
        depth_crops = pp.cut_crops(depth, prepared.positions)
        crop_scores = self.score_crops(rgb_crops, depth_crops).cpu()
        return self.result(prepared, crop_scores)

    def result(self, prepared: PreparedImage, crop_scores: torch.Tensor) -> ScoreResult:
        return ScoreResult(
            path=prepared.path,
            score=float(crop_scores.mean()),
            width=prepared.width,
            height=prepared.height,
            crops=len(prepared.positions),
            model=self.model_name,
            depth_model=self.depth_model_name,
            crop_scores=crop_scores.tolist(),
        )

    def failure(self, path: str, error: str) -> ScoreResult:
        return ScoreResult(path=path, score=None, error=error, model=self.model_name, depth_model=self.depth_model_name)

    def load(self, item: str | os.PathLike | np.ndarray) -> DecodedImage:
        """A path, encoded bytes, or an RGB uint8 array (H, W, 3) / grayscale (H, W) -> DecodedImage."""
        if isinstance(item, np.ndarray):
            return decoded_from_array(item)
        if isinstance(item, bytes | bytearray):
            return decode_image(bytes(item), "<bytes>", self.max_pixels)
        return read_image(item, self.max_pixels)

    def score(self, item: str | os.PathLike | np.ndarray) -> ScoreResult:
        """Score one picture; a bad input gives a result with ``error`` set instead of raising."""
        name = "<array>" if isinstance(item, np.ndarray) else str(item)
        try:
            return self.score_prepared(self.prepare(self.load(item)))
        except ImageError as exc:
            return self.failure(exc.path if name != "<array>" else name, exc.reason)

    def score_many(self, items: Iterable[str | os.PathLike | np.ndarray]) -> list[ScoreResult]:
        """Score several pictures, one after the other (``dgiqa batch`` is the fast path for many)."""
        return [self.score(item) for item in items]


def detect_arch(weights: ResolvedWeights, state_dict: dict) -> str:
    """The architecture of weights that came without a registry entry, from their keys."""
    try:
        return detect_architecture(state_dict)
    except ValueError as exc:
        raise WeightsError(f"{weights.label}: {exc}") from None


def list_models() -> list[str]:
    """Registry names accepted by ``Scorer(weights=...)``."""
    return list(model_entries())
