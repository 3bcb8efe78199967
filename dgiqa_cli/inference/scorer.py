"""The scoring API: ``Scorer(...).score(picture)`` gives a :class:`ScoreResult` for anything that holds a picture.

The pipeline itself (networks, depth, crops, backends) is the model that
:func:`~dgiqa_cli.inference.model.create_model` makes; a Scorer adds inputs of
every kind (paths, bytes, arrays, PIL images, tensors), one result row per picture,
and the rule that one bad picture never loses the others' results.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Union

import numpy as np

from dgiqa_cli.inference.defaults import DEFAULT_CROP_MODE, DEFAULT_DEVICE, DEFAULT_PRECISION
from dgiqa_cli.inference.model import (
    DEFAULT_CROPS,
    DEFAULT_MAX_CROPS,
    DEFAULT_SEED,
    IQAModel,
    PreparedImage,
    create_model,
    to_uint8_rgb,
)
from dgiqa_cli.inference.runtime import is_tensor
from dgiqa_cli.io.images import MAX_PIXELS, DecodedImage, ImageError, decode_image, decoded_from_array, read_image

__all__ = ["DEFAULT_CROPS", "PreparedImage", "Picture", "ScoreResult", "Scorer", "list_models", "list_weights"]

log = logging.getLogger("dgiqa")


@dataclass
class ScoreResult:
    """One image's outcome: a score, or the reason there is none."""

    path: str
    score: float | None
    error: str | None = None
    width: int | None = None
    height: int | None = None
    crops: int = 0
    model: str = ""  # the weights: a registry name, a file or hf:// address
    depth_model: str | None = None
    arch: str = ""  # dgiqa or life-iqa
    scale: str = ""  # what the number means, e.g. "0 to 1, higher is better"
    decoder: str = ""  # which decoder produced the pixels: opencv, pillow, array
    # How much the crops disagree: their standard deviation and a 95% interval of their mean (blank for one crop).
    score_std: float | None = None
    score_ci95_low: float | None = None
    score_ci95_high: float | None = None
    crop_scores: list[float] | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self, with_crops: bool = False) -> dict:
        row = asdict(self)
        if not with_crops:
            row.pop("crop_scores")
        return row


class Scorer:
    """Scores pictures the way the authors' scripts do: DGIQA (default) or Life-IQA.

    ``weights``: a registry name (default ``dgiqa-koniq``, or ``life-iqa-koniq`` for
    ``model="life-iqa"``), a ``.pth`` / ``.safetensors`` file, or ``hf://owner/repo[/file]``;
    ``model``: the family, ``dgiqa`` or ``life-iqa`` (by default the one the weights hold).
    The other options are :func:`~dgiqa_cli.create_model`'s; ``max_pixels`` bounds a decoded picture.
    """

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        *,
        model: str | None = None,
        depth_model: str | None = None,
        depth_weights: str | os.PathLike | None = None,
        crops: int = DEFAULT_CROPS,
        crop_mode: str = DEFAULT_CROP_MODE,
        seed: int = DEFAULT_SEED,
        device: str = DEFAULT_DEVICE,
        precision: str | None = DEFAULT_PRECISION,
        backend: str | None = None,
        max_pixels: int = MAX_PIXELS,
        max_crops: int = DEFAULT_MAX_CROPS,
    ):
        self.iqa_model: IQAModel = create_model(
            weights,
            family=model,
            device=device,
            precision=precision,
            backend=backend,
            depth_model=depth_model,
            depth_weights=depth_weights,
            crops=crops,
            crop_mode=crop_mode,
            seed=seed,
            max_crops=max_crops,
        )
        self.max_pixels = max_pixels

    # What the model knows: its settings, what the scores mean, and the steps the batch engine runs.
    device = property(lambda self: self.iqa_model.device)
    precision = property(lambda self: self.iqa_model.precision)
    exact = property(lambda self: self.iqa_model.exact)
    input_size = property(lambda self: self.iqa_model.input_size)
    backend = property(lambda self: self.iqa_model.backend)
    arch = property(lambda self: self.iqa_model.arch)
    spec = property(lambda self: self.iqa_model.spec)
    model_name = property(lambda self: self.iqa_model.model_name)
    depth_model_name = property(lambda self: self.iqa_model.depth_model_name)
    weights = property(lambda self: self.iqa_model.weights)
    depth_weights = property(lambda self: self.iqa_model.depth_weights)
    card = property(lambda self: self.iqa_model.card)
    crops = property(lambda self: self.iqa_model.crops)
    crop_mode = property(lambda self: self.iqa_model.crop_mode)
    seed = property(lambda self: self.iqa_model.seed)
    settings = property(lambda self: self.iqa_model.settings)
    score_range = property(lambda self: self.iqa_model.score_range)
    lower_better = property(lambda self: self.iqa_model.lower_better)
    scale = property(lambda self: self.iqa_model.scale)

    def prepare(self, image: DecodedImage, keep_rgb: bool = True) -> PreparedImage:
        """CPU work for one picture (see :meth:`IQAModel.prepare`)."""
        return self.iqa_model.prepare(image, keep_rgb)

    def compile(self) -> None:
        """``torch.compile`` the networks (see :meth:`IQAModel.compile`)."""
        self.iqa_model.compile()

    # -- whole pictures ----------------------------------------------------------------------------

    def score_batch(self, batch: list[PreparedImage]) -> list[ScoreResult]:
        """Score prepared pictures together (one forward pass for all their crops): one result each."""
        return [self.result(p, s) for p, s in zip(batch, self.iqa_model.crop_scores(batch), strict=True)]

    def score_prepared(self, prepared: PreparedImage) -> ScoreResult:
        return self.score_batch([prepared])[0]

    def result(self, prepared: PreparedImage, crop_scores: np.ndarray) -> ScoreResult:
        spread = crop_spread(crop_scores.astype(np.float64))
        return ScoreResult(
            path=prepared.path,
            score=float(crop_scores.mean()),
            width=prepared.width,
            height=prepared.height,
            crops=len(prepared.positions),
            model=self.model_name,
            depth_model=self.depth_model_name,
            arch=self.arch,
            scale=self.scale,
            decoder=prepared.decoder,
            **spread,
            crop_scores=crop_scores.tolist(),
        )

    def failure(self, path: str, error: str) -> ScoreResult:
        return ScoreResult(
            path=path,
            score=None,
            error=error,
            model=self.model_name,
            depth_model=self.depth_model_name,
            arch=self.arch,
            scale=self.scale,
        )

    def load(self, item: Picture) -> DecodedImage:
        """A path, encoded bytes, a NumPy array, a PIL image or a tensor -> DecodedImage.

        Arrays: RGB uint8 (H, W, 3) or grayscale (H, W). Tensors: (3, H, W) or (H, W, 3), uint8, or
        float in [0, 1] (as torchvision's ``ToTensor`` gives), turned into uint8 by rounding.
        """
        if is_tensor(item):
            return decoded_from_array(to_uint8_rgb(item), "<tensor>")
        if isinstance(item, np.ndarray):
            return decoded_from_array(item)
        if isinstance(item, bytes | bytearray):
            return decode_image(bytes(item), "<bytes>", self.max_pixels)
        if hasattr(item, "convert") and hasattr(item, "size"):  # a PIL image, without importing PIL here
            return decoded_from_array(np.asarray(item.convert("RGB")), "<PIL image>")
        return read_image(item, self.max_pixels)

    def score(self, item: Picture, *, strict: bool = False) -> ScoreResult:
        """Score one picture. A bad input gives a result with ``error`` set, or with ``strict=True`` raises
        :class:`~dgiqa_cli.io.images.ImageError` (and lets any other failure through)."""
        name = picture_name(item)
        if strict:
            return self.score_prepared(self.prepare(self.load(item)))
        try:
            return self.score_prepared(self.prepare(self.load(item)))
        except ImageError as exc:
            return self.failure(exc.path if name == exc.path else name, exc.reason)
        except Exception as exc:  # one picture's failure must never lose the others' results
            log.debug("scoring %s failed", name, exc_info=True)
            return self.failure(name, f"could not be scored ({type(exc).__name__}: {exc})")

    def score_many(self, items: Iterable[Picture], *, strict: bool = False) -> list[ScoreResult]:
        """Score several pictures, one after the other (``dgiqa batch`` is the fast path for many)."""
        return [self.score(item, strict=strict) for item in items]

    def __repr__(self) -> str:
        return f"Scorer({self.iqa_model!r})"


Picture = Union[str, os.PathLike, bytes, np.ndarray, "torch.Tensor", "PIL.Image.Image"]  # noqa: F821, UP007


def picture_name(item) -> str:
    """How a picture is named in its result row."""
    if is_tensor(item):
        return "<tensor>"
    if isinstance(item, np.ndarray):
        return "<array>"
    if isinstance(item, bytes | bytearray):
        return "<bytes>"
    if hasattr(item, "convert") and hasattr(item, "size"):
        return "<PIL image>"
    return os.fsdecode(item) if isinstance(item, os.PathLike) else str(item)


def crop_spread(crop_scores: np.ndarray) -> dict[str, float | None]:
    """The crops' standard deviation (n - 1) and Student's t 95% interval of their mean.

    The crops are a sample of the picture's 224-pixel windows (random ones in the official mode), so the
    interval says how far another draw of crops could move the score. One crop has no spread: blanks.
    """
    n = len(crop_scores)
    if n < 2:
        return {"score_std": None, "score_ci95_low": None, "score_ci95_high": None}
    mean, std = float(np.mean(crop_scores)), float(np.std(crop_scores, ddof=1))
    half = student_t_975(n - 1) * std / np.sqrt(n)
    return {"score_std": std, "score_ci95_low": mean - half, "score_ci95_high": mean + half}


def _t_central(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with ``df`` (an integer) degrees of freedom: the finite series of
    Abramowitz and Stegun, 26.7.3 (odd ``df``) and 26.7.4 (even)."""
    theta = math.atan(t / math.sqrt(df))
    cos2, sin = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:
        term = total = math.cos(theta) if df > 1 else 0.0
        for k in range(3, df - 1, 2):
            term *= cos2 * (k - 1) / k
            total += term
        return 2 / math.pi * (theta + sin * total)
    term = total = 1.0
    for k in range(2, df - 1, 2):
        term *= cos2 * (k - 1) / k
        total += term
    return sin * total


@functools.lru_cache(maxsize=64)
def student_t_975(df: int) -> float:
    """Student's t 97.5% quantile (scipy's ``stats.t.ppf(0.975, df)`` to 1e-12), by bisection on the series
    above: importing scipy.stats for it cost the first score of every process a second."""
    low, high = 0.0, 16.0
    while _t_central(high, df) < 0.95:
        high *= 2
    for _ in range(200):  # halves the bracket each time: to float precision in about 55
        middle = (low + high) / 2
        low, high = (middle, high) if _t_central(middle, df) < 0.95 else (low, middle)
        if high - low <= 1e-15 * high:
            break
    return (low + high) / 2


def list_weights(kind: str = "model") -> list[str]:
    """Registry names accepted as weights: scoring models (``kind="model"``) or depth models (``"depth"``)."""
    from dgiqa_cli.weights.registry import depth_entries, model_entries

    if kind not in ("model", "depth"):
        raise ValueError(f"kind is 'model' or 'depth', not {kind!r}")
    return list(model_entries() if kind == "model" else depth_entries())


def list_models() -> list[str]:
    """Deprecated alias of :func:`list_weights` (it lists weights, not model families); kept for one release."""
    import warnings

    warnings.warn("list_models() is deprecated: use list_weights()", DeprecationWarning, stacklevel=2)
    return list_weights()
