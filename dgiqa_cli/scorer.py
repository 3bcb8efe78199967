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
from typing import Union

import numpy as np
import torch

from . import preprocess as pp
from .backends import accelerate, pick_backend
from .images import MAX_PIXELS, DecodedImage, ImageError, decode_image, decoded_from_array, read_image
from .models import DEPTH_ENCODERS
from .runtime import autocast, pick_device, pick_precision
from .weights import AUTHORS_DEPTH_MODEL, LoadedNetwork, WeightsError, load_network
from .weights.registry import default_model_name, depth_entry_for_arch, model_entries

log = logging.getLogger("dgiqa")

DEFAULT_CROPS = 20
MODEL_FAMILIES = ("dgiqa", "life-iqa")
LIFE_IQA_INPUT_SIZE = (512, 384)  # (H, W) of the KonIQ configuration's test-time resize


def default_weights_for(family: str) -> str:
    """The registry name used when only the model family is given."""
    names = [name for name, entry in model_entries().items() if entry.arch == family]
    if not names:
        raise ValueError(f"the registry has no weights for {family}")
    default = default_model_name()
    return default if default in names else names[0]


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


@dataclass
class PreparedImage:
    """What the CPU makes of one picture before the device sees it."""

    path: str
    width: int
    height: int
    rgb: np.ndarray | None  # (H, W, 3) uint8, the decoded picture (None once dropped)
    depth_input: np.ndarray | None  # (3, h, w) float32, Depth Anything's input (DGIQA only)
    frame: np.ndarray  # (H', W', 3) uint8 that crops are cut from: short side 384 (DGIQA), 512 x 384 (Life-IQA)
    positions: list[tuple[int, int]]
    rgb_crops: np.ndarray  # (N, 224, 224, 3) uint8, cut from ``frame`` at ``positions``
    decoder: str = "opencv"  # which decoder produced the pixels


class Scorer:
    """Scores pictures the way the authors' scripts do: DGIQA (default) or Life-IQA.

    ``model``: the family, ``dgiqa`` or ``life-iqa``; by default the one the
    weights hold. ``weights``: a registry name (default ``dgiqa-koniq``, or
    ``life-iqa-koniq`` for ``model="life-iqa"``), a ``.pth`` /
    ``.safetensors`` file, or ``hf://owner/repo[/file]``. DGIQA only: ``depth_model``:
    ``vits``/``vitb``/``vitl``, defaulting to the one the weights were trained
    with (ViT-L for the authors' releases); ``depth_weights`` overrides where
    its weights come from. ``crops``/``crop_mode``/``seed`` choose the 224-pixel
    crops (``official`` = the authors' seeded random positions). ``backend``: ``auto`` (OpenVINO on the
    CPU, PyTorch on a GPU; default, or ``$DGIQA_BACKEND``), ``torch`` or ``openvino``.
    """

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        *,
        model: str | None = None,
        depth_model: str | None = None,
        depth_weights: str | os.PathLike | None = None,
        crops: int = DEFAULT_CROPS,
        crop_mode: str = "official",
        seed: int = 42,
        device: str = "auto",
        precision: str = "auto",
        backend: str | None = None,
        max_pixels: int = MAX_PIXELS,
        max_crops: int = 128,
    ):
        if crops < 1:
            raise ValueError("--crops must be at least 1")
        if crop_mode not in pp.CROP_MODES:
            raise ValueError(f"unknown crop mode {crop_mode!r}; choose one of {', '.join(pp.CROP_MODES)}")
        self.crops, self.crop_mode, self.seed, self.max_pixels = crops, crop_mode, seed, max_pixels
        self.max_crops = max_crops  # crops per DGIQA forward pass: bounds activation memory
        self.device = pick_device(device)
        self.precision = pick_precision(precision, self.device)
        # What runs the networks: OpenVINO on the CPU (faster there: fused graphs, oneDNN, bf16), PyTorch elsewhere.
        self.backend = pick_backend(backend or os.environ.get("DGIQA_BACKEND") or "auto", self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed crop and depth shapes: pick the fastest kernels once
            if self.exact:  # TF32 convolutions would break fp32's promise of the reference numbers
                torch.backends.cudnn.allow_tf32 = False
                torch.backends.cuda.matmul.allow_tf32 = False

        if model is not None and model not in MODEL_FAMILIES:
            raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODEL_FAMILIES)}")
        loaded = load_network(weights or default_weights_for(model or "dgiqa"), "model")
        if loaded.arch not in MODEL_FAMILIES or (model is not None and loaded.arch != model):
            wanted = model or " or ".join(MODEL_FAMILIES)
            raise WeightsError(f"{loaded.label}: holds {loaded.arch} weights, not {wanted} weights")
        self.weights: LoadedNetwork = loaded
        self.model_name, self.arch, self.card = loaded.label, loaded.arch, loaded.card
        self.input_size = tuple(self.card.config.get("input_size", LIFE_IQA_INPUT_SIZE))  # Life-IQA's fixed (H, W)
        self.model = self._accelerate(loaded.network.to(self.device), loaded)
        self.depth_model_name: str | None = None
        self.depth_weights: LoadedNetwork | None = None
        self.depth = None
        if self.arch == "dgiqa":
            self._load_depth(depth_model, depth_weights)
        elif depth_model or depth_weights:
            raise ValueError("--depth-model and --depth-weights are for DGIQA; Life-IQA has no depth stage")

    def _load_depth(self, depth_model: str | None, depth_weights) -> None:
        """The Depth Anything stage DGIQA needs; by default the encoder the weights were trained with."""
        trained_with = self.card.depth_model or AUTHORS_DEPTH_MODEL
        self.depth_model_name = depth_model or trained_with
        if self.depth_model_name not in DEPTH_ENCODERS:
            raise ValueError(f"unknown depth model {depth_model!r}; choose one of {', '.join(DEPTH_ENCODERS)}")
        if self.depth_model_name != trained_with:
            log.warning(
                "depth model %s differs from the %s these DGIQA weights were trained with: scores will shift",
                self.depth_model_name,
                trained_with,
            )
        spec = depth_weights or depth_entry_for_arch(self.depth_model_name).name
        self.depth_weights = load_network(spec, "depth", arch=f"depth-anything-{self.depth_model_name}")
        self.depth = self._accelerate(self.depth_weights.network.to(self.device), self.depth_weights)

    def _accelerate(self, network: torch.nn.Module, weights: LoadedNetwork):
        """The network as the backend runs it: itself (PyTorch), or compiled by OpenVINO (cached on disk).

        A network OpenVINO cannot take stays with PyTorch (one warning), and the backend says so.
        """
        if self.backend != "openvino":
            return network
        fast = accelerate(network, weights.arch, precision=self.precision, weights_sha256=weights.sha256)
        if fast is network:
            self.backend = "torch"
        return fast

    def compile(self) -> None:
        """``torch.compile`` both networks: slower first batches, faster after (worth it for big runs).

        Networks OpenVINO runs are compiled already: they are left as they are.
        """
        if self.backend == "openvino":
            return
        self.model = torch.compile(self.model)
        if self.depth is not None:
            self.depth = torch.compile(self.depth, dynamic=True)

    @property
    def score_range(self) -> tuple[float | None, float | None]:
        """The range scores fall in; ``(None, None)`` for Life-IQA's unbounded MOS regression."""
        return self.card.score_range

    @property
    def scale(self) -> str:
        """The score scale in words, printed beside every number."""
        low, high = self.score_range
        if low is None or high is None:
            trained = f" of {self.card.trained_on}" if self.card.trained_on else ""
            return f"MOS{trained}, unbounded"
        return f"{low:g} to {high:g}, higher is better"

    # -- the steps -------------------------------------------------------------------------------

    @property
    def exact(self) -> bool:
        """fp32 reproduces the authors' arithmetic everywhere; half precision takes the fast paths."""
        return self.precision == "fp32"

    def prepare(self, image: DecodedImage, keep_rgb: bool = True) -> PreparedImage:
        """CPU work for one picture: depth input, the frame, the crop positions and the RGB crops.

        ``keep_rgb=False`` drops the decoded picture once it is no longer needed
        (the batch engine holds many prepared images at once).
        """
        if self.arch == "life-iqa":
            frame, depth_input = pp.resize_exact(image.rgb, self.input_size), None
        else:
            frame, depth_input = pp.resize_short_side(image.rgb), pp.depth_input(image.rgb, exact=self.exact)
        positions = pp.crop_positions(frame.shape[0], frame.shape[1], self.crops, self.crop_mode, self.seed)
        rgb = image.rgb if keep_rgb else None
        crops = pp.cut_crops(frame, positions)  # here, so that batch workers cut them in parallel
        return PreparedImage(
            image.path, image.width, image.height, rgb, depth_input, frame, positions, crops, image.decoder
        )

    def to_device(self, array: np.ndarray) -> torch.Tensor:
        """Host array -> device tensor; through pinned memory and without blocking on CUDA."""
        tensor = torch.from_numpy(array)
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    @torch.inference_mode()
    def depth_maps(self, depth_inputs: list[np.ndarray]) -> list[torch.Tensor]:
        """Relative inverse depth (h, w) per input, float32 on the device; inputs of one shape share a batch."""
        by_shape: dict[tuple, list[int]] = {}
        for i, x in enumerate(depth_inputs):
            by_shape.setdefault(x.shape, []).append(i)
        out: list[torch.Tensor | None] = [None] * len(depth_inputs)
        for indices in by_shape.values():
            batch = self.to_device(np.stack([depth_inputs[i] for i in indices]))
            with autocast(self.device, self.precision):
                depths = self.depth(batch).float()
            for i, depth in zip(indices, depths, strict=True):
                out[i] = depth
        return out

    def depth_map(self, depth_input: np.ndarray) -> torch.Tensor:
        """Relative inverse depth (h, w), float32 on the device, for one depth input."""
        return self.depth_maps([depth_input])[0]

    def depth_frame(self, prepared: PreparedImage, depth: torch.Tensor) -> np.ndarray:
        """The authors' depth picture at full size, then resized like the RGB frame: (H', W') uint8."""
        return self.depth_frames([prepared], [depth])[0]

    def depth_frames(self, batch: list[PreparedImage], depths: list[torch.Tensor]) -> list[np.ndarray]:
        """``depth_frame`` for a batch: every picture is queued on the device before the first one is
        copied back, so the host waits once, not once per image. The resize stays OpenCV's, on the
        host, because its fixed-point bilinear is what the authors' numbers were made with."""
        pictures = [pp.depth_to_uint8(d, p.height, p.width) for p, d in zip(batch, depths, strict=True)]
        return [pp.resize_short_side(picture.cpu().numpy()) for picture in pictures]

    @torch.inference_mode()
    def score_crops(self, rgb_crops: np.ndarray, depth_crops: np.ndarray, return_attention: bool = False):
        """DGIQA on uint8 crops (N, 224, 224, 3) and (N, 224, 224) -> (N,) scores (and attention).

        Runs in chunks of ``max_crops`` so that memory stays bounded whatever N is.
        """
        scores, attention = [], {"cross": [], "refine": []}
        for start in range(0, len(rgb_crops), self.max_crops):
            chunk = slice(start, start + self.max_crops)
            rgb = pp.normalize_uint8(self.to_device(rgb_crops[chunk]))
            depth = pp.normalize_uint8(self.to_device(depth_crops[chunk])[..., None].expand(-1, -1, -1, 3))
            with autocast(self.device, self.precision):
                out = self.model(rgb, depth, return_attention=return_attention)
            if return_attention:
                out, maps = out
                for key, value in maps.items():
                    attention[key].append(value.float())
            scores.append(out.float())
        if return_attention:
            return torch.cat(scores), {k: torch.cat(v) for k, v in attention.items()}
        return torch.cat(scores)

    # -- whole images ----------------------------------------------------------------------------

    def score_batch(self, batch: list[PreparedImage]) -> list[ScoreResult]:
        """Score prepared pictures together: depth batched by shape, all their crops through the model at once."""
        rgb_crops = np.concatenate([p.rgb_crops for p in batch])
        if self.arch == "life-iqa":
            return self.results(batch, self.score_rgb_crops(rgb_crops).cpu())
        frames = self.depth_frames(batch, self.depth_maps([p.depth_input for p in batch]))
        depth_crops = np.concatenate([pp.cut_crops(f, p.positions) for p, f in zip(batch, frames, strict=True)])
        return self.results(batch, self.score_crops(rgb_crops, depth_crops).cpu())

    @torch.inference_mode()
    def score_rgb_crops(self, rgb_crops: np.ndarray, return_attention: bool = False):
        """Life-IQA on uint8 crops (N, 224, 224, 3) -> (N,) scores (and the decoder's attention, (N, queries, 49))."""
        scores, attention = [], []
        for start in range(0, len(rgb_crops), self.max_crops):
            rgb = pp.normalize_uint8(self.to_device(rgb_crops[start : start + self.max_crops]))
            with autocast(self.device, self.precision):
                out = self.model(rgb, return_attention=return_attention)
            if return_attention:
                out, maps = out
                attention.append(maps.float())
            scores.append(out.float())
        if return_attention:
            return torch.cat(scores), torch.cat(attention)
        return torch.cat(scores)

    def results(self, batch: list[PreparedImage], crop_scores: torch.Tensor) -> list[ScoreResult]:
        """Split a batch's crop scores back into one result per picture."""
        counts = [len(p.positions) for p in batch]
        return [self.result(p, s) for p, s in zip(batch, crop_scores.split(counts), strict=True)]

    def score_prepared(self, prepared: PreparedImage) -> ScoreResult:
        return self.score_batch([prepared])[0]

    def result(self, prepared: PreparedImage, crop_scores: torch.Tensor) -> ScoreResult:
        spread = crop_spread(crop_scores.double().numpy())
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
        if isinstance(item, torch.Tensor):
            return decoded_from_array(tensor_to_uint8(item), "<tensor>")
        if isinstance(item, np.ndarray):
            return decoded_from_array(item)
        if isinstance(item, bytes | bytearray):
            return decode_image(bytes(item), "<bytes>", self.max_pixels)
        if hasattr(item, "convert") and hasattr(item, "size"):  # a PIL image, without importing PIL here
            return decoded_from_array(np.asarray(item.convert("RGB")), "<PIL image>")
        return read_image(item, self.max_pixels)

    def score(self, item: Picture) -> ScoreResult:
        """Score one picture; a bad input gives a result with ``error`` set instead of raising."""
        name = picture_name(item)
        try:
            return self.score_prepared(self.prepare(self.load(item)))
        except ImageError as exc:
            return self.failure(exc.path if name == exc.path else name, exc.reason)
        except Exception as exc:  # one picture's failure must never lose the others' results
            log.debug("scoring %s failed", name, exc_info=True)
            return self.failure(name, f"could not be scored ({type(exc).__name__}: {exc})")

    def score_many(self, items: Iterable[Picture]) -> list[ScoreResult]:
        """Score several pictures, one after the other (``dgiqa batch`` is the fast path for many)."""
        return [self.score(item) for item in items]

    @property
    def settings(self) -> dict:
        """Every setting that changes a score, as output rows record them (``--resume`` refuses a mismatch)."""
        return {
            "model": self.model_name,
            "depth_model": self.depth_model_name,
            "weights_sha256": self.weights.sha256,
            "crops": self.crops,
            "crop_mode": self.crop_mode,
            "seed": self.seed,
            "precision": self.precision,
            "backend": self.backend,
        }


Picture = Union[str, os.PathLike, bytes, np.ndarray, torch.Tensor, "PIL.Image.Image"]  # noqa: F821, UP007


def picture_name(item) -> str:
    """How a picture is named in its result row."""
    if isinstance(item, torch.Tensor):
        return "<tensor>"
    if isinstance(item, np.ndarray):
        return "<array>"
    if isinstance(item, bytes | bytearray):
        return "<bytes>"
    if hasattr(item, "convert") and hasattr(item, "size"):
        return "<PIL image>"
    return os.fsdecode(item) if isinstance(item, os.PathLike) else str(item)


def tensor_to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """A (3, H, W) / (H, W, 3) / (H, W) tensor, uint8 or float in [0, 1], as an (H, W[, 3]) uint8 array."""
    t = tensor.detach().cpu()
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim == 3 and t.shape[0] in (1, 3, 4) and t.shape[-1] not in (3, 4):
        t = t.permute(1, 2, 0)  # CHW -> HWC
    if t.ndim == 3 and t.shape[-1] == 1:
        t = t[..., 0]
    if t.is_floating_point():
        if t.numel() and (t.min() < 0 or t.max() > 1):
            raise ImageError("<tensor>", "a float tensor must hold values in [0, 1] (as ToTensor gives)")
        t = (t * 255).round()
    return t.to(torch.uint8).numpy()


def crop_spread(crop_scores: np.ndarray) -> dict[str, float | None]:
    """The crops' standard deviation (n - 1) and Student's t 95% interval of their mean.

    The crops are a sample of the picture's 224-pixel windows (random ones in the official mode), so the
    interval says how far another draw of crops could move the score. One crop has no spread: blanks.
    """
    n = len(crop_scores)
    if n < 2:
        return {"score_std": None, "score_ci95_low": None, "score_ci95_high": None}
    from scipy import stats

    mean, std = float(np.mean(crop_scores)), float(np.std(crop_scores, ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * std / np.sqrt(n)
    return {"score_std": std, "score_ci95_low": mean - half, "score_ci95_high": mean + half}


def list_models() -> list[str]:
    """Registry names accepted by ``Scorer(weights=...)``."""
    return list(model_entries())
