"""Finding, downloading, verifying and loading weights.

A weights *spec* is what a user types after ``--weights`` / ``--depth-weights``:
a registry name, a local ``.pth`` / ``.bin`` / ``.safetensors`` file, or
``hf://owner/repo[/file][@revision]``. Downloads go through
``huggingface_hub`` into its standard cache (``HF_HOME``, ``HF_HUB_CACHE``,
``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` are honoured, read when the download
happens), so a second run never downloads again. Weights are data: pickles
are opened with ``weights_only=True`` and nothing in them is executed.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .models import checkpoint_filter
from .registry import RegistryEntry, depth_entries, model_entries

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
DEFAULT_HUB_FILE = "model.safetensors"
_TRUTHY = {"1", "true", "yes", "on"}


class WeightsError(Exception):
    """Weights that cannot be had or do not fit; the message says what to do next."""


class UnknownWeightsError(WeightsError, ValueError):
    """A weights spec that names nothing: a typo on the command line (a usage error)."""


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


def hub_cache_dir() -> str | None:
    """The Hub cache as the environment says *now* (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def hub_endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def download(location: HubLocation, how_to_get: str = "") -> Path:
    """Fetch one file from the Hub into the standard cache (or find it there); raise WeightsError."""
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
    try:
        path = hf_hub_download(
            location.repo,
            location.filename,
            revision=location.revision,
            cache_dir=hub_cache_dir(),
            endpoint=hub_endpoint(),
            local_files_only=hub_offline(),
        )
    except LocalEntryNotFoundError:
        reason = "offline mode is on (HF_HUB_OFFLINE)" if hub_offline() else "the Hub could not be reached"
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
        raise WeightsError(f"{where}: the repository has no file {location.filename!r}.{hint}") from None
    except (HfHubHTTPError, OSError) as exc:
        raise WeightsError(f"{where}: download failed ({exc}).{hint}") from None
    return Path(path)


def how_to_get(entry: RegistryEntry) -> str:
    """What a user should do when a registry entry's weights cannot be had."""
    if entry.kind == "model":
        file = entry.source_file or "the checkpoint"
        published = "" if entry.published else f"'{entry.name}' is not on the Hugging Face Hub yet. "
        return (
            f"{published}Download {file} from the authors' release: {entry.source}, "
            f"then score with --weights /path/to/{entry.source_file or 'weights.pth'}."
        )
    return (
        f"On a machine with internet: `hf download {entry.repo} {entry.filename}` (fills the cache), "
        f"or download {entry.source} by hand and pass --depth-weights /path/to/{entry.filename}."
    )


def resolve_weights(spec: str | os.PathLike, kind: str = "model") -> ResolvedWeights:
    """Turn a weights spec into a local file, downloading through the Hub cache when needed."""
    spec_str = str(spec)
    registry = model_entries() if kind == "model" else depth_entries()
    if spec_str in registry:
        entry = registry[spec_str]
        location = HubLocation(entry.repo, entry.filename, entry.revision)
        return ResolvedWeights(download(location, how_to_get(entry)), spec_str, entry, entry.sha256)
    if spec_str.startswith("hf://"):
        return ResolvedWeights(download(parse_hf_uri(spec_str)), spec_str)
    path = Path(spec_str).expanduser()
    if path.is_file():
        return ResolvedWeights(path, spec_str)
    if path.is_dir():
        raise UnknownWeightsError(f"{spec_str}: is a directory; give the weights file inside it")
    names = ", ".join(registry)
    looks_like_file = path.suffix.lower() in WEIGHT_SUFFIXES or os.sep in spec_str
    if looks_like_file:
        raise UnknownWeightsError(f"{spec_str}: no such weights file")
    raise UnknownWeightsError(
        f"{spec_str!r} is not a registry name ({names}), an existing weights file, or hf://OWNER/REPO[/FILE]"
    )


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str) -> None:
    actual = sha256_of(path)
    if actual != expected.lower():
        raise WeightsError(
            f"{path}: checksum mismatch (sha256 {actual}, expected {expected}); the file is truncated, "
            "altered or not the release it claims to be. Delete it and download it again."
        )


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
        verify_sha256(weights.path, weights.sha256)
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
