"""``create_model``: the one way to make a scoring model, as timm's ``create_model`` and pyiqa's ``create_metric``.

A model is the whole pipeline the authors' scripts run: the scoring network and (DGIQA) the Depth
Anything stage, their weights, the backend and precision they run in, and the crops they score::

    model = create_model("dgiqa-koniq", crops=20)
    scores = model(x)        # x: (N, 3, H, W) float RGB in [0, 1], or (N, H, W, 3) uint8 -> (N,) scores

One picture flows: depth map (Depth Anything) -> both frames resized (short side 384; Life-IQA: its
fixed input size) -> N crops at the same places -> the network on all crops in one batch -> mean.
The steps are methods so that the batch engine can run the CPU ones in workers and batch the device
ones across pictures. :class:`~dgiqa_cli.inference.scorer.Scorer` adds inputs of every kind (paths,
bytes, PIL images) and a result row per picture.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from dgiqa_cli.errors import UsageError
from dgiqa_cli.inference import preprocess as pp
from dgiqa_cli.inference.backends import (
    BackendUnavailable,
    OpenVINONetwork,
    accelerate,
    default_cache_dir,
    from_cache,
    pick_backend,
    scoring_streams,
)
from dgiqa_cli.inference.defaults import DEFAULT_CROP_MODE, DEFAULT_CROPS, DEFAULT_SEED
from dgiqa_cli.inference.runtime import host_array, inference_context, pick_device, pick_precision
from dgiqa_cli.io.images import DecodedImage, ImageError, decoded_from_array
from dgiqa_cli.models import DEPTH_ENCODERS, ModelSpec, spec_for
from dgiqa_cli.models.spec import FAMILIES
from dgiqa_cli.weights import AUTHORS_DEPTH_MODEL, LoadedNetwork, WeightsError, load_network
from dgiqa_cli.weights.registry import default_model_name, depth_entry_for_arch, model_entries

if TYPE_CHECKING:  # PyTorch runs the torch backend; networks OpenVINO runs from its cache never import it
    import torch

log = logging.getLogger("dgiqa")

DEFAULT_MAX_CROPS = 128  # crops per forward pass: bounds activation memory whatever the crop count


def default_weights_for(family: str) -> str:
    """The registry name used when only the model family is given."""
    names = [name for name, entry in model_entries().items() if entry.arch == family]
    if not names:
        raise UsageError(f"the registry has no weights for {family}")
    default = default_model_name()
    return default if default in names else names[0]


def load_scoring_weights(weights: str | os.PathLike | None, family: str | None = None, *, load=None) -> LoadedNetwork:
    """The scoring network's weights (a registry name, a file, a Hub folder, ``hf://``), checked to be a family's.

    ``load``: the loader (default :func:`~dgiqa_cli.weights.load_network`; training passes it itself so that its
    networks are its own)."""
    if family is not None:
        spec_for(family)  # a UsageError naming the families
    loaded = (load or load_network)(weights or default_weights_for(family or "dgiqa"), "model")
    if loaded.arch not in FAMILIES or (family is not None and loaded.arch != family):
        wanted = family or " or ".join(FAMILIES)
        raise WeightsError(f"{loaded.label}: holds {loaded.arch} weights, not {wanted} weights")
    return loaded


def load_depth_stage(
    spec: ModelSpec, trained_with: str | None, depth_model: str | None = None, depth_weights=None, *, load=None
) -> tuple[str | None, LoadedNetwork | None]:
    """The Depth Anything stage a family needs: by default the encoder its weights were trained with.

    Returns ``(encoder, weights)``, or ``(None, None)`` for a family without a depth stage. ``load``: the
    loader (default :func:`~dgiqa_cli.weights.load_network`); training passes its own so that its networks
    are its own.
    """
    if not spec.needs_depth:
        if depth_model or depth_weights:
            raise UsageError(f"{spec.title} has no depth stage: a depth model or depth weights do not apply")
        return None, None
    trained_with = trained_with or AUTHORS_DEPTH_MODEL
    encoder = depth_model or trained_with
    if encoder not in DEPTH_ENCODERS:
        raise UsageError(f"unknown depth model {depth_model!r}; choose one of {', '.join(DEPTH_ENCODERS)}")
    if encoder != trained_with:
        log.warning(
            "depth model %s differs from the %s these %s weights were trained with: scores will shift",
            encoder,
            trained_with,
            spec.title,
        )
    source = depth_weights or depth_entry_for_arch(encoder).name
    return encoder, (load or load_network)(source, "depth", arch=f"depth-anything-{encoder}")


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


class IQAModel:
    """A loaded scoring pipeline; make one with :func:`create_model`.

    ``model(x)`` scores a batch of pictures; the step methods (``prepare``, ``depth_maps``,
    ``score_crops``...) are what the batch engine, explain and the server run one by one.
    """

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        *,
        family: str | None = None,
        device: str | None = None,
        precision: str | None = None,
        backend: str | None = "auto",
        depth_model: str | None = None,
        depth_weights: str | os.PathLike | None = None,
        crops: int = DEFAULT_CROPS,
        crop_mode: str = DEFAULT_CROP_MODE,
        seed: int = DEFAULT_SEED,
        max_crops: int = DEFAULT_MAX_CROPS,
    ):
        if crops < 1:
            raise UsageError(f"crops must be at least 1 (got {crops})")
        if crop_mode not in pp.CROP_MODES:
            raise UsageError(f"unknown crop mode {crop_mode!r}; choose one of {', '.join(pp.CROP_MODES)}")
        self.crops, self.crop_mode, self.seed, self.max_crops = crops, crop_mode, seed, max_crops
        self.device = pick_device(device or "auto")
        self.precision = pick_precision(precision, self.device)
        # What runs the networks: OpenVINO on the CPU (fused graphs, oneDNN, bf16), PyTorch elsewhere.
        self.backend = pick_backend(backend or os.environ.get("DGIQA_BACKEND") or "auto", self.device)

        # OpenVINO with its compiled networks cached: the PyTorch networks are built only if something asks.
        load = partial(load_network, lazy=True) if self.backend == "openvino" else None
        self.weights: LoadedNetwork = load_scoring_weights(weights, family, load=load)
        self.spec: ModelSpec = spec_for(self.weights.arch)
        self.model_name, self.arch, self.card = self.weights.label, self.weights.arch, self.weights.card
        # Life-IQA's fixed (H, W) frame: the card's when it records one, else the family's.
        self.input_size = self.spec.frame_size(self.card.config)
        self.network = self._accelerate(self.weights)
        self.depth_model_name, self.depth_weights = load_depth_stage(
            self.spec, self.card.depth_model, depth_model, depth_weights, load=load
        )
        self.depth = None
        if self.depth_weights is not None:
            self.depth = self._accelerate(self.depth_weights)

    def _accelerate(self, weights: LoadedNetwork):
        """The network as the backend runs it: the PyTorch module, or compiled by OpenVINO: from its cache
        without building the module when the cache has it, else converted once (and cached on disk).

        A network OpenVINO cannot take stays with PyTorch (one warning), and the backend says so.
        """
        if self.backend != "openvino":
            return weights.network.to(self.device)
        # The scoring network sees one picture's crops at a time on the CPU (the batch engine's default), split
        # between its streams: that part is compiled as a fixed shape. Depth inputs vary in shape with the
        # picture's, one at a time: dynamic, one stream on every core.
        scoring = weights.arch in FAMILIES
        streams = scoring_streams() if scoring else 1
        part = self.crops // streams if self.crops % streams == 0 and self.crops <= self.max_crops else None
        fixed = {"precision": self.precision, "fixed_batch": part if scoring else None, "streams": streams}
        try:
            fast = from_cache(weights.arch, weights.sha256, lambda: weights.network, **fixed)
        except BackendUnavailable:  # accelerate below says why, once, and keeps PyTorch
            fast = None
        else:
            if fast is not None:
                return fast
            log.warning(
                "converting %s (%s) for OpenVINO: once for these weights on this machine, then cached in %s",
                weights.label,
                weights.arch,
                default_cache_dir(),
            )
        network = weights.network.to(self.device)
        fast = accelerate(network, weights.arch, weights_sha256=weights.sha256, **fixed)
        if fast is network:
            self.backend = "torch"
        return fast

    def compile(self) -> None:
        """``torch.compile`` both networks: slower first batches, faster after (worth it for big runs).

        Networks OpenVINO runs are compiled already: they are left as they are.
        """
        if self.backend == "openvino":
            return
        import torch

        self.network = torch.compile(self.network)
        if self.depth is not None:
            self.depth = torch.compile(self.depth, dynamic=True)

    # -- what the scores mean ----------------------------------------------------------------------

    @property
    def score_range(self) -> tuple[float | None, float | None]:
        """The range scores fall in (the weights' card, else the family's); ``(None, None)`` when unbounded."""
        return self.card.score_range if self.card.score_range != (None, None) else self.spec.score_range

    @property
    def lower_better(self) -> bool:
        """Whether a lower score means a better picture (the weights' card says; False for the published ones)."""
        return not self.card.higher_is_better

    @property
    def scale(self) -> str:
        """The score scale in words, printed beside every number."""
        return self.spec.describe_scale(self.score_range, self.card.trained_on, self.lower_better)

    @property
    def exact(self) -> bool:
        """fp32 reproduces the authors' arithmetic everywhere; half precision takes the fast paths."""
        return self.precision == "fp32"

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

    # -- the steps ---------------------------------------------------------------------------------

    def prepare(self, image: DecodedImage, keep_rgb: bool = True) -> PreparedImage:
        """CPU work for one picture: depth input, the frame, the crop positions and the RGB crops.

        ``keep_rgb=False`` drops the decoded picture once it is no longer needed
        (the batch engine holds many prepared images at once).
        """
        if self.input_size is not None:
            frame = pp.resize_exact(image.rgb, self.input_size)
        else:
            frame = pp.resize_short_side(image.rgb)
        depth_input = pp.depth_input(image.rgb, exact=self.exact) if self.spec.needs_depth else None
        positions = pp.crop_positions(frame.shape[0], frame.shape[1], self.crops, self.crop_mode, self.seed)
        rgb = image.rgb if keep_rgb else None
        crops = pp.cut_crops(frame, positions)  # here, so that batch workers cut them in parallel
        return PreparedImage(
            image.path, image.width, image.height, rgb, depth_input, frame, positions, crops, image.decoder
        )

    def to_device(self, array: np.ndarray) -> torch.Tensor:
        """Host array -> device tensor; through pinned memory and without blocking on CUDA."""
        import torch

        tensor = torch.from_numpy(array)
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def _forward(self, network, inputs: list, arrays: bool, **kwargs):
        """One pass of ``network``: NumPy ``arrays`` go to an OpenVINO network as they are (that path never imports
        PyTorch); tensors (a PyTorch network, or attention maps, which only it gives) run in inference mode with
        the precision's settings."""
        if arrays:
            return network(*inputs)
        import torch

        with torch.inference_mode(), inference_context(self.device, self.precision):
            return network(*inputs, **kwargs)

    def depth_maps(self, depth_inputs: list[np.ndarray]) -> list:
        """Relative inverse depth (h, w) per input, float32: an array from an OpenVINO network, a tensor on the
        device from a PyTorch one. Inputs of one shape share a batch."""
        by_shape: dict[tuple, list[int]] = {}
        for i, x in enumerate(depth_inputs):
            by_shape.setdefault(x.shape, []).append(i)
        arrays = isinstance(self.depth, OpenVINONetwork)
        out: list = [None] * len(depth_inputs)
        for indices in by_shape.values():
            batch = np.stack([depth_inputs[i] for i in indices])
            depths = self._forward(self.depth, [batch if arrays else self.to_device(batch)], arrays)
            for i, depth in zip(indices, depths if arrays else depths.float(), strict=True):
                out[i] = depth
        return out

    def depth_map(self, depth_input: np.ndarray):
        """Relative inverse depth (h, w), float32 (see :meth:`depth_maps`), for one depth input."""
        return self.depth_maps([depth_input])[0]

    def depth_frame(self, prepared: PreparedImage, depth) -> np.ndarray:
        """The authors' depth picture at full size, then resized like the RGB frame: (H', W') uint8."""
        return self.depth_frames([prepared], [depth])[0]

    def depth_frames(self, batch: list[PreparedImage], depths: list) -> list[np.ndarray]:
        """``depth_frame`` for a batch. Tensors stay on their device until every picture is queued, so the host
        waits once, not once per image; arrays take the NumPy twin. The resize to the frame stays OpenCV's, on
        the host, because its fixed-point bilinear is what the authors' numbers were made with."""
        pictures = [
            pp.depth_to_uint8_array(d, p.height, p.width)
            if isinstance(d, np.ndarray)
            else pp.depth_to_uint8(d, p.height, p.width)
            for p, d in zip(batch, depths, strict=True)
        ]
        return [pp.resize_short_side(host_array(picture)) for picture in pictures]

    def network_input(self, crops: np.ndarray, arrays: bool):
        """uint8 crops (N, 224, 224, 3), or depth crops (N, 224, 224) (replicated to three channels as the
        authors do), normalised for the network: a float32 array when ``arrays`` (an OpenVINO network: torch
        operations here would wake PyTorch's threads, which then take cores from OpenVINO's; 7% of DGIQA's time
        on 2 cores, measured), else a tensor on the device. The same arithmetic either way."""
        if arrays:
            if crops.ndim == 3:
                crops = np.broadcast_to(crops[..., None], (*crops.shape, 3))
            return pp.normalize_uint8_array(crops)
        tensor = self.to_device(crops)  # one channel crosses to the device, replicated there
        return pp.normalize_uint8(tensor[..., None].expand(-1, -1, -1, 3) if tensor.ndim == 3 else tensor)

    def score_crops(self, rgb_crops: np.ndarray, depth_crops: np.ndarray, return_attention: bool = False):
        """DGIQA on uint8 crops (N, 224, 224, 3) and (N, 224, 224) -> (N,) float32 scores, and with
        ``return_attention`` its attention maps (``{"cross": ..., "refine": ...}``, float32 arrays).

        Runs in chunks of ``max_crops`` so that memory stays bounded whatever N is.
        """
        return self._score_chunks((rgb_crops, depth_crops), return_attention)

    def score_rgb_crops(self, rgb_crops: np.ndarray, return_attention: bool = False):
        """Life-IQA on uint8 crops (N, 224, 224, 3) -> (N,) float32 scores (and the decoder's attention,
        (N, queries, 49))."""
        return self._score_chunks((rgb_crops,), return_attention)

    def _score_chunks(self, crops: tuple[np.ndarray, ...], return_attention: bool):
        """The scoring network on ``crops`` (one array per input), ``max_crops`` at a time; arrays on the host."""
        arrays = isinstance(self.network, OpenVINONetwork) and not return_attention
        scores, maps = [], []
        for start in range(0, len(crops[0]), self.max_crops):
            inputs = [self.network_input(c[start : start + self.max_crops], arrays) for c in crops]
            out = self._forward(self.network, inputs, arrays, return_attention=return_attention)
            if return_attention:
                out, attention = out
                maps.append(attention)
            scores.append(host_array(out))
        scores = np.concatenate(scores)
        if not return_attention:
            return scores
        if isinstance(maps[0], dict):  # DGIQA: Depth-CAR's cross and refine attention
            return scores, {kind: np.concatenate([host_array(m[kind]) for m in maps]) for kind in maps[0]}
        return scores, np.concatenate([host_array(m) for m in maps])

    def crop_scores(self, batch: list[PreparedImage]) -> list[np.ndarray]:
        """Each picture's crop scores (float32 arrays): depths batched by shape, all crops through the network
        at once."""
        rgb_crops = np.concatenate([p.rgb_crops for p in batch])
        if not self.spec.needs_depth:
            scores = self.score_rgb_crops(rgb_crops)
        else:
            frames = self.depth_frames(batch, self.depth_maps([p.depth_input for p in batch]))
            depth_crops = np.concatenate([pp.cut_crops(f, p.positions) for p, f in zip(batch, frames, strict=True)])
            scores = self.score_crops(rgb_crops, depth_crops)
        return np.split(scores, np.cumsum([len(p.positions) for p in batch])[:-1])

    def __call__(self, x: torch.Tensor | np.ndarray | Sequence) -> torch.Tensor:
        """Score a batch: (N, 3, H, W) float in [0, 1] or (N, H, W, 3) uint8 (or a list of pictures) -> (N,) float32.

        Each score equals ``Scorer.score`` on the same pixels; a float value v is the 8-bit sample round(255 v).
        """
        import torch

        if isinstance(x, torch.Tensor | np.ndarray) and x.ndim != 4:
            raise UsageError(f"a model scores a batch: (N, 3, H, W) or (N, H, W, 3), not shape {tuple(x.shape)}")
        pictures = [decoded_from_array(to_uint8_rgb(item), "<tensor>") for item in x]
        if not pictures:
            return torch.empty(0)
        scores = self.crop_scores([self.prepare(p, keep_rgb=False) for p in pictures])
        return torch.from_numpy(np.stack([s.mean() for s in scores]))

    def __repr__(self) -> str:
        depth = f", depth={self.depth_model_name}" if self.depth_model_name else ""
        return (
            f"IQAModel({self.model_name!r}, family={self.arch}{depth}, crops={self.crops}, "
            f"device={self.device}, precision={self.precision}, backend={self.backend})"
        )


def create_model(
    weights: str | os.PathLike | None = None,
    *,
    family: str | None = None,
    device: str | None = None,
    precision: str | None = None,
    backend: str | None = "auto",
    depth_model: str | None = None,
    depth_weights: str | os.PathLike | None = None,
    crops: int = DEFAULT_CROPS,
    crop_mode: str = DEFAULT_CROP_MODE,
    seed: int = DEFAULT_SEED,
    max_crops: int = DEFAULT_MAX_CROPS,
) -> IQAModel:
    """Load a scoring model: ``weights`` is a registry name (default ``dgiqa-koniq``; see ``list_weights()``),
    a ``.pth`` / ``.safetensors`` file, a Hub-format folder or ``hf://owner/repo[/file]``.

    ``family``: ``dgiqa`` or ``life-iqa``, checked against the weights (and choosing the default weights
    when none are named). ``device``: ``cpu``, ``cuda[:N]``, ``mps``, default the best one present.
    ``precision``: ``auto`` (bf16 where the hardware computes it: GPUs, CPUs with AVX-512 BF16 or AMX; fp32 on
    other CPUs; or ``$DGIQA_PRECISION``), ``fp32`` (the exact mode: the authors' arithmetic), ``bf16``, ``fp16``.
    ``backend``: ``auto`` (OpenVINO on the CPU, PyTorch on a GPU; or ``$DGIQA_BACKEND``), ``torch``, ``openvino``.
    DGIQA only: ``depth_model`` (``vits``/``vitb``/``vitl``, default the one the weights were trained with) and
    ``depth_weights``. ``crops`` / ``crop_mode`` / ``seed`` choose the
    224-pixel crops (``official`` = the authors' seeded random positions).
    """
    return IQAModel(
        weights,
        family=family,
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


def to_uint8_rgb(item) -> np.ndarray:
    """A picture as (H, W[, 3]) uint8: tensors (3, H, W) / (H, W, 3) / (H, W), uint8 or float in [0, 1]
    (turned into 8-bit samples by rounding 255 v), or NumPy arrays alike."""
    a = host_array(item)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (3, 4):
        a = a.transpose(1, 2, 0)  # CHW -> HWC
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if np.issubdtype(a.dtype, np.floating):
        if a.size and (a.min() < 0 or a.max() > 1):
            raise ImageError("<tensor>", "a float tensor must hold values in [0, 1] (as ToTensor gives)")
        a = (a * 255).round()
    return np.ascontiguousarray(a.astype(np.uint8))
