"""Named weights: what ``--weights NAME`` and ``--depth-weights NAME`` mean.

Two tables, consulted in this order:

- the packaged registry, ``dgiqa_cli/weights/registry.json``: the authors' releases and the Depth Anything models,
  each with its Hub location, checksum, training set and score range;
- the user's local registry, ``$DGIQA_HOME/registry.json`` (default: the
  per-user data folder ``platformdirs`` gives, ``~/.local/share/dgiqa`` on
  Linux): checkpoints converted with ``dgiqa weights import``, kept in ``$DGIQA_HOME/models/NAME/`` in the Hub format
  (``config.json`` + ``model.safetensors``).

Where weights live is data, never code. A local name can never shadow a
packaged one.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from functools import cache
from importlib.resources import files
from pathlib import Path

from dgiqa_cli.errors import DGIQAError
from dgiqa_cli.io.atomic import atomic_write

KINDS = ("model", "depth")
AUTHORS_DEPTH_MODEL = "vitl"  # the depth encoder the DGIQA authors trained and score with
_SECTIONS = {"model": "models", "depth": "depth_models"}
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class RegistryError(DGIQAError):
    """The local registry file cannot be read or written; the message names the file."""


@dataclass(frozen=True)
class Source:
    """One place an entry's weights can be downloaded from; an entry's sources are tried in order.

    ``type``: ``hub`` (the entry's ``repo``/``filename``, requested only when the entry is
    ``published``) or ``url`` (a release link, e.g. the authors' Dropbox folder). A ``url``
    source may serve an ``archive`` (``zip`` or ``tar``, any compression) holding ``member``;
    ``archive_name`` is the archive's file name under a mirror (``$DGIQA_MIRROR/<archive_name>``).
    ``sha256``: of the file itself (the member), when known; when not, the first download's hash
    is recorded in the cache and checked on every later use.
    """

    type: str
    url: str = ""
    archive: str = ""
    member: str = ""
    archive_name: str = ""
    sha256: str | None = None

    @property
    def filename(self) -> str:
        """The file this source yields: the archive member, else the last part of the URL's path."""
        if self.member:
            return self.member
        from urllib.parse import unquote, urlsplit

        return unquote(urlsplit(self.url).path.rstrip("/").rsplit("/", 1)[-1]) or "weights"

    @property
    def mirror_name(self) -> str:
        """What a mirror serves for this source: the archive's name, else the file's."""
        return self.archive_name or (self.filename if not self.archive else "")


HUB_SOURCE = Source("hub")


@dataclass(frozen=True)
class RegistryEntry:
    """One named checkpoint: a scoring model (``kind='model'``) or a depth model (``kind='depth'``)."""

    name: str
    kind: str
    arch: str
    repo: str
    filename: str
    revision: str = "main"
    sha256: str | None = None
    published: bool = True
    source: str = ""
    source_file: str = ""
    description: str = ""
    trained_on: str = ""
    score_range: tuple[float | None, float | None] = (None, None)
    higher_is_better: bool = True
    depth_model: str | None = None
    license: str = ""
    citation: str = ""
    default: bool = False
    config: dict = field(default_factory=dict)
    # sha256 of the file the authors published (e.g. their .pth), when known: tells a release apart.
    source_sha256: str | None = None
    size: int | None = None  # bytes of ``filename``, when known
    # Where the entry comes from: "packaged", "local" (imported), "config" (a config.json on the Hub or on disk).
    origin: str = "packaged"
    path: str = ""  # for local entries: the folder holding ``filename`` and config.json
    # Where the weights can be downloaded from, in order (default: the Hub copy, when there is a repo).
    sources: tuple[Source, ...] = ()

    @property
    def hub_uri(self) -> str:
        return f"hf://{self.repo}/{self.filename}" if self.repo else ""

    @property
    def download_sources(self) -> tuple[Source, ...]:
        """The sources to try, in order: the registry's, else the Hub copy (when the entry has a repo)."""
        if self.sources:
            return self.sources
        return (HUB_SOURCE,) if self.repo else ()

    @property
    def release_sources(self) -> tuple[Source, ...]:
        return tuple(source for source in self.download_sources if source.type == "url")

    @property
    def local_file(self) -> Path | None:
        """The weights file of a local entry (``None`` for entries that live on the Hub)."""
        return Path(self.path) / self.filename if self.path else None


_FIELD_NAMES = {f.name for f in fields(RegistryEntry)}


def entry_from_dict(name: str, kind: str, raw: dict, origin: str) -> RegistryEntry:
    values = {k: v for k, v in raw.items() if k in _FIELD_NAMES and k not in ("name", "kind", "origin")}
    if "score_range" in values:
        values["score_range"] = tuple(values["score_range"]) if values["score_range"] else (None, None)
    values.setdefault("repo", "")
    values.setdefault("filename", "model.safetensors")
    values["sources"] = tuple(_source(name, raw) for raw in values.get("sources") or ())
    return RegistryEntry(name=name, kind=kind, origin=origin, **values)


def _source(name: str, raw) -> Source:
    if isinstance(raw, str):  # "hub" alone
        raw = {"type": raw}
    known = {f.name for f in fields(Source)}
    source = Source(**{k: v for k, v in raw.items() if k in known})
    if source.type not in ("hub", "url") or (source.type == "url" and not source.url):
        raise ValueError(f"registry entry {name!r}: a source is 'hub' or {{'type': 'url', 'url': ...}}, not {raw!r}")
    if source.archive and not source.member:
        raise ValueError(f"registry entry {name!r}: an archive source must name its 'member'")
    return source


def entry_to_dict(entry: RegistryEntry) -> dict:
    """What the local registry stores for an entry (name, kind and origin are implied by where it is)."""
    raw = asdict(entry)
    for key in ("name", "kind", "origin"):
        raw.pop(key)
    raw["score_range"] = list(entry.score_range)
    raw["sources"] = [asdict(source) for source in entry.sources]
    return raw


def _entries(section: dict, kind: str, origin: str) -> dict[str, RegistryEntry]:
    return {name: entry_from_dict(name, kind, raw, origin) for name, raw in section.items()}


@cache
def load_registry() -> dict[str, dict[str, RegistryEntry]]:
    """``{"models": {...}, "depth_models": {...}}`` from the packaged registry file."""
    raw = json.loads((files("dgiqa_cli.weights") / "registry.json").read_text(encoding="utf-8"))
    return {
        "models": _entries(raw["models"], "model", "packaged"),
        "depth_models": _entries(raw["depth_models"], "depth", "packaged"),
    }


def model_entries() -> dict[str, RegistryEntry]:
    """The packaged scoring models (imported ones: :func:`local_entries`)."""
    return load_registry()["models"]


def depth_entries() -> dict[str, RegistryEntry]:
    """The packaged depth models (imported ones: :func:`local_entries`)."""
    return load_registry()["depth_models"]


def packaged_entries(kind: str) -> dict[str, RegistryEntry]:
    return model_entries() if kind == "model" else depth_entries()


def default_model_name() -> str:
    return next(name for name, entry in model_entries().items() if entry.default)


def depth_entry_for_arch(arch: str) -> RegistryEntry:
    """The registry's depth model with this encoder (``vits``, ``vitb``, ``vitl``)."""
    try:
        return depth_entries()[arch]
    except KeyError:
        known = ", ".join(depth_entries())
        raise KeyError(f"unknown depth model {arch!r}; choose one of {known}") from None


# -- the user's local registry -------------------------------------------------------------------


def dgiqa_home() -> Path:
    """The user-level folder for imported weights, as the environment says *now*.

    ``$DGIQA_HOME``, else the platform's per-user data folder (``$XDG_DATA_HOME/dgiqa``,
    by default ``~/.local/share/dgiqa`` on Linux).
    """
    if os.environ.get("DGIQA_HOME"):
        return Path(os.environ["DGIQA_HOME"]).expanduser()
    from platformdirs import user_data_path

    return user_data_path("dgiqa", appauthor=False)


def local_registry_file() -> Path:
    return dgiqa_home() / "registry.json"


def local_models_dir() -> Path:
    return dgiqa_home() / "models"


def _read_local() -> dict:
    path = local_registry_file()
    if not path.is_file():
        return {"models": {}, "depth_models": {}}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise RegistryError(f"{path}: the local weights registry is unreadable ({exc}); fix or delete it") from None
    raw.setdefault("models", {})
    raw.setdefault("depth_models", {})
    return raw


def local_entries(kind: str) -> dict[str, RegistryEntry]:
    """Weights imported by this user (``dgiqa weights import``), read from disk on every call."""
    section = _read_local()[_SECTIONS[kind]]
    home = dgiqa_home()
    out = {}
    for name, raw in section.items():
        raw = dict(raw)
        # Folders are stored relative to the registry, so that DGIQA_HOME can move.
        if raw.get("path") and not Path(raw["path"]).is_absolute():
            raw["path"] = str(home / raw["path"])
        out[name] = entry_from_dict(name, kind, raw, "local")
    return out


def find_entry(name: str, kind: str) -> RegistryEntry | None:
    """A name in the packaged registry, else in the local one, else ``None``."""
    packaged = packaged_entries(kind)
    if name in packaged:
        return packaged[name]
    return local_entries(kind).get(name)


def save_local_entry(entry: RegistryEntry) -> Path:
    """Add or replace ``entry`` in the local registry (written atomically); return the registry file."""
    raw = _read_local()
    stored = entry_to_dict(entry)
    home = dgiqa_home()
    if entry.path:
        try:
            stored["path"] = Path(entry.path).resolve().relative_to(home.resolve()).as_posix()
        except ValueError:
            stored["path"] = str(Path(entry.path).resolve())
    for kind in KINDS:  # a name lives in one section only
        raw[_SECTIONS[kind]].pop(entry.name, None)
    raw[_SECTIONS[entry.kind]][entry.name] = stored
    raw["_comment"] = "Weights imported with `dgiqa weights import`; folders are relative to this file."
    _write_json_atomic(local_registry_file(), raw)
    return local_registry_file()


def remove_local_entry(name: str) -> bool:
    raw = _read_local()
    found = any(raw[_SECTIONS[kind]].pop(name, None) is not None for kind in KINDS)
    if found:
        _write_json_atomic(local_registry_file(), raw)
    return found


def _write_json_atomic(path: Path, data: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "w") as fh:
            json.dump(data, fh, indent=2, ensure_ascii=False)
            fh.write("\n")
    except OSError as exc:
        raise RegistryError(f"{path}: cannot write the local weights registry ({exc})") from None
