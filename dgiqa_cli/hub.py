"""Finding, downloading, verifying and loading weights.

A weights *spec* is what a user types after ``--weights`` / ``--depth-weights``:
a registry name (packaged, then imported: see :mod:`dgiqa_cli.registry`), a
local ``.pth`` / ``.bin`` / ``.safetensors`` file, a folder in the Hub format
(``config.json`` + ``model.safetensors``), or
``hf://owner/repo[/file][@revision]`` (without a file: the Hub format, read
through ``config.json``). Downloads go through
``huggingface_hub`` into its standard cache (``HF_HOME``, ``HF_HUB_CACHE``,
``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` are honoured, read when the download
happens), so a second run never downloads again. Weights are data: pickles
are opened with ``weights_only=True`` and nothing in them is executed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .models import ARCHITECTURES, DEPTH_ENCODERS, checkpoint_filter
from .registry import (
    RegistryEntry,
    RegistryError,
    local_entries,
    packaged_entries,
)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
DEFAULT_HUB_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CONFIG_FORMAT = "dgiqa-weights"
CONFIG_FORMAT_VERSION = 1
_TRUTHY = {"1", "true", "yes", "on"}
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


class WeightsError(Exception):
    """Weights that cannot be had or do not fit; the message says what to do next."""


class UnknownWeightsError(WeightsError, ValueError):
    """A weights spec that names nothing: a typo on the command line (a usage error)."""


class WrongKindError(UnknownWeightsError):
    """A depth model given where a scoring model is expected, or the other way round."""


class MissingHubFileError(WeightsError):
    """The Hub repository exists but has no such file."""


@dataclass(frozen=True)
class ResolvedWeights:
    """A local weights file and what we know about it."""

    path: Path
    label: str  # how the user named it, for messages and output
    entry: RegistryEntry | None = None
    sha256: str | None = None  # expected checksum, when known


@dataclass(frozen=True)
class HubLocation:
    repo: str
    filename: str
    revision: str | None = None


def parse_hf_uri(uri: str, default_file: str = DEFAULT_HUB_FILE) -> HubLocation:
    """``hf://owner/repo[/path/in/repo][@revision]`` -> its parts."""
    rest = uri.removeprefix("hf://")
    revision = None
    if "@" in rest:
        rest, revision = rest.rsplit("@", 1)
    parts = [p for p in rest.split("/") if p]
    if len(parts) < 2 or revision == "":
        raise UnknownWeightsError(f"{uri!r} is not a Hub address; expected hf://OWNER/REPO[/FILE][@REVISION]")
    filename = "/".join(parts[2:]) or default_file
    return HubLocation(f"{parts[0]}/{parts[1]}", filename, revision)


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUTHY


def sync_hub_offline() -> None:
    """Make huggingface_hub's offline switch follow the environment *now*.

    The library reads ``HF_HUB_OFFLINE`` once, when it is first imported, and then
    refuses every request (or allows them) for the life of the process; dgiqa reads
    the variable when it downloads, so it tells the library before each call.
    """
    from huggingface_hub import constants

    transformers = os.environ.get("TRANSFORMERS_OFFLINE", "").strip().lower() in _TRUTHY
    constants.HF_HUB_OFFLINE = hub_offline() or transformers


def hub_cache_dir() -> str | None:
    """The Hub cache as the environment says *now* (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def hub_endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def download(
    location: HubLocation,
    how_to_get: str = "",
    *,
    tqdm_class=None,
    force: bool = False,
    local_only: bool = False,
) -> Path:
    """Fetch one file from the Hub into the standard cache (or find it there); raise WeightsError.

    ``tqdm_class``: a progress bar class for the transfer (huggingface_hub's own by default);
    ``force``: download again even if cached; ``local_only``: never touch the network.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{location.repo}/{location.filename}" + (f"@{location.revision}" if location.revision else "")
    hint = f"\n{how_to_get}" if how_to_get else ""
    if force and (hub_offline() or local_only):
        raise WeightsError(f"{where}: cannot download again while offline mode is on (HF_HUB_OFFLINE)")
    sync_hub_offline()
    try:
        path = hf_hub_download(
            location.repo,
            location.filename,
            revision=location.revision,
            cache_dir=hub_cache_dir(),
            endpoint=hub_endpoint(),
            local_files_only=hub_offline() or local_only,
            force_download=force,
            tqdm_class=tqdm_class,
        )
    except LocalEntryNotFoundError:
        if hub_offline():
            reason = "offline mode is on (HF_HUB_OFFLINE)"
        elif local_only:
            reason = "this command does not download (`dgiqa weights download` does)"
        else:
            reason = f"the Hub ({hub_endpoint() or 'https://huggingface.co'}) could not be reached"
        raise WeightsError(
            f"{where} is not in the Hugging Face cache ({hub_cache_dir() or 'default location'}) and {reason}.{hint}"
        ) from None
    except GatedRepoError:
        raise WeightsError(
            f"{where}: the repository is gated; accept its terms on the Hub and log in (`hf auth login`).{hint}"
        ) from None
    except RepositoryNotFoundError:
        raise WeightsError(
            f"{where}: no such repository on the Hub (or it is private: log in with `hf auth login`).{hint}"
        ) from None
    except RevisionNotFoundError:
        raise WeightsError(f"{where}: no such revision in the repository.{hint}") from None
    except EntryNotFoundError:
        raise MissingHubFileError(f"{where}: the repository has no file {location.filename!r}.{hint}") from None
    except (HfHubHTTPError, OSError, *_transport_errors()) as exc:
        raise WeightsError(f"{where}: download failed ({exc}).{hint}") from None
    return Path(path)


def _transport_errors() -> tuple[type[Exception], ...]:
    """The HTTP client's own errors (huggingface_hub re-raises some of them, e.g. proxy errors)."""
    try:
        import httpx2

        return (httpx2.HTTPError,)
    except ImportError:  # older huggingface_hub releases use requests / httpx
        return ()


def how_to_get(entry: RegistryEntry) -> str:
    """What a user should do when a registry entry's weights cannot be had."""
    if entry.kind == "model":
        file = entry.source_file or "the checkpoint"
        published = "" if entry.published else f"'{entry.name}' is not on the Hugging Face Hub yet. "
        local = f"/path/to/{entry.source_file or 'weights.pth'}"
        return (
            f"{published}Download {file} from the authors' release: {entry.source}, "
            f"then score with --weights {local}, or convert it once with "
            f"`dgiqa weights import {local} --name {entry.name}-local` and use --weights {entry.name}-local."
        )
    return (
        f"On a machine with internet: `hf download {entry.repo} {entry.filename}` (fills the cache), "
        f"or download {entry.source} by hand and pass --depth-weights /path/to/{entry.filename}."
    )


def resolve_weights(spec: str | os.PathLike, kind: str = "model", *, local_only: bool = False) -> ResolvedWeights:
    """Turn a weights spec into a local file, downloading through the Hub cache when needed.

    Order: the packaged registry, the local (imported) registry, ``hf://``, then
    the file system. ``local_only``: find Hub files in the cache only, never download.
    """
    spec_str = str(spec)
    packaged = packaged_entries(kind)
    if spec_str in packaged:
        entry = packaged[spec_str]
        location = HubLocation(entry.repo, entry.filename, entry.revision)
        path = download(location, how_to_get(entry), local_only=local_only)
        return ResolvedWeights(path, spec_str, entry, entry.sha256)
    local = _local_entries(kind)
    if spec_str in local:
        return resolve_local_entry(local[spec_str])
    if spec_str.startswith("hf://"):
        return _resolve_hf_uri(spec_str, kind, local_only=local_only)
    path = Path(spec_str).expanduser()
    if path.is_file():
        return ResolvedWeights(path, spec_str)
    if path.is_dir():
        if (path / CONFIG_FILE).is_file():
            return resolve_folder(path, kind, label=spec_str)
        raise UnknownWeightsError(
            f"{spec_str}: is a directory without {CONFIG_FILE}; give the weights file inside it, "
            "or a folder in the Hub format (config.json + model.safetensors)"
        )
    names = ", ".join(packaged)
    looks_like_file = path.suffix.lower() in WEIGHT_SUFFIXES or os.sep in spec_str
    if looks_like_file:
        raise UnknownWeightsError(f"{spec_str}: no such weights file")
    other = "depth" if kind == "model" else "model"
    if spec_str in packaged_entries(other) or spec_str in _local_entries(other):
        option = "--depth-weights" if other == "depth" else "--weights"
        what = "a depth model" if other == "depth" else "a scoring model"
        raise WrongKindError(f"{spec_str!r} is {what}; pass it with {option}")
    imported = f"; imported: {', '.join(local)}" if local else ""
    raise UnknownWeightsError(
        f"{spec_str!r} is not a registry name ({names}){imported}, an existing weights file, "
        "a weights folder, or hf://OWNER/REPO[/FILE]"
    )


def _local_entries(kind: str) -> dict[str, RegistryEntry]:
    try:
        return local_entries(kind)
    except RegistryError as exc:
        raise WeightsError(str(exc)) from None


def resolve_local_entry(entry: RegistryEntry) -> ResolvedWeights:
    """An imported checkpoint: its folder under ``$DGIQA_HOME/models``."""
    path = entry.local_file
    if path is None or not path.is_file():
        raise WeightsError(
            f"{entry.name}: imported weights are registered but {path} is missing; "
            f"import the checkpoint again (`dgiqa weights import FILE --name {entry.name} --force`)"
        )
    return ResolvedWeights(path, entry.name, entry, entry.sha256)


def hf_uri_names_file(uri: str) -> bool:
    """Whether ``hf://owner/repo/...`` names a file inside the repository."""
    rest = uri.removeprefix("hf://").rsplit("@", 1)[0]
    return len([p for p in rest.split("/") if p]) > 2


def _resolve_hf_uri(uri: str, kind: str, *, local_only: bool = False) -> ResolvedWeights:
    location = parse_hf_uri(uri)
    if hf_uri_names_file(uri):
        return ResolvedWeights(download(location, local_only=local_only), uri)
    # The Hub format: config.json says what the weights are and which file holds them.
    config_location = HubLocation(location.repo, CONFIG_FILE, location.revision)
    try:
        config_path = download(config_location, local_only=local_only)
    except MissingHubFileError:
        # A bare repository with only weights in it: the architecture is told from the keys.
        return ResolvedWeights(download(location, local_only=local_only), uri)
    config = read_config(config_path)
    # Take the weights from the very commit the config came from (.../snapshots/<commit>/config.json).
    commit = config_path.parent.name
    revision = commit if _COMMIT.match(commit) else location.revision
    weights_file = config.get("weights_file", DEFAULT_HUB_FILE)
    path = download(HubLocation(location.repo, weights_file, revision), local_only=local_only)
    entry = entry_from_config(config, uri, origin="config", repo=location.repo, revision=location.revision or "main")
    check_kind(entry, kind, uri)
    return ResolvedWeights(path, uri, entry, entry.sha256)


def resolve_folder(folder: Path, kind: str = "model", label: str | None = None) -> ResolvedWeights:
    """A folder in the Hub format: ``config.json`` and the weights file it names."""
    config = read_config(folder / CONFIG_FILE)
    label = label or str(folder)
    entry = entry_from_config(config, label, origin="config", path=str(folder))
    path = folder / entry.filename
    if not path.is_file():
        raise WeightsError(f"{folder}: {CONFIG_FILE} names {entry.filename!r}, which is not in the folder")
    check_kind(entry, kind, label)
    return ResolvedWeights(path, label, entry, entry.sha256)


def check_kind(entry: RegistryEntry, kind: str, label: str) -> None:
    if entry.kind == kind:
        return
    if entry.kind == "depth":
        raise WrongKindError(f"{label}: holds {entry.arch} weights (a depth model); pass it with --depth-weights")
    raise WrongKindError(f"{label}: holds {entry.arch} weights, not a depth model; pass it with --weights")


# -- the Hub format: config.json -------------------------------------------------------------------


def kind_of_arch(arch: str) -> str:
    return "depth" if arch.startswith("depth-anything-") else "model"


def read_config(path: str | os.PathLike) -> dict:
    """A weights folder's ``config.json``, checked enough that a bad one gives a clear error."""
    path = Path(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable {CONFIG_FILE} ({exc})") from None
    problems = []
    if not isinstance(config, dict):
        raise WeightsError(f"{path}: not a dgiqa weights config (expected a JSON object)")
    if config.get("format", CONFIG_FORMAT) != CONFIG_FORMAT:
        problems.append(f"format is {config.get('format')!r}, expected {CONFIG_FORMAT!r}")
    version = config.get("format_version", CONFIG_FORMAT_VERSION)
    if not isinstance(version, int) or version > CONFIG_FORMAT_VERSION:
        problems.append(f"format_version {version!r} is newer than this dgiqa understands; upgrade dgiqa")
    arch = config.get("architecture")
    if arch not in ARCHITECTURES:
        problems.append(f"architecture {arch!r} is not one of {', '.join(ARCHITECTURES)}")
    depth = config.get("depth_model")
    if depth is not None and depth not in DEPTH_ENCODERS:
        problems.append(f"depth_model {depth!r} is not one of {', '.join(DEPTH_ENCODERS)}")
    weights_file = config.get("weights_file", DEFAULT_HUB_FILE)
    if not isinstance(weights_file, str) or Path(weights_file).suffix.lower() not in WEIGHT_SUFFIXES:
        problems.append(f"weights_file {weights_file!r} is not a weights file")
    elif weights_file.startswith("/") or ".." in Path(weights_file).parts:
        problems.append(f"weights_file {weights_file!r} points outside the folder")
    sha = config.get("sha256")
    if sha is not None and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-fA-F]{64}", sha)):
        problems.append("sha256 is not a hex SHA-256 digest")
    score_range = config.get("score_range")
    if score_range is not None and not (
        isinstance(score_range, list)
        and len(score_range) == 2
        and all(v is None or (isinstance(v, int | float) and math.isfinite(v)) for v in score_range)
    ):
        problems.append("score_range is not [low, high]")
    if not isinstance(config.get("model_config", {}), dict):
        problems.append("model_config is not an object")
    size = config.get("input_size")
    if size is not None and not (
        isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)
    ):
        problems.append("input_size is not [height, width]")
    if problems:
        raise WeightsError(f"{path}: not a valid dgiqa weights config: " + "; ".join(problems))
    return config


def entry_from_config(
    config: dict,
    name: str,
    *,
    origin: str = "config",
    repo: str = "",
    revision: str = "main",
    path: str = "",
) -> RegistryEntry:
    """The registry entry a ``config.json`` stands for (what ``Scorer`` reads: arch, depth model, range)."""
    arch = config["architecture"]
    source = config.get("source") or {}
    score_range = config.get("score_range") or [None, None]
    return RegistryEntry(
        name=name,
        kind=kind_of_arch(arch),
        arch=arch,
        repo=repo,
        filename=config.get("weights_file", DEFAULT_HUB_FILE),
        revision=revision,
        sha256=(config.get("sha256") or "").lower() or None,
        source=source.get("url", ""),
        source_file=source.get("file", ""),
        source_sha256=source.get("sha256"),
        description=config.get("description", ""),
        trained_on=config.get("trained_on", ""),
        score_range=(score_range[0], score_range[1]),
        higher_is_better=config.get("higher_is_better", True),
        depth_model=config.get("depth_model"),
        license=source.get("license", config.get("license", "")),
        citation=config.get("citation", ""),
        config=scorer_config(config),
        size=config.get("size"),
        origin=origin,
        path=path,
    )


def scorer_config(config: dict) -> dict:
    """A config.json's options in the form ``RegistryEntry.config`` takes.

    ``{"model": build_model keyword arguments, "input_size": [H, W]}``, each only when given.
    """
    out = {}
    if config.get("model_config"):
        out["model"] = dict(config["model_config"])
    if config.get("input_size"):
        out["input_size"] = list(config["input_size"])
    return out


def cached_file(entry: RegistryEntry, revision: str | None = None) -> Path | None:
    """Where the Hub cache holds ``entry``'s weights, without touching the network (``None``: not cached)."""
    if entry.local_file is not None:
        return entry.local_file if entry.local_file.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        entry.repo, entry.filename, cache_dir=hub_cache_dir(), revision=revision or entry.revision
    )
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str, remedy: str = "") -> None:
    """Raise WeightsError naming the file and both hashes unless ``path`` hashes to ``expected``."""
    actual = sha256_of(path)
    if actual != expected.lower():
        raise WeightsError(
            f"{path}: checksum mismatch (sha256 {actual}, expected {expected}); the file is truncated, "
            "altered or not the release it claims to be. " + (remedy or "Delete it and download it again.")
        )


def checksum_remedy(weights: ResolvedWeights) -> str:
    """What to do about weights that fail their checksum, by where they came from."""
    entry = weights.entry
    if entry is None:
        return ""
    if entry.origin == "local":
        return (
            f"Import the checkpoint again: `dgiqa weights import {entry.source_file or 'FILE'} "
            f"--name {entry.name} --force`."
        )
    if entry.origin == "config" and entry.path:
        return "Replace the folder with a good copy (e.g. from the Hub repository it came from)."
    return f"Download it again: `dgiqa weights download {weights.label} --force`."


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, without executing anything in it."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"{path}: refused to load; the file holds Python objects other than tensors, and weights are "
            f"never unpickled as code ({str(exc).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {exc}") from None
    return unwrap_state_dict(obj, path)


def unwrap_state_dict(obj, path) -> dict[str, torch.Tensor]:
    """Accept a bare state dict or the usual training wrappers ({'state_dict': ...}, 'module.' prefixes)."""
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: does not hold a state dict (a mapping of names to tensors)")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return obj


def load_into(model: nn.Module, arch: str, weights: ResolvedWeights, state_dict=None) -> nn.Module:
    """Load checked weights into ``model``; any missing, unexpected or misshapen tensor is an error.

    ``state_dict``: the file's tensors when the caller has read them already.
    """
    if weights.sha256:
        verify_sha256(weights.path, weights.sha256, checksum_remedy(weights))
    if state_dict is None:
        state_dict = read_state_dict(weights.path)
    state_dict = checkpoint_filter(arch)(state_dict)
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    misshapen = [
        f"{k} {tuple(state_dict[k].shape)} (model: {tuple(own[k].shape)})"
        for k in own
        if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    if missing or unexpected or misshapen:
        problems = []
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen)):
            if keys:
                problems.append(f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})")
        raise WeightsError(f"{weights.label}: these weights do not fit the {arch} architecture: " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=True)
    return model
