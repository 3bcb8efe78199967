"""Fetching weights: a registry entry from its sources (:func:`fetch_entry`), one Hub file (:func:`download`).

An entry's sources are tried in order: first every one that is already on this
machine (no request at all), then each that can be downloaded: the Hub copy
(``download``, into the Hugging Face cache; only when the entry is ``published``:
an unpublished repository is never requested) and release links (``release``,
into the dgiqa cache beside it).

``HF_HOME``, ``HF_HUB_CACHE``, ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` are read
when a download happens (not at import), so a second run never downloads
again and tests can point the library at a local server. A Hub file that is not
cached is first asked for once, with a short timeout and no retry
(``HF_HUB_ETAG_TIMEOUT``, default 10 s), so that an unreachable Hub is an error
at once rather than after huggingface_hub's retries (about 23 s).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from dgiqa_cli.errors import MissingHubFileError, UnknownWeightsError, WeightsError
from dgiqa_cli.weights.hubformat import DEFAULT_HUB_FILE
from dgiqa_cli.weights.registry import RegistryEntry, Source
from dgiqa_cli.weights.release import (
    by_hand,
    cached_record,
    cached_release,
    fetch_release,
    offline,
    release_path,
    verify_cached,
)

_TRUTHY = {"1", "true", "yes", "on"}
_LIBRARY_OFFLINE = (
    "huggingface_hub is in offline mode for this process (HF_HUB_OFFLINE was set when it was imported); "
    "start a new process without HF_HUB_OFFLINE to download."
)


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
    """``HF_HUB_OFFLINE``, read *now* (no request of any kind, to the Hub or to a release host)."""
    return offline()


def _hub_files_only() -> bool:
    """Whether Hub files come from the cache only: ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``, read *now*.

    huggingface_hub reads them once, at import, into ``huggingface_hub.constants``; dgiqa never rewrites that
    module's constants (they belong to the caller's process) and passes ``local_files_only`` per call instead.
    A process that imported huggingface_hub while offline stays offline for huggingface_hub's own requests;
    :func:`download` says so.
    """
    return hub_offline() or os.environ.get("TRANSFORMERS_OFFLINE", "").strip().lower() in _TRUTHY


def hub_cache_dir() -> str | None:
    """The Hub cache as the environment says *now* (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def hub_endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def _etag_timeout() -> float:
    from huggingface_hub import constants

    try:
        return float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or constants.DEFAULT_ETAG_TIMEOUT)
    except ValueError:
        return float(constants.DEFAULT_ETAG_TIMEOUT)


def cached_hub_file(location: HubLocation) -> Path | None:
    """Where the Hub cache holds this file, without touching the network (``None``: not cached)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        location.repo, location.filename, cache_dir=hub_cache_dir(), revision=location.revision
    )
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def _ask_hub_first(location: HubLocation) -> None:
    """One request, short timeout, no retry: does the repository (at this revision) answer?

    huggingface_hub retries a file it does not have cached for about 23 s when the Hub cannot be
    reached; asking first turns that into an error at once (the same errors as a download's).
    """
    from huggingface_hub import HfApi

    HfApi(endpoint=hub_endpoint()).model_info(location.repo, revision=location.revision, timeout=_etag_timeout())


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
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{location.repo}/{location.filename}" + (f"@{location.revision}" if location.revision else "")
    hint = f" {how_to_get}" if how_to_get else ""  # one line: logs and grep keep the whole message
    if force and (hub_offline() or local_only):
        raise WeightsError(f"{where}: cannot download again while offline mode is on (HF_HUB_OFFLINE)")
    online = not (_hub_files_only() or local_only)
    if tqdm_class is None:
        from dgiqa_cli.weights import progress

        tqdm_class = progress.bar_class()
    try:
        if online and (force or cached_hub_file(location) is None):
            try:
                _ask_hub_first(location)
            except OfflineModeIsEnabled:
                raise WeightsError(f"{where}: {_LIBRARY_OFFLINE}{hint}") from None
            except (*_unreachable_errors(), ConnectionError, TimeoutError) as exc:
                raise WeightsError(
                    f"{where} is not in the Hugging Face cache ({hub_cache_dir() or 'default location'}) and the Hub "
                    f"({hub_endpoint() or 'https://huggingface.co'}) could not be reached ({exc}).{hint}"
                ) from None
        path = hf_hub_download(
            location.repo,
            location.filename,
            revision=location.revision,
            cache_dir=hub_cache_dir(),
            endpoint=hub_endpoint(),
            local_files_only=not online,
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
    except OfflineModeIsEnabled:
        raise WeightsError(f"{where}: {_LIBRARY_OFFLINE}{hint}") from None
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


def _unreachable_errors() -> tuple[type[Exception], ...]:
    """The HTTP client's errors for a server that cannot be reached (not its HTTP status errors)."""
    try:
        import httpx2

        return (httpx2.TransportError,)
    except ImportError:
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


# -- a registry entry, from its sources -----------------------------------------------------------


@dataclass(frozen=True)
class Fetched:
    """A registry entry's weights on this machine, and where they came from."""

    path: Path
    card: RegistryEntry  # the entry; for a release file, with that file's name and sha256
    sha256: str | None  # the checksum the file must have (checked on load), when known
    source: Source
    status: str  # "cached" (nothing was requested) or "downloaded"


def fetch_entry(entry: RegistryEntry, *, force: bool = False, local_only: bool = False, tqdm_class=None) -> Fetched:
    """``entry``'s weights file: the first source already cached (no request at all), else the first that downloads.

    Sources are tried in the registry's order; the Hub only when ``entry.published`` (an unpublished
    repository is never requested). ``force``: download again; ``local_only``: never touch the network
    (nor when ``HF_HUB_OFFLINE`` is set). Raises :class:`WeightsError`, one line that says what to do.
    """
    sources = entry.download_sources
    if not force:
        for source in sources:
            found = _cached(entry, source)
            if found is not None:
                return found
    offline = hub_offline() or local_only
    reachable = [s for s in sources if s.type != "hub" or entry.published]
    if not reachable:
        raise WeightsError(f"{entry.name}: {how_to_get(entry)}")
    if offline and any(s.type == "url" for s in reachable):
        raise WeightsError(_offline_message(entry, local_only))
    if force and offline:
        raise WeightsError(f"{entry.name}: cannot download again while offline mode is on (HF_HUB_OFFLINE)")
    errors = []
    for source in reachable:
        try:
            if source.type == "hub":
                location = HubLocation(entry.repo, entry.filename, entry.revision)
                path = download(location, how_to_get(entry), tqdm_class=tqdm_class, force=force, local_only=local_only)
                return Fetched(path, entry, entry.sha256, source, "downloaded")
            release = fetch_release(entry, source, force=force, local_only=local_only)
        except WeightsError as exc:
            errors.append(str(exc))
            continue
        card = replace(entry, filename=release.path.name, sha256=release.sha256)
        return Fetched(release.path, card, release.sha256, source, release.status)
    if len(errors) == 1:
        raise WeightsError(errors[0])
    raise WeightsError(" Then: ".join(errors))


def _cached(entry: RegistryEntry, source: Source) -> Fetched | None:
    """``source``'s file if this machine has it (a release file is checked against its hash), without a request."""
    if source.type == "hub":
        if not entry.repo:
            return None
        path = cached_hub_file(HubLocation(entry.repo, entry.filename, entry.revision))
        return Fetched(path, entry, entry.sha256, source, "cached") if path is not None else None
    found = cached_record(entry, source)
    if found is None:
        return None
    release = verify_cached(entry, source, *found)
    card = replace(entry, filename=release.path.name, sha256=release.sha256)
    return Fetched(release.path, card, release.sha256, source, "cached")


def _offline_message(entry: RegistryEntry, local_only: bool) -> str:
    source = entry.release_sources[0]
    if hub_offline():
        reason = "offline mode is on (HF_HUB_OFFLINE)"
        todo = (
            f"Unset HF_HUB_OFFLINE and dgiqa downloads it, run `dgiqa weights download {entry.name}` where there "
            "is internet and copy the caches here, or "
        )
    else:
        reason = "this command does not download"
        todo = f"Run `dgiqa weights download {entry.name}` (or score once), or "
    return (
        f"{entry.name}: {source.filename} is not in the Hugging Face cache ({hub_cache_dir() or 'default location'}) "
        f"or the dgiqa cache ({release_path(entry, source).parent}), and {reason}. {todo}{by_hand(entry, source)}."
    )


def cached_file(entry: RegistryEntry, revision: str | None = None) -> Path | None:
    """Where this machine holds ``entry``'s weights (Hub cache, dgiqa cache, imported folder), without a request.

    ``None``: not there. A release file is not re-hashed here (loading it is what checks it).
    """
    if entry.local_file is not None:
        return entry.local_file if entry.local_file.is_file() else None
    if entry.repo:
        found = cached_hub_file(HubLocation(entry.repo, entry.filename, revision or entry.revision))
        if found is not None:
            return found
    return cached_release(entry)
