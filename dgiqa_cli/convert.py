"""The authors' checkpoints -> the Hub format; describing weights; publishing them.

The Hub format is one folder (or Hub repository) holding:

- ``model.safetensors``: the tensors, exactly as in the source checkpoint
  (less buffers that are recomputed, and for Life-IQA one copy of each
  backbone tensor: ``checkpoint_filter('life-iqa')`` restores the twins);
- ``config.json``: what the tensors are (architecture, model options, depth
  model, score range, training set), where they came from (source file and its
  sha256, licence, citation), how they were converted, and the sha256 of
  ``model.safetensors``, which is checked on every load;
- ``README.md``: the model card (written by ``dgiqa weights push``).

Nothing here executes code from a checkpoint: ``.pth`` files are read with
``torch.load(weights_only=True)`` (:func:`dgiqa_cli.hub.read_state_dict`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from . import __version__
from .hub import (
    CONFIG_FILE,
    CONFIG_FORMAT,
    CONFIG_FORMAT_VERSION,
    DEFAULT_HUB_FILE,
    ResolvedWeights,
    UnknownWeightsError,
    WeightsError,
    WrongKindError,
    checksum_remedy,
    hub_endpoint,
    hub_offline,
    kind_of_arch,
    load_into,
    read_config,
    read_state_dict,
    resolve_weights,
    sha256_of,
)
from .models import ARCHITECTURES, DEPTH_ENCODERS, build_model, checkpoint_filter, detect_architecture
from .registry import (
    NAME_PATTERN,
    RegistryEntry,
    RegistryError,
    depth_entries,
    find_entry,
    local_entries,
    local_models_dir,
    model_entries,
    packaged_entries,
    save_local_entry,
)
from .scorer import AUTHORS_DEPTH_MODEL

REPO_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
HUB_FILES = (CONFIG_FILE, DEFAULT_HUB_FILE, "README.md")

LIFE_IQA_CITATION = (
    "Tang et al. Life-IQA: GCN-enhanced layer interaction and MoE feature decoupling for image quality "
    "assessment. arXiv:2511.19024, 2025."
)
DEPTH_ANYTHING_CITATION = (
    "Yang, Kang, Huang, Xu, Feng, Zhao. Depth Anything: Unleashing the Power of Large-Scale Unlabeled Data. CVPR 2024."
)
# Hub licence identifiers a model card may use as they are; anything else becomes `license: other`.
HUB_LICENSES = {
    "apache-2.0",
    "mit",
    "bsd-2-clause",
    "bsd-3-clause",
    "cc-by-4.0",
    "cc-by-sa-4.0",
    "cc-by-nc-4.0",
    "cc-by-nc-sa-4.0",
    "cc-by-nc-nd-4.0",
    "gpl-3.0",
    "agpl-3.0",
    "lgpl-3.0",
    "openrail",
}


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
        from .models.life_iqa import twin_key

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


def load_checked(arch: str, config: dict, weights: ResolvedWeights, state_dict=None) -> torch.nn.Module:
    """A model of ``arch`` with ``weights`` loaded strictly (sha256 checked when expected)."""
    try:
        model = build_model(arch, **config)
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"{weights.label}: cannot build {arch} with {config} ({exc})") from None
    return load_into(model, arch, weights, state_dict)


# -- import ---------------------------------------------------------------------------------------


@dataclass
class ImportResult:
    entry: RegistryEntry
    folder: Path
    config: dict
    notes: list[str] = field(default_factory=list)


def check_new_name(name: str, force: bool = False) -> None:
    """A name for imported weights: well formed, not a packaged name, not taken (unless ``force``)."""
    if not NAME_PATTERN.match(name):
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


def release_for_file(path: Path) -> RegistryEntry | None:
    """A packaged entry whose published file has this name (e.g. DGIQA_Koniq10k.pth), as a hint."""
    for entry in [*model_entries().values(), *depth_entries().values()]:
        if entry.source_file and entry.source_file == path.name:
            return entry
    return None


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
    detected = _detect(state_dict, str(source))
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

    known = _known_release(source_sha) or release_for_file(source)
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
        "higher_is_better": True,
        "trained_on": trained_on or "",
        "description": description or defaults["description"],
        "citation": citation or defaults["citation"],
        "source": {
            "file": source.name,
            "sha256": source_sha,
            "size": source.stat().st_size,
            "url": source_url or defaults["source"],
            "license": license or defaults["license"],
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
    from .hub import entry_from_config

    entry = entry_from_config(config, config["name"], origin="local", path=str(folder), repo=repo)
    return entry


def _detect(state_dict: dict, label: str) -> str:
    try:
        return detect_architecture(state_dict)
    except ValueError as exc:
        raise WeightsError(f"{label}: {exc}") from None


def _known_release(sha: str) -> RegistryEntry | None:
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
    if arch == "dgiqa":
        koniq = model_entries()["dgiqa-koniq"]
        return {
            "description": "DGIQA (depth-guided cross-attention and refinement) quality model",
            "citation": koniq.citation,
            "license": koniq.license,
            "source": "https://github.com/uf-robopi/DGIQA",
            "score_range": (0.0, 1.0),
        }
    if arch == "life-iqa":
        return {
            "description": "Life-IQA quality model (unbounded MOS regression)",
            "citation": LIFE_IQA_CITATION,
            "license": "as released by the Life-IQA authors (see their repository)",
            "source": "",
            "score_range": None,
        }
    depth = depth_entries()[arch.removeprefix("depth-anything-")]
    return {
        "description": depth.description,
        "citation": DEPTH_ANYTHING_CITATION,
        "license": depth.license,
        "source": depth.source,
        "score_range": None,
    }


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


# -- info -----------------------------------------------------------------------------------------


def resolve_any(spec: str, *, local_only: bool = True) -> tuple[ResolvedWeights, str]:
    """Resolve a spec as a scoring model, else as a depth model; return it and its kind."""
    try:
        return resolve_weights(spec, "model", local_only=local_only), "model"
    except WrongKindError:
        return resolve_weights(spec, "depth", local_only=local_only), "depth"
    except UnknownWeightsError:
        try:
            return resolve_weights(spec, "depth", local_only=local_only), "depth"
        except UnknownWeightsError:
            pass
        raise


def describe(spec: str) -> dict:
    """What ``dgiqa weights info`` reports about a name, a file, a folder or a cached hf:// address."""
    resolved, _ = resolve_any(spec, local_only=True)
    entry = resolved.entry
    path = resolved.path
    sha = sha256_of(path)
    report: dict = {
        "name": spec,
        "file": str(path),
        "size": path.stat().st_size,
        "sha256": sha,
        "expected_sha256": resolved.sha256,
        "checksum": None if not resolved.sha256 else ("ok" if sha == resolved.sha256.lower() else "MISMATCH"),
        "architecture": entry.arch if entry else None,
        "model_config": dict(entry.config.get("model", {})) if entry else {},
        "parameters": None,
        "tensors": None,
        "dtype": None,
        "loads": None,
        "error": None,
        "trained_on": entry.trained_on if entry else "",
        "score_range": list(entry.score_range) if entry and entry.kind == "model" else None,
        "depth_model": entry.depth_model if entry else None,
        "source": _source_text(entry),
        "source_sha256": entry.source_sha256 if entry else None,
        "license": entry.license if entry else "",
        "known_release": None,
    }
    match = _known_release(sha)
    if match is not None:
        what = "its source file" if sha == match.source_sha256 and sha != match.sha256 else "its weights"
        report["known_release"] = {"name": match.name, "kind": match.kind, "origin": match.origin, "as": what}
    if report["checksum"] == "MISMATCH":
        remedy = checksum_remedy(resolved)
        report["error"] = (
            f"{path}: checksum mismatch (sha256 {sha}, expected {resolved.sha256}); "
            "the file is truncated or altered." + (f" {remedy}" if remedy else "")
        )
        return report
    try:
        state_dict = read_state_dict(path)
        arch = entry.arch if entry else _detect(state_dict, str(path))
        if entry is not None and "model" in entry.config:
            config = dict(entry.config["model"])
        else:
            config = infer_model_config(arch, state_dict)
        report.update(
            architecture=arch,
            model_config=config,
            tensors=len(state_dict),
            dtype=dtype_names(state_dict),
        )
        unchecked = ResolvedWeights(path, resolved.label)  # the checksum is compared above
        model = load_checked(arch, config, unchecked, state_dict)
        report["parameters"] = parameter_count(model)
        report["loads"] = True
    except WeightsError as exc:
        report["loads"] = False
        report["error"] = str(exc)
    return report


def _source_text(entry: RegistryEntry | None) -> str:
    if entry is None:
        return ""
    parts = [p for p in (entry.source_file, entry.source) if p]
    return " from ".join(parts) if len(parts) == 2 else (parts[0] if parts else "")


# -- push -----------------------------------------------------------------------------------------


@dataclass
class PushPlan:
    folder: Path
    repo: str
    private: bool
    config: dict
    card: str
    files: list[tuple[str, int]]  # (path in repo, bytes)
    endpoint: str
    local_name: str | None = None

    @property
    def total_size(self) -> int:
        return sum(size for _, size in self.files)


def weights_folder(spec: str) -> tuple[Path, str | None]:
    """The Hub-format folder of an imported name, or a folder given as a path."""
    try:
        entry = find_entry(spec, "model") or find_entry(spec, "depth")
    except RegistryError as exc:
        raise WeightsError(str(exc)) from None
    if entry is not None:
        if entry.origin != "local":
            raise UnknownWeightsError(
                f"{spec!r} is a packaged registry name; push imported weights (`dgiqa weights import`) "
                "or a folder in the Hub format"
            )
        return Path(entry.path), spec
    folder = Path(spec).expanduser()
    if folder.is_dir() and (folder / CONFIG_FILE).is_file():
        return folder, None
    raise UnknownWeightsError(
        f"{spec!r} is neither an imported name nor a folder holding {CONFIG_FILE} and {DEFAULT_HUB_FILE}"
    )


def plan_push(spec: str, repo: str, private: bool = False) -> PushPlan:
    """Everything a push would do, checked, without any network access."""
    if not REPO_PATTERN.match(repo):
        raise UnknownWeightsError(f"{repo!r} is not a Hub repository name; expected OWNER/REPO")
    folder, local_name = weights_folder(spec)
    config = read_config(folder / CONFIG_FILE)
    weights = folder / config.get("weights_file", DEFAULT_HUB_FILE)
    if not weights.is_file():
        raise WeightsError(f"{folder}: {CONFIG_FILE} names {weights.name!r}, which is not in the folder")
    if config.get("sha256"):
        actual = sha256_of(weights)
        if actual != config["sha256"].lower():
            raise WeightsError(
                f"{weights}: checksum mismatch (sha256 {actual}, expected {config['sha256']}); "
                "refusing to publish altered weights. Import the checkpoint again."
            )
    card = model_card(config, repo)
    files = [(CONFIG_FILE, (folder / CONFIG_FILE).stat().st_size), (weights.name, weights.stat().st_size)]
    files.append(("README.md", len(card.encode("utf-8"))))
    return PushPlan(
        folder=folder,
        repo=repo,
        private=private,
        config=config,
        card=card,
        files=files,
        endpoint=hub_endpoint() or "https://huggingface.co",
        local_name=local_name,
    )


def push(plan: PushPlan, *, token: str | None = None, message: str | None = None) -> str:
    """Create the repository (if needed) and upload the folder with its model card; return the commit URL."""
    if hub_offline():
        raise WeightsError("cannot push while offline mode is on (HF_HUB_OFFLINE)")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    from .hub import _transport_errors, sync_hub_offline

    sync_hub_offline()
    (plan.folder / "README.md").write_text(plan.card, encoding="utf-8")
    api = HfApi(endpoint=plan.endpoint, token=token)
    weights_file = plan.config.get("weights_file", DEFAULT_HUB_FILE)
    try:
        api.create_repo(plan.repo, private=plan.private, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            repo_id=plan.repo,
            folder_path=plan.folder,
            allow_patterns=[CONFIG_FILE, weights_file, "README.md"],
            commit_message=message or f"Upload {plan.config.get('name', plan.repo)} ({plan.config['architecture']})",
            repo_type="model",
        )
    except RepositoryNotFoundError:
        raise WeightsError(
            f"{plan.repo}: the Hub refused access to the repository; log in with a write token "
            "(`hf auth login`, or set HF_TOKEN / pass --token)"
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise WeightsError(
                f"{plan.repo}: not allowed to write ({status}); log in with a write token "
                "(`hf auth login`, or set HF_TOKEN / pass --token)"
            ) from None
        raise WeightsError(f"{plan.repo}: push failed ({str(exc).splitlines()[0]})") from None
    except (OSError, *_transport_errors()) as exc:
        raise WeightsError(f"{plan.repo}: push failed, {plan.endpoint} could not be reached ({exc})") from None
    if plan.local_name:
        try:
            entry = find_entry(plan.local_name, kind_of_arch(plan.config["architecture"]))
            if entry is not None and entry.origin == "local":
                save_local_entry(_with_repo(entry, plan.repo))
        except RegistryError as exc:
            raise WeightsError(str(exc)) from None
    return str(getattr(info, "commit_url", info))


def _with_repo(entry: RegistryEntry, repo: str) -> RegistryEntry:
    from dataclasses import replace

    return replace(entry, repo=repo, published=True)


# -- the model card -------------------------------------------------------------------------------

_ARCH_TEXT = {
    "dgiqa": "DGIQA (Ramesh, Liu, Wang, Islam, 2025): depth-guided cross-attention and refinement over two "
    "Swin-T backbones, fed by a Depth Anything depth map; blind (no-reference) image quality",
    "life-iqa": "Life-IQA (Tang et al., 2025): GCN-enhanced layer interaction and mixture-of-experts feature "
    "decoupling on a Swin backbone; blind (no-reference) image quality",
}


def _arch_text(arch: str) -> str:
    if arch.startswith("depth-anything-"):
        encoder = arch.removeprefix("depth-anything-")
        return f"Depth Anything V1 with the ViT-{encoder[-1].upper()}/14 encoder: relative (inverse) depth"
    return _ARCH_TEXT[arch]


def _range_text(config: dict) -> str:
    if kind_of_arch(config["architecture"]) == "depth":
        return "not a quality score (relative inverse depth maps)"
    low, high = (config.get("score_range") or [None, None])[:2]
    direction = "higher is better" if config.get("higher_is_better", True) else "lower is better"
    if low is None and high is None:
        return f"unbounded (the training set's MOS scale); {direction}"
    return f"[{_num(low)}, {_num(high)}]; {direction}"


def _num(value) -> str:
    return "-inf" if value is None else f"{value:g}"


def _license_yaml(license_text: str) -> list[str]:
    ident = license_text.strip().lower()
    if ident in HUB_LICENSES:
        return [f"license: {ident}"]
    return ["license: other", "license_name: source-weights-license"]


def model_card(config: dict, repo: str) -> str:
    """README.md for a Hub repository in dgiqa's format: what, how good, from where, under which terms."""
    arch = config["architecture"]
    source = config.get("source") or {}
    conversion = config.get("conversion") or {}
    depth = kind_of_arch(arch) == "depth"
    tags = ["dgiqa", "safetensors"] + (["depth-estimation"] if depth else ["image-quality-assessment", arch])
    front = ["---", *_license_yaml(source.get("license", "")), "library_name: dgiqa", "tags:"]
    front += [f"- {tag}" for tag in tags]
    if depth:
        front.append("pipeline_tag: depth-estimation")
    front.append("---")

    name = repo.split("/", 1)[1]
    option = "--depth-weights" if depth else "--weights"
    options = config.get("model_config") or {}
    weights = config.get("weights_file", DEFAULT_HUB_FILE)
    rows = [
        ("architecture", f"`{arch}`" + (f" ({_options_text(options)})" if options else "")),
        ("trained on", config.get("trained_on") or "not stated"),
        ("score range", _range_text(config)),
    ]
    if arch == "dgiqa":
        depth_model = config.get("depth_model") or AUTHORS_DEPTH_MODEL
        rows.append(("depth model", f"Depth Anything V1 `{depth_model}` (used by default)"))
    if config.get("parameters"):
        rows.append(("parameters", f"{config['parameters']:,}"))
    rows.append(("weights", f"`{weights}` ({config.get('dtype', '-')}), sha256 `{config.get('sha256')}`"))

    lines = [
        *front,
        "",
        f"# {name}",
        "",
        f"{config.get('description') or arch}.",
        "",
        f"Architecture: {_arch_text(arch)}. Converted for `dgiqa`, a command line and Python tool for "
        "blind image quality; the tensors are the source checkpoint's, unchanged.",
        "",
        "| | |",
        "|---|---|",
        *[f"| {key} | {value} |" for key, value in rows],
        "",
        "## Use",
        "",
        "With `dgiqa` installed:",
        "",
        "```bash",
    ]
    if depth:
        lines.append(f"dgiqa score photo.jpg --depth-model {arch.removeprefix('depth-anything-')} {option} hf://{repo}")
    elif arch == "dgiqa":
        lines.append(f"dgiqa score photo.jpg {option} hf://{repo}")
    else:
        lines.append(f"dgiqa weights info hf://{repo}   # Life-IQA weights; load with dgiqa_cli.models.build_model")
    lines += [
        "```",
        "",
        "dgiqa reads `config.json` first (architecture, depth model, score range), then `model.safetensors`, "
        "and checks the file's sha256 against `config.json` before loading.",
        "",
        "## Source and licence",
        "",
        f"Source file: `{source.get('file', '?')}`"
        + (f" (sha256 `{source['sha256']}`)" if source.get("sha256") else "")
        + (f", published at {source['url']}." if source.get("url") else "."),
        "",
        f"Licence of the source weights: {source.get('license') or 'not stated; ask the authors before reuse'}. "
        "The conversion changes the file format only, so these weights carry the same terms.",
        "",
        "## How they were converted",
        "",
        f"With {conversion.get('tool', 'dgiqa')} (`dgiqa weights import`)"
        + (f" on {conversion['date']}" if conversion.get("date") else "")
        + ":",
        "",
        *[f"1. {step}" for step in conversion.get("steps", [])],
        "",
        "## Citation",
        "",
        config.get("citation") or "See the source repository.",
        "",
    ]
    return "\n".join(lines)


def _options_text(options: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items())
