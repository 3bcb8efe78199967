"""Our networks through OpenVINO on the CPU: converted once, cached on disk, compiled per process.

Cache layout (``default_cache_dir()``: ``$DGIQA_CACHE`` or the per-user cache
folder, ``.../dgiqa/openvino``)::

    <cache>/ir/<key>/model.xml, model.bin   the converted graph (fp32 weights, dynamic shapes)
    <cache>/ir/<key>/entry.json             what the key was made of + the sha256 of both files

``key`` is a digest of the architecture, the weights' sha256, the graph's
input spec (names and dynamic dimensions), the OpenVINO version, the dgiqa
version and the cache format. The IR holds fp32 weights whatever precision runs
it: the precision is chosen when compiling (``INFERENCE_PRECISION_HINT``), so
fp32 and bf16 share one entry. Entries are written to a temporary folder and
moved into place in one ``os.replace``; on reading, both files are checked
against the recorded digests, and an entry that fails (truncated, edited,
half-written by a crash) is deleted and rebuilt, never used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dgiqa_cli.inference.backends.signatures import graph_io, input_spec
from dgiqa_cli.inference.runtime import is_tensor
from dgiqa_cli.io.atomic import atomic_path, atomic_write
from dgiqa_cli.version import __version__
from dgiqa_cli.weights.digests import cache_root, file_sha256, sha256_of

if TYPE_CHECKING:  # PyTorch is imported where a PyTorch network is converted: a start from the cache never does
    from torch import nn

    from dgiqa_cli.inference.backends.graphs import NetworkGraph

log = logging.getLogger("dgiqa")

CACHE_FORMAT = 1
OV_PRECISIONS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
_CAPABILITY = {"bf16": "BF16", "fp16": "FP16", "fp32": "FP32"}


class BackendUnavailable(RuntimeError):
    """OpenVINO cannot run this network here; the caller keeps PyTorch."""


def default_cache_dir() -> Path:
    """``openvino`` in dgiqa's cache (``$DGIQA_CACHE``, else the per-user cache folder)."""
    return cache_root() / "openvino"


_core = None
_core_lock = threading.Lock()


def core():
    """One ``openvino.Core`` per process (it owns the CPU plugin and its thread pools)."""
    global _core
    with _core_lock:
        if _core is None:
            import openvino

            _core = openvino.Core()
        return _core


def openvino_problem() -> str | None:
    """Why OpenVINO cannot run on this machine's CPU, or None when it can."""
    try:
        devices = core().available_devices
    except Exception as exc:  # missing, half-installed, or an incompatible wheel
        return f"OpenVINO is not usable ({type(exc).__name__}: {exc})"
    if "CPU" not in devices:
        return "OpenVINO has no CPU plugin for this processor"
    return None


def cpu_capabilities() -> set[str]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of the CPU, e.g. ``{"FP32", "BF16", "INT8"}``."""
    return set(core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def supports_precision(precision: str) -> bool:
    """Whether the CPU runs ``precision`` natively (bf16: AVX-512 BF16 or AMX; fp16: AVX-512 FP16)."""
    return precision in OV_PRECISIONS and _CAPABILITY[precision] in cpu_capabilities()


def openvino_version() -> str:
    import openvino

    return openvino.get_version()


def state_digest(module: nn.Module) -> str:
    """A sha256 of a module's state dict (names, shapes, bytes), for weights without a file digest."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(data.shape)}:{data.dtype};".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")  # 0-d too
    return digest.hexdigest()


def entry_fields(arch: str, weights_sha256: str) -> dict:
    """What a cached IR depends on; the cache key is a digest of exactly this (no network needed to compute it)."""
    return {
        "format": CACHE_FORMAT,
        "arch": arch,
        "weights_sha256": weights_sha256,
        "inputs": input_spec(graph_io(arch)[0]),
        "openvino": openvino_version(),
        "dgiqa": __version__,
    }


def entry_key(fields: dict) -> str:
    blob = json.dumps(fields, sort_keys=True).encode()
    return f"{fields['arch']}-{hashlib.sha256(blob).hexdigest()[:24]}"


def entry_folder(arch: str, weights_sha256: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the cache entry of ``arch`` with these weights lives (whether or not it is there yet)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "ir" / entry_key(entry_fields(arch, weights_sha256))


def convert(graph: NetworkGraph):
    """``openvino.convert_model`` on the traced graph, inputs named and their dynamic dimensions declared."""
    import openvino
    import torch

    shapes = [openvino.PartialShape([-1 if d is None else d for d in i.shape]) for i in graph.inputs]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic: the graph is checked by tests
        model = openvino.convert_model(graph.module, example_input=graph.examples(), input=shapes)
    for port, spec in zip(model.inputs, graph.inputs, strict=True):
        port.get_tensor().set_names({spec.name})
    model.outputs[0].get_tensor().set_names({graph.output})
    return model


def check_conversion(graph: NetworkGraph, model, tolerance: float = 1e-4) -> None:
    """Raise when the converted ``model`` disagrees with PyTorch on inputs of another shape than the traced
    ones (a tracer that froze a shape or a value into a constant converts "successfully" into a wrong graph)."""
    import torch

    inputs = graph.checks()
    with torch.inference_mode():
        expected = graph.module(*inputs).float().numpy()
    compiled = core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = np.asarray(compiled([x.numpy() for x in inputs])[0])
    if got.shape != expected.shape:
        raise ValueError(f"the converted {graph.arch} gives shape {got.shape} where PyTorch gives {expected.shape}")
    error = float(np.abs(got - expected).max()) / max(1.0, float(np.abs(expected).max()))
    if not error <= tolerance:
        raise ValueError(f"the converted {graph.arch} is off PyTorch by {error:.2g} (more than {tolerance:g})")


def _verified(folder: Path, fields: dict) -> bool:
    """Whether ``folder``'s entry matches ``fields`` and its files their recorded digests (hashed once per version
    of each file: a file written since its last check is hashed again)."""
    try:
        entry = json.loads((folder / "entry.json").read_text())
        if entry.get("fields") != fields or set(entry["files"]) != {"model.xml", "model.bin"}:
            return False
        return all(file_sha256(folder / name) == expected for name, expected in entry["files"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _sound_entry(folder: Path, fields: dict) -> bool:
    """Whether ``folder`` holds a verified entry for ``fields``. A damaged one is deleted (to be rebuilt), never
    trusted."""
    if not folder.exists():
        return False
    if _verified(folder, fields):
        return True
    log.info("OpenVINO cache entry %s failed its check: rebuilding it", folder)
    shutil.rmtree(folder, ignore_errors=True)
    return False


def _write_entry(folder: Path, model, fields: dict) -> None:
    """Save ``model`` as ``folder`` atomically: a temporary folder beside it, then one ``os.replace``."""
    import openvino

    root = folder.parent
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=root))
    try:
        openvino.save_model(model, str(staging / "model.xml"), compress_to_fp16=False)
        files = {name: sha256_of(staging / name) for name in ("model.xml", "model.bin")}
        (staging / "entry.json").write_text(json.dumps({"fields": fields, "files": files}, indent=2))
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):  # another process finished the same entry first: keep theirs
            os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_or_convert(graph: NetworkGraph, weights_sha256: str, cache_dir: Path | None = None):
    """The OpenVINO model for ``graph``: from the disk cache when a verified entry exists, else converted
    (and cached). Returns ``(model, source)`` with source ``"cache"`` or ``"converted"``."""
    fields, folder = entry_fields(graph.arch, weights_sha256), entry_folder(graph.arch, weights_sha256, cache_dir)
    if _sound_entry(folder, fields):
        with contextlib.suppress(OSError, RuntimeError):  # unreadable after all: converted again below
            return core().read_model(str(folder / "model.xml")), "cache"
    started = time.perf_counter()
    model = convert(graph)
    check_conversion(graph, model)
    log.info("converted %s for OpenVINO in %.1f s", graph.arch, time.perf_counter() - started)
    try:
        _write_entry(folder, model, fields)
    except OSError as exc:  # a read-only or full disk costs the next start its speed, not this run
        log.info("could not cache the converted %s in %s: %s", graph.arch, folder.parent, exc)
    return model, "converted"


def compile_config(precision: str, threads: int | None = None, streams: int = 1) -> dict:
    """CPU plugin settings: the precision set explicitly (OpenVINO defaults to bf16 on CPUs that have it,
    which would break fp32's promise), all cores unless ``threads`` is given, shared by ``streams`` (one: a
    call runs on all of them; more: each stream runs its part of a call on its share of the cores)."""
    config = {"INFERENCE_PRECISION_HINT": OV_PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY"}
    if streams > 1:
        config.update({"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": int(streams)})
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


def scoring_streams() -> int:
    """Streams for a scoring network: two where there are two cores or more. A picture's crops are split between
    them, each half on half of the cores, with no waiting on each other inside a layer: 8% faster than one
    stream on all cores on the 2-core development machine (DGIQA, 20 crops, bf16; identical scores)."""
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def _as_array(value) -> np.ndarray:
    if is_tensor(value):
        value = value.detach().cpu().float().contiguous().numpy()
    return np.ascontiguousarray(value, dtype=np.float32)


class OpenVINONetwork:
    """Runs a network through OpenVINO with the PyTorch module's call signature.

    Like in, like out: NumPy arrays in, float32 arrays out (the scoring path, which never imports PyTorch);
    tensors in, float32 CPU tensors out. ``return_attention=True`` (``dgiqa explain``) and any other keyword go to
    the PyTorch ``module``: the compiled graph returns scores only. ``module`` is either given or made by
    ``load_module`` when first needed (a network compiled from the cache never needs it to score).

    ``streams`` (as the network was compiled with, :func:`compile_config`): a call's batch is split into that
    many parts (fewer for a smaller batch), run at once, one per stream, and joined in order.
    ``compile_variant(batch)`` compiles the graph with every input's batch fixed to ``batch`` (None: dynamic).
    ``fixed_batch`` (a picture's crops, per stream) is compiled now and serves the parts of that batch: OpenVINO
    plans a fixed shape once, when it compiles or imports it rather than at the first call (5% faster,
    measured); other batches take the dynamic graph, compiled when first needed."""

    backend = "openvino"

    def __init__(
        self,
        module: nn.Module | None,
        arch: str,
        compile_variant: Callable[[int | None], tuple],
        precision: str,
        source: str,
        load_module: Callable[[], nn.Module] | None = None,
        fixed_batch: int | None = None,
        streams: int = 1,
    ):
        self.arch, self.precision, self.source, self.fixed_batch = arch, precision, source, fixed_batch
        self.streams = streams
        self._module, self._load_module, self._compile_variant = module, load_module, compile_variant
        self._inputs = len(graph_io(arch)[0])
        self._variants: dict[int | None, tuple] = {}  # batch -> (compiled, an infer request per stream, its blob)
        self._lock = threading.Lock()  # one set of infer requests per variant: one call at a time
        self._variant(fixed_batch)

    def _variant(self, batch: int | None) -> tuple:
        if batch not in self._variants:
            compiled, backing = self._compile_variant(batch)
            requests = [compiled.create_infer_request() for _ in range(self.streams)]
            self._variants[batch] = (compiled, requests, backing)
        return self._variants[batch]

    @property
    def compiled(self):
        """The compiled model that serves ``fixed_batch`` (the dynamic one when there is none)."""
        return self._variants[self.fixed_batch][0]

    @property
    def compiled_batches(self) -> list[int | None]:
        """The batches compiled so far, in order (None: the dynamic graph)."""
        return list(self._variants)

    @property
    def module(self) -> nn.Module:
        """The PyTorch network, built on first use when it was not given."""
        with self._lock:
            if self._module is None:
                self._module = self._load_module()
            return self._module

    def __call__(self, *inputs, return_attention: bool = False, **kwargs):
        if return_attention or kwargs:
            return self.module(*inputs, return_attention=return_attention, **kwargs)
        if len(inputs) != self._inputs:
            raise TypeError(f"{self.arch} takes {self._inputs} tensors, got {len(inputs)}")
        arrays = [_as_array(x) for x in inputs]
        with self._lock:
            result = self._infer(arrays)
        if any(is_tensor(x) for x in inputs):
            import torch

            return torch.from_numpy(result)
        return result

    def _infer(self, arrays: list[np.ndarray]) -> np.ndarray:
        """The compiled graph on ``arrays``: split into one part per stream, run at once, joined in order."""
        size = len(arrays[0]) if arrays[0].ndim else 1
        parts = [part for part in np.array_split(np.arange(size), min(self.streams, max(size, 1))) if len(part)]
        lengths = {len(part) for part in parts}
        batch = lengths.pop() if len(lengths) == 1 else None
        requests = self._variant(batch if batch == self.fixed_batch else None)[1]
        if len(parts) <= 1:
            return np.asarray(requests[0].infer(arrays, share_inputs=True, share_outputs=False)[0])
        for request, part in zip(requests, parts, strict=False):
            request.start_async([x[part[0] : part[-1] + 1] for x in arrays], share_inputs=True)
        for request in requests[: len(parts)]:
            request.wait()
        return np.concatenate([request.get_output_tensor(0).data.copy() for request in requests[: len(parts)]])

    def __repr__(self) -> str:
        batch = f", batch {self.fixed_batch}" if self.fixed_batch else ""
        batch += f", {self.streams} streams" if self.streams > 1 else ""
        return f"OpenVINONetwork({self.arch}, {self.precision}{batch}, from {self.source})"


def openvino_network(
    module: nn.Module,
    arch: str,
    *,
    precision: str,
    weights_sha256: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    threads: int | None = None,
    fixed_batch: int | None = None,
    streams: int = 1,
) -> OpenVINONetwork:
    """Convert (or load from the cache) and compile ``module``; raises :class:`BackendUnavailable`."""
    from dgiqa_cli.inference.backends.graphs import network_graph

    check_usable(precision)
    graph = network_graph(module.eval(), arch)
    weights_sha256 = weights_sha256 or state_digest(module)
    model, source = load_or_convert(graph, weights_sha256, cache_dir)
    folder, config = entry_folder(arch, weights_sha256, cache_dir), compile_config(precision, threads, streams)

    def in_memory(batch):  # the entry could not be written (a full or read-only disk)
        return core().compile_model(with_batch(model.clone(), batch), "CPU", config), None

    # Compiled through the entry when it was saved, so that its compiled blob is saved now, not by the next start.
    variant = partial(compile_entry, folder, config) if folder.exists() else in_memory
    return OpenVINONetwork(module, arch, variant, precision, source, fixed_batch=fixed_batch, streams=streams)


def check_usable(precision: str) -> None:
    """Raise :class:`BackendUnavailable` unless OpenVINO runs here in ``precision``."""
    problem = openvino_problem()
    if problem:
        raise BackendUnavailable(problem)
    if precision not in OV_PRECISIONS:
        raise BackendUnavailable(f"precision {precision!r} has no OpenVINO CPU equivalent")
    if precision != "fp32" and not supports_precision(precision):
        raise BackendUnavailable(f"this CPU has no native {precision} (OpenVINO capabilities: {cpu_capabilities()})")


def cached_network(
    arch: str,
    weights_sha256: str,
    load_module: Callable[[], nn.Module],
    *,
    precision: str,
    cache_dir: str | os.PathLike | None = None,
    threads: int | None = None,
    fixed_batch: int | None = None,
    streams: int = 1,
) -> OpenVINONetwork | None:
    """The network compiled from its verified cache entry, without building the PyTorch module; None when
    there is no entry (or a damaged one, then deleted). ``load_module`` makes the PyTorch module if a caller
    asks for what only it gives (attention maps). Raises :class:`BackendUnavailable`."""
    check_usable(precision)
    folder = entry_folder(arch, weights_sha256, cache_dir)
    if not _sound_entry(folder, entry_fields(arch, weights_sha256)):
        return None
    variant = partial(compile_entry, folder, compile_config(precision, threads, streams))
    return OpenVINONetwork(
        None, arch, variant, precision, "cache", load_module, fixed_batch=fixed_batch, streams=streams
    )


def with_batch(model, batch: int | None):
    """``model`` with every input's first dimension fixed to ``batch`` (as it is when None)."""
    if batch is not None:
        import openvino

        model.reshape(
            {port: openvino.PartialShape([batch, *list(port.get_partial_shape())[1:]]) for port in model.inputs}
        )
    return model


def compiled_variant(config: dict, batch: int | None = None) -> dict:
    """What a compiled blob is made with: ``config``, and the fixed batch when there is one."""
    return config if batch is None else {**config, "batch": batch}


def compiled_blob(folder: Path, config: dict, batch: int | None = None) -> Path:
    """Where an entry's network compiled with ``config`` (and ``batch``) is saved; its record is beside it
    (``.json``)."""
    tag = hashlib.sha256(json.dumps(compiled_variant(config, batch), sort_keys=True).encode()).hexdigest()[:12]
    return folder / f"compiled-{tag}.blob"


def compile_entry(folder: Path, config: dict, batch: int | None = None):
    """A verified entry's IR compiled with ``config`` (and its inputs' batch fixed to ``batch``, unless None):
    imported from the entry's compiled blob for that pair when it has a sound one (OpenVINO's compile step paid
    once per machine), else compiled and its blob saved for the next start.
    Returns ``(compiled model, backing)``: an imported model runs from the blob mapped into memory (a third of
    the time of reading it, and its pages shared between processes), which ``backing`` holds; the caller
    keeps it as long as the model (OpenVINO does not).

    OpenVINO's own ``CACHE_DIR`` would do the same but runs a damaged blob silently (wrong scores), so the blob
    is ours: written atomically, its sha256 recorded beside it and checked (once per version of the file)."""
    variant = compiled_variant(config, batch)
    blob = compiled_blob(folder, config, batch)
    record = blob.with_suffix(".json")
    try:
        saved = json.loads(record.read_text())
        sound = saved["config"] == variant and saved["openvino"] == openvino_version()
        if sound and saved["sha256"] == file_sha256(blob):
            import openvino

            mapped = np.memmap(blob, dtype=np.uint8, mode="c")  # copy-on-write: OpenVINO asks for a writable array
            return core().import_model(openvino.Tensor(mapped, shared_memory=True), "CPU", config), mapped
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        pass  # none yet, or damaged: compiled below and saved anew
    compiled = core().compile_model(with_batch(core().read_model(str(folder / "model.xml")), batch), "CPU", config)
    try:
        exported = compiled.export_model()  # bytes, or io.BytesIO in recent OpenVINO releases
        with atomic_path(blob) as temp:
            temp.write_bytes(exported.getbuffer() if hasattr(exported, "getbuffer") else exported)
        del exported
        saved = {"config": variant, "openvino": openvino_version(), "sha256": file_sha256(blob)}
        with atomic_write(record, "w") as fh:
            json.dump(saved, fh)
    except (OSError, RuntimeError, TypeError, ValueError) as exc:  # a full disk: the next start compiles again
        log.debug("could not save the compiled network in %s: %s", folder, exc)
    return compiled, None
