"""The authors' checkpoints -> the Hub format (``dgiqa weights import``).

The converted folder holds the tensors exactly as in the source checkpoint
(less buffers that are recomputed, and for Life-IQA one copy of each backbone
tensor: ``checkpoint_filter('life-iqa')`` restores the twins), with a
``config.json`` saying what they are and where they came from. A release is
named only when the file's sha256 proves it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from dgiqa_cli.errors import UnknownWeightsError, WeightsError
from dgiqa_cli.models import ARCHITECTURES, DEPTH_ENCODERS, SPECS, checkpoint_filter, detect_architecture
from dgiqa_cli.version import __version__
from dgiqa_cli.weights.digests import sha256_of
from dgiqa_cli.weights.files import ResolvedWeights, load_checked, read_state_dict
from dgiqa_cli.weights.hubformat import (
    CONFIG_FILE,
    CONFIG_FORMAT,
    CONFIG_FORMAT_VERSION,
    DEFAULT_HUB_FILE,
    entry_from_config,
    kind_of_arch,
)
from dgiqa_cli.weights.registry import (
    AUTHORS_DEPTH_MODEL,
    NAME_PATTERN,
    RegistryEntry,
    RegistryError,
    depth_entries,
    local_entries,
    local_models_dir,
    model_entries,
    packaged_entries,
    save_local_entry,
)

UNVERIFIED = "unknown: the file matches no known release (pass --license)"
DEPTH_ANYTHING_CITATION = (
    "Yang, Kang, Huang, Xu, Feng, Zhao. Depth Anything: Unleashing the Power of Large-Scale Unlabeled Data. CVPR 2024."
)


# -- model options that a checkpoint implies ------------------------------------------------------

_LIFE_IQA_BACKBONES = {
    (96, 6): "swin_tiny_patch4_window7_224",
    (96, 18): "swin_small_patch4_window7_224",
    (128, 18): "swin_base_patch4_window7_224",
    (192, 18): "swin_large_patch4_window7_224",
}


def infer_model_config(arch: str, state_dict: dict[str, torch.Tensor]) -> dict:
    """Keyword arguments of ``build_model(arch)`` that these tensors need (``{}``: the defaults).

    DGIQA and Depth Anything have one shape each. Life-IQA's options show in its
    tensors, except ``top_k`` (the router stores a score for every expert): it is
    taken as min(2, experts), the authors' setting, and can be edited in config.json.
    """
    if arch != "life-iqa":
        return {}
    sd = checkpoint_filter(arch)(state_dict)
    try:
        _, queries, dim = sd["bunch_embedding"].shape
        depth = len({k.split(".")[2] for k in sd if k.startswith("bunch_decoder.layers.")})
        experts = sd["MOE.router.linear.weight"].shape[0] if "MOE.router.linear.weight" in sd else 1
        channels = sd["pretrain_model.patch_embed.proj.weight"].shape[0]
        stage3_blocks = len({k.split(".")[4] for k in sd if k.startswith("pretrain_model.layers.2.blocks.")})
        window_table = sd["pretrain_model.layers.0.blocks.0.attn.relative_position_bias_table"].shape[0]
    except (KeyError, ValueError, IndexError) as exc:
        raise WeightsError(f"these Life-IQA weights lack a tensor that fixes the model's shape ({exc})") from None
    backbone = _LIFE_IQA_BACKBONES.get((channels, stage3_blocks))
    if backbone is None or window_table != 13 * 13:
        raise WeightsError(
            f"unsupported Life-IQA backbone (Swin with {channels} channels, {stage3_blocks} stage-3 blocks, "
            f"{window_table} relative positions); supported: {', '.join(sorted(set(_LIFE_IQA_BACKBONES.values())))}"
        )
    return {
        "embed_dim": int(dim),
        "num_queries": int(queries),
        "num_experts": int(experts),
        "top_k": min(2, int(experts)),
        "depth": depth,
        "backbone": backbone,
    }


def storable_state_dict(arch: str, state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The tensors to write with safetensors, and what was done to get them.

    safetensors refuses tensors that share memory and non-contiguous ones; the
    Life-IQA backbone twins are written once (``backbone_stages.*`` is dropped,
    ``pretrain_model.*`` kept) and restored on load by ``checkpoint_filter``.
    """
    steps = []
    filtered = checkpoint_filter(arch)(state_dict)
    stale = len(state_dict) - len([k for k in state_dict if k in filtered])
    if stale:
        steps.append(f"dropped {stale} buffers that the model recomputes (stale timm Swin buffers)")
    if arch == "life-iqa":
        from dgiqa_cli.models.life_iqa import twin_key

        kept = {}
        twins = 0
        for key, tensor in filtered.items():
            if key.startswith("backbone_stages."):
                twin = twin_key(key)
                if twin in filtered:
                    if filtered[twin].shape != tensor.shape or not torch.equal(filtered[twin], tensor):
                        raise WeightsError(
                            f"{key} differs from its twin {twin}: in Life-IQA both names are the same tensor, "
                            "so these weights are inconsistent"
                        )
                    twins += 1
                    continue
            kept[key] = tensor
        filtered = kept
        if twins:
            steps.append(
                f"stored one copy of {twins} Life-IQA backbone tensors held under two names "
                "(backbone_stages.* = pretrain_model.*; restored on load)"
            )
    out = {}
    seen = set()
    for key, tensor in filtered.items():
        tensor = tensor.detach()
        storage = tensor.untyped_storage().data_ptr() if tensor.numel() else None
        if storage in seen or not tensor.is_contiguous():
            tensor = tensor.contiguous().clone()
        if storage is not None:
            seen.add(storage)
        out[key] = tensor
    return out, steps


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def dtype_names(state_dict: dict[str, torch.Tensor]) -> str:
    floating = sorted({str(t.dtype).removeprefix("torch.") for t in state_dict.values() if t.is_floating_point()})
    return ", ".join(floating) or "-"


# -- import ---------------------------------------------------------------------------------------


@dataclass
class ImportResult:
    entry: RegistryEntry
    folder: Path
    config: dict
    notes: list[str] = field(default_factory=list)


def check_new_name(name: str, force: bool = False) -> None:
    """A name for imported weights: well formed, not a packaged name, not taken (unless ``force``)."""
    if not NAME_PATTERN.fullmatch(name):
        raise UnknownWeightsError(
            f"{name!r} is not a usable name: use letters, digits, '.', '_' and '-' (64 at most), "
            "starting with a letter or digit"
        )
    for kind in ("model", "depth"):
        if name in packaged_entries(kind):
            raise UnknownWeightsError(f"{name!r} is a packaged registry name; choose another name")
    if not force:
        try:
            taken = any(name in local_entries(kind) for kind in ("model", "depth"))
        except RegistryError as exc:
            raise WeightsError(str(exc)) from None
        if taken:
            raise UnknownWeightsError(f"{name!r} is already imported; pass --force to replace it")


def import_checkpoint(
    source: str | os.PathLike,
    name: str,
    *,
    arch: str | None = None,
    depth_model: str | None = None,
    trained_on: str | None = None,
    score_range: tuple[float, float] | None = None,
    source_url: str | None = None,
    license: str | None = None,
    citation: str | None = None,
    description: str | None = None,
    force: bool = False,
) -> ImportResult:
    """Convert an authors' checkpoint to ``$DGIQA_HOME/models/NAME`` and register it as ``NAME``."""
    source = Path(source).expanduser()
    check_new_name(name, force)
    if not source.is_file():
        raise UnknownWeightsError(f"{source}: no such file")
    if arch is not None and arch not in ARCHITECTURES:
        raise UnknownWeightsError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    if depth_model is not None and depth_model not in DEPTH_ENCODERS:
        raise UnknownWeightsError(f"unknown depth model {depth_model!r}; choose one of {', '.join(DEPTH_ENCODERS)}")

    notes = []
    source_sha = sha256_of(source)
    state_dict = read_state_dict(source)
    detected = detect_arch(state_dict, str(source))
    if arch is not None and arch != detected:
        raise WeightsError(f"{source}: holds {detected} weights, not {arch}")
    arch = detected
    if depth_model is not None and arch != "dgiqa":
        raise UnknownWeightsError(f"--depth-model applies to DGIQA weights only, and {source.name} holds {arch}")

    model_config = infer_model_config(arch, state_dict)
    resolved = ResolvedWeights(source, str(source))
    model = load_checked(arch, model_config, resolved, state_dict)  # strict: every tensor fits
    expected = model.state_dict()
    storable, steps = storable_state_dict(arch, state_dict)
    del state_dict

    known = known_release(source_sha)  # a release is claimed only when the hash proves it
    if known and trained_on is not None and known.trained_on and trained_on != known.trained_on:
        known = None  # the user says these are other weights: describe them generically
    defaults = _defaults_for(arch, known)
    if known and trained_on is None and known.trained_on and known.kind == kind_of_arch(arch):
        trained_on = known.trained_on
        notes.append(f"training set {trained_on} taken from the registry's {known.name} ({known.source_file})")
    if score_range is None:
        score_range = defaults["score_range"]
    if arch == "dgiqa" and depth_model is None:
        depth_model = (known.depth_model if known and known.kind == "model" else None) or AUTHORS_DEPTH_MODEL

    config = {
        "format": CONFIG_FORMAT,
        "format_version": CONFIG_FORMAT_VERSION,
        "name": name,
        "architecture": arch,
        "model_config": model_config,
        "weights_file": DEFAULT_HUB_FILE,
        "sha256": None,  # filled in once written
        "size": None,
        "dtype": dtype_names(storable),
        "parameters": parameter_count(model),
        "depth_model": depth_model,
        "score_range": list(score_range) if score_range else [None, None],
        "higher_is_better": not SPECS[arch].lower_better if arch in SPECS else True,
        "trained_on": trained_on or "",
        "description": description or defaults["description"],
        "citation": citation or defaults["citation"],
        "source": {
            "file": source.name,
            "sha256": source_sha,
            "size": source.stat().st_size,
            "url": source_url or defaults["source"],
            "license": license or defaults["license"],
            # True only when the file's sha256 is that of a release the registry knows.
            "verified_release": known.name if known else None,
        },
        "conversion": {
            "tool": f"dgiqa {__version__}",
            "date": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
            "steps": [
                "read with torch.load(weights_only=True): tensors only, no code executed",
                *steps,
                f"checked that every tensor loads into dgiqa's {arch} model (strict, shapes included)",
                "wrote model.safetensors and read it back: every tensor is bit-identical",
            ],
        },
    }
    del model

    home_models = local_models_dir()
    folder = home_models / name
    try:
        home_models.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=home_models))
    except OSError as exc:
        raise WeightsError(f"{home_models}: cannot write imported weights there ({exc}); set DGIQA_HOME") from None
    try:
        weights_path = staging / DEFAULT_HUB_FILE
        _save_safetensors(storable, weights_path)
        del storable
        _check_round_trip(arch, weights_path, expected)
        config["sha256"] = sha256_of(weights_path)
        config["size"] = weights_path.stat().st_size
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    entry = local_entry_from_config(config, folder)
    try:
        save_local_entry(entry)
    except RegistryError as exc:
        raise WeightsError(str(exc)) from None
    return ImportResult(entry, folder, config, notes)


def local_entry_from_config(config: dict, folder: Path, repo: str = "") -> RegistryEntry:
    entry = entry_from_config(config, config["name"], origin="local", path=str(folder), repo=repo)
    return entry


def detect_arch(state_dict: dict, label: str) -> str:
    """The architecture the tensors' names and shapes say, or a WeightsError naming ``label``."""
    try:
        return detect_architecture(state_dict)
    except ValueError as exc:
        raise WeightsError(f"{label}: {exc}") from None


def known_release(sha: str) -> RegistryEntry | None:
    """The registry entry (packaged or imported) whose weights or source file has this sha256."""
    for entry in _all_entries():
        if sha in (entry.sha256, entry.source_sha256):
            return entry
    return None


def _all_entries() -> list[RegistryEntry]:
    entries = [*model_entries().values(), *depth_entries().values()]
    with contextlib.suppress(RegistryError):
        entries += [*local_entries("model").values(), *local_entries("depth").values()]
    return entries


def _defaults_for(arch: str, known: RegistryEntry | None) -> dict:
    """Description, citation, licence, source and score range of an architecture's published weights."""
    if known is not None and known.arch == arch:
        return {
            "description": known.description,
            "citation": known.citation,
            "license": known.license,
            "source": known.source,
            "score_range": known.score_range if known.kind == "model" else None,
        }
    # Unverified weights: the architecture's paper is cited, but no source, licence or release is claimed.
    unverified = {"license": UNVERIFIED, "source": ""}
    if arch == "dgiqa":
        koniq = model_entries()["dgiqa-koniq"]
        description = "DGIQA (depth-guided cross-attention and refinement) quality model, source unverified"
        return {"description": description, "citation": koniq.citation, "score_range": (0.0, 1.0), **unverified}
    if arch == "life-iqa":
        description = "Life-IQA quality model (unbounded MOS regression), source unverified"
        return {
            "description": description,
            "citation": model_entries()["life-iqa-koniq"].citation,
            "score_range": None,
            **unverified,
        }
    depth = depth_entries()[arch.removeprefix("depth-anything-")]
    description = f"{depth.description}, source unverified"
    return {"description": description, "citation": DEPTH_ANYTHING_CITATION, "score_range": None, **unverified}


def _save_safetensors(state_dict: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    try:
        save_file(state_dict, str(path), metadata={"format": "pt"})
    except (OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{path}: cannot write safetensors ({exc})") from None


def _check_round_trip(arch: str, path: Path, expected: dict[str, torch.Tensor]) -> None:
    """The written file, filtered as on load, gives back exactly the tensors the model holds."""
    restored = checkpoint_filter(arch)(read_state_dict(path))
    missing = [k for k in expected if k not in restored]
    extra = [k for k in restored if k not in expected]
    changed = [k for k in expected if k in restored and not torch.equal(restored[k], expected[k])]
    if missing or extra or changed:
        raise WeightsError(
            f"{path}: the converted file does not give back the checkpoint "
            f"(missing {missing[:3]}, unexpected {extra[:3]}, changed {changed[:3]})"
        )
