"""A weights *spec* -> a local file and what is known about it.

A spec is what a user types after ``--weights`` / ``--depth-weights``: a
registry name (packaged, then imported), a local ``.pth`` / ``.bin`` /
``.safetensors`` file, a folder in the Hub format, or
``hf://owner/repo[/file][@revision]`` (without a file: the Hub format, read
through ``config.json``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from dgiqa_cli.errors import MissingHubFileError, UnknownWeightsError, WeightsError, WrongKindError
from dgiqa_cli.io.names import special_kind
from dgiqa_cli.weights.download import HubLocation, download, fetch_entry, parse_hf_uri
from dgiqa_cli.weights.files import ResolvedWeights
from dgiqa_cli.weights.hubformat import CONFIG_FILE, WEIGHT_SUFFIXES, entry_from_config, read_config
from dgiqa_cli.weights.registry import RegistryEntry, RegistryError, local_entries, packaged_entries

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def resolve_weights(spec: str | os.PathLike, kind: str = "model", *, local_only: bool = False) -> ResolvedWeights:
    """Turn a weights spec into a local file, downloading it on first use.

    Order: the packaged registry, the local (imported) registry, ``hf://``, then
    the file system. A packaged name comes from the first of its sources already on
    this machine (no request), else from the first that downloads: the Hub (when
    published, into the Hugging Face cache) or a release link (into the dgiqa cache).
    ``local_only``: use cached files only, never download.
    """
    spec_str = str(spec)
    packaged = packaged_entries(kind)
    if spec_str in packaged:
        fetched = fetch_entry(packaged[spec_str], local_only=local_only)
        # A release file was hashed and checked just now: loading need not read it twice (the card keeps the hash).
        expected = None if fetched.source.type == "url" else fetched.sha256
        return ResolvedWeights(fetched.path, spec_str, fetched.card, expected)
    local = _local_entries(kind)
    if spec_str in local:
        return resolve_local_entry(local[spec_str])
    if spec_str.startswith("hf://"):
        return _resolve_hf_uri(spec_str, kind, local_only=local_only)
    path = Path(spec_str).expanduser()
    if path.is_file():
        return ResolvedWeights(path, spec_str)
    if (kind_of_file := special_file(path)) is not None:
        raise UnknownWeightsError(f"{spec_str}: is {kind_of_file}, not a weights file")
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
    entry = entry_from_config(config, uri, origin="config", repo=location.repo, revision=location.revision or "main")
    path = download(HubLocation(location.repo, entry.filename, revision), local_only=local_only)  # as for a folder
    check_kind(entry, kind, uri)
    return ResolvedWeights(path, uri, entry, entry.sha256)


def resolve_folder(folder: Path, kind: str = "model", label: str | None = None) -> ResolvedWeights:
    """A folder in the Hub format: ``config.json`` and the weights file it names."""
    config = read_config(folder / CONFIG_FILE)
    label = label or str(folder)
    entry = entry_from_config(config, label, origin="config", path=str(folder))
    path = folder / entry.filename
    if (kind_of_file := special_file(path)) is not None:
        raise WeightsError(f"{path}: is {kind_of_file}, not a weights file ({CONFIG_FILE} names it)")
    if not path.is_file():
        raise WeightsError(f"{folder}: {CONFIG_FILE} names {entry.filename!r}, which is not in the folder")
    check_kind(entry, kind, label)
    return ResolvedWeights(path, label, entry, entry.sha256)


def special_file(path: Path) -> str | None:
    """What ``path`` is when it exists but is neither a regular file nor a folder (reading a FIFO would hang)."""
    try:
        return special_kind(path.stat().st_mode)
    except OSError:
        return None


def check_kind(entry: RegistryEntry, kind: str, label: str) -> None:
    if entry.kind == kind:
        return
    if entry.kind == "depth":
        raise WrongKindError(f"{label}: holds {entry.arch} weights (a depth model); pass it with --depth-weights")
    raise WrongKindError(f"{label}: holds {entry.arch} weights, not a depth model; pass it with --weights")


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
