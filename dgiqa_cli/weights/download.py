"""Fetching weights from the Hugging Face Hub into its standard cache.

``HF_HOME``, ``HF_HUB_CACHE``, ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` are read
when a download happens (not at import), so a second run never downloads
again and tests can point the library at a local server.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import MissingHubFileError, UnknownWeightsError, WeightsError
from .hubformat import DEFAULT_HUB_FILE
from .registry import RegistryEntry

_TRUTHY = {"1", "true", "yes", "on"}


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


def cached_file(entry: RegistryEntry, revision: str | None = None) -> Path | None:
    """Where the Hub cache holds ``entry``'s weights, without touching the network (``None``: not cached)."""
    if entry.local_file is not None:
        return entry.local_file if entry.local_file.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        entry.repo, entry.filename, cache_dir=hub_cache_dir(), revision=revision or entry.revision
    )
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None
