"""Everything that reads or checks weight files, and the one way in: :func:`load_network`.

Like ``timm.create_model``: a weights *spec* (a registry name, a file, a folder
in the Hub format, or ``hf://owner/repo[/file][@revision]``) goes in once; the
loaded network comes out with its card (what the weights are, what their
scores mean, which depth model they were trained with, where they came from).

One file per concern, each step called once and in one direction:
``registry`` (named weights and their sources) -> ``resolve`` (spec -> local
file; ``download`` fetches a registry entry from its sources: the Hugging Face
Hub, or the authors' release link through ``release``, into dgiqa's cache with
the sha256 recorded at first download) -> ``files`` (safe reading, checksums,
strict loading).
``hubformat`` reads ``config.json``; ``importing``, ``card`` and ``push`` are
the Hub format's writers (``dgiqa weights import`` / ``push``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from dgiqa_cli.errors import MissingHubFileError, UnknownWeightsError, WeightsError, WrongKindError
from dgiqa_cli.models.spec import SPECS
from dgiqa_cli.weights.registry import AUTHORS_DEPTH_MODEL, RegistryEntry

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "AUTHORS_DEPTH_MODEL",
    "LoadedNetwork",
    "MissingHubFileError",
    "RegistryEntry",
    "UnknownWeightsError",
    "WeightsError",
    "WrongKindError",
    "load_network",
]


@dataclass
class LoadedNetwork:
    """Checked weights, their card and file, and the network they make (in eval mode on the CPU).

    ``network`` is built by ``build`` when first asked for: a caller that finds the compiled network in
    OpenVINO's cache never builds the PyTorch one (``load_network(..., lazy=True)``).
    """

    card: RegistryEntry
    path: Path
    label: str  # how the user named the weights, for messages and output rows
    build: Callable[[], nn.Module] = field(repr=False, compare=False)

    @cached_property
    def network(self) -> nn.Module:
        return self.build().eval()

    @property
    def arch(self) -> str:
        return self.card.arch

    @cached_property
    def sha256(self) -> str:
        """The weights file's sha256 (the verified one when the card knew it), for rows and caches; hashed once
        per version of the file (``digests``), not on every start."""
        from dgiqa_cli.weights.digests import file_sha256

        return self.card.sha256 or file_sha256(self.path)


def load_network(
    spec: str | os.PathLike,
    kind: str = "model",
    *,
    arch: str | None = None,
    local_only: bool = False,
    lazy: bool = False,
) -> LoadedNetwork:
    """Resolve ``spec`` (downloading if needed), check it and load it into a fresh network of its architecture.

    ``kind``: ``model`` (a scoring model) or ``depth``; ``arch``: the architecture
    the caller needs (an error if the weights hold another); ``local_only``: never
    download; ``lazy``: check the file (its sha256 when known, its architecture) now
    but build the network only when ``.network`` is first used. Raises :class:`WeightsError`
    (:class:`UnknownWeightsError` when the spec names nothing) with a message that says what to do.
    """
    from dgiqa_cli.models import ARCHITECTURES
    from dgiqa_cli.weights.digests import remembered
    from dgiqa_cli.weights.files import checksum_remedy, load_checked, read_state_dict, verify_sha256
    from dgiqa_cli.weights.hubformat import kind_of_arch
    from dgiqa_cli.weights.resolve import resolve_weights

    resolved = resolve_weights(spec, kind, local_only=local_only)
    card, state_dict = resolved.entry, None
    if card is None and lazy:  # a bare checkpoint: its tensors looked at (mapped) once per version of the file

        def look(path):
            return architecture_of(read_state_dict(path, mmap=True), resolved.label)

        detected = remembered(resolved.path, "arch", look, valid=ARCHITECTURES.__contains__)
    elif card is None:
        state_dict = read_state_dict(resolved.path)
        detected = architecture_of(state_dict, resolved.label)
    if card is None:
        card = RegistryEntry(
            name=resolved.label,
            kind=kind_of_arch(detected),
            arch=detected,
            repo="",
            filename=resolved.path.name,
            published=False,
            origin="file",
        )
    if arch is not None and card.arch != arch:
        raise WeightsError(f"{resolved.label}: holds {card.arch} weights, not {arch} weights")
    if card.score_range == (None, None) and card.arch in SPECS:  # a bare .pth: the family's range
        card = replace(card, score_range=SPECS[card.arch].score_range)
    config = dict(card.config.get("model", {}))
    if lazy:
        if resolved.sha256:
            verify_sha256(resolved.path, resolved.sha256, checksum_remedy(resolved))
        return LoadedNetwork(card, resolved.path, resolved.label, lambda: load_checked(card.arch, config, resolved))
    network = load_checked(card.arch, config, resolved, state_dict)
    return LoadedNetwork(card, resolved.path, resolved.label, lambda: network)


def architecture_of(state_dict: dict, label: str) -> str:
    """Which of our architectures a bare checkpoint's tensors make (a WeightsError naming the file if none)."""
    from dgiqa_cli.models import detect_architecture

    try:
        return detect_architecture(state_dict)
    except ValueError as exc:
        raise WeightsError(f"{label}: {exc}") from None
