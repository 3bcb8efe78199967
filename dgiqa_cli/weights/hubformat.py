"""The Hub format's ``config.json``: what a folder or Hub repository of weights holds.

A folder (or Hub repository) in this format has ``model.safetensors``,
``config.json`` (architecture, model options, depth model, score range,
training set, source and its sha256, the sha256 of the weights file) and a
``README.md`` model card.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from dgiqa_cli.errors import WeightsError
from dgiqa_cli.models import ARCHITECTURES, DEPTH_ENCODERS
from dgiqa_cli.weights.registry import RegistryEntry

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
DEFAULT_HUB_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CONFIG_FORMAT = "dgiqa-weights"
CONFIG_FORMAT_VERSION = 1


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
