"""Named weights: what ``--weights NAME`` and ``--depth-weights NAME`` mean.

The table lives in ``weights/registry.json`` (installed as
``dgiqa_cli.weights``), so where weights live is data, never code. Each entry
carries its Hub location, checksum, training set and score range.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files


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

    @property
    def hub_uri(self) -> str:
        return f"hf://{self.repo}/{self.filename}"


def _entries(section: dict, kind: str) -> dict[str, RegistryEntry]:
    out = {}
    for name, fields in section.items():
        fields = dict(fields)
        if "score_range" in fields:
            fields["score_range"] = tuple(fields["score_range"])
        out[name] = RegistryEntry(name=name, kind=kind, **fields)
    return out


@cache
def load_registry() -> dict[str, dict[str, RegistryEntry]]:
    """``{"models": {...}, "depth_models": {...}}`` from the packaged registry file."""
    raw = json.loads((files("dgiqa_cli.weights") / "registry.json").read_text(encoding="utf-8"))
    return {"models": _entries(raw["models"], "model"), "depth_models": _entries(raw["depth_models"], "depth")}


def model_entries() -> dict[str, RegistryEntry]:
    return load_registry()["models"]


def depth_entries() -> dict[str, RegistryEntry]:
    return load_registry()["depth_models"]


def default_model_name() -> str:
    return next(name for name, entry in model_entries().items() if entry.default)


def depth_entry_for_arch(arch: str) -> RegistryEntry:
    """The registry's depth model with this encoder (``vits``, ``vitb``, ``vitl``)."""
    try:
        return depth_entries()[arch]
    except KeyError:
        known = ", ".join(depth_entries())
        raise KeyError(f"unknown depth model {arch!r}; choose one of {known}") from None
