"""Options that travel together, declared once: :class:`ScorerOptions` and :func:`with_options`.

Typer reads a command's options from its signature and has no options object of its own. A command names a
group instead (``*, options: ScorerOptions``) and :func:`with_options` puts the group's options in its place,
each declared once as a dataclass field carrying its Typer declaration (:func:`cli_option`); the command
receives them packed into the dataclass. ``--help``, shell completion and the generated CLI reference see
ordinary options.

Not a command: :mod:`dgiqa_cli.cli` skips it when registering commands, and any command may import it.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Annotated, Any

import typer

from dgiqa_cli.cli.common import busy
from dgiqa_cli.errors import DGIQAError, UsageError
from dgiqa_cli.inference.defaults import (
    DEFAULT_CROP_MODE,
    DEFAULT_CROPS,
    DEFAULT_DEVICE,
    DEFAULT_PRECISION,
    DEFAULT_SEED,
    MAX_PIXELS,
)
from dgiqa_cli.models import DEPTH_ENCODERS
from dgiqa_cli.models.spec import FAMILIES


class CropMode(str, Enum):
    official = "official"
    grid = "grid"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Backend(str, Enum):
    auto = "auto"
    torch = "torch"
    openvino = "openvino"


# Depth Anything's encoders as Typer choices, from the models package (which imports torch only when building).
DepthModel = Enum("DepthModel", {encoder: encoder for encoder in DEPTH_ENCODERS}, type=str)


# The families as Typer choices, from the one table of them (importing the specs does not import torch).
ModelFamily = Enum("ModelFamily", {family.replace("-", "_"): family for family in FAMILIES}, type=str)


ModelOpt = Annotated[
    ModelFamily | None,
    typer.Option(
        "--model",
        "-m",
        help="Model family: dgiqa (scores in [0, 1], the default) or life-iqa (unbounded MOS regression). "
        "Default: whatever --weights holds.",
        show_default=False,
    ),
]
WeightsOpt = Annotated[
    str | None,
    typer.Option(
        "--weights",
        "-w",
        help="Weights: a registry name (dgiqa-koniq \\[default], dgiqa-kadid, life-iqa-koniq) or a name made "
        "with `dgiqa weights import`, a .pth/.safetensors file such as the authors' DGIQA_Koniq10k.pth, a folder "
        "in the Hub format, or hf://OWNER/REPO\\[/FILE].",
        show_default=False,
    ),
]
DepthModelOpt = Annotated[
    DepthModel | None,
    typer.Option(
        help="Depth Anything encoder. Default: the one the weights were trained with (ViT-L for "
        "the authors' releases); another one is faster but shifts scores.",
        show_default=False,
    ),
]
DepthWeightsOpt = Annotated[
    str | None,
    typer.Option(
        help="Depth Anything weights: a name (vits, vitb, vitl), a file (pytorch_model.bin) or "
        "hf://OWNER/REPO\\[/FILE]. Default: the registry's copy for --depth-model.",
        show_default=False,
    ),
]
CropsOpt = Annotated[int, typer.Option(min=1, help="Number of 224x224 crops averaged per image (the paper uses 20).")]
CropModeOpt = Annotated[
    CropMode, typer.Option(help="official: the authors' seeded random positions; grid: evenly spread.")
]
SeedOpt = Annotated[int, typer.Option(help="Seed of the official crop positions (the authors use 42).")]
DeviceOpt = Annotated[
    str,
    typer.Option(
        help="Where to run: auto, cpu, cuda, cuda:N (the N-th GPU) or mps. auto picks CUDA, then MPS, then CPU."
    ),
]
PrecisionOpt = Annotated[
    Precision | None,
    typer.Option(
        help="auto: bf16 where the hardware computes it (GPUs; CPUs with AVX-512 BF16 or AMX: 2x faster than "
        "fp32 on 2 cores, scores within about 1e-3), fp16 on other GPUs, fp32 on other CPUs. fp32 is the exact "
        "mode: it reproduces the authors' numbers. Default: $DGIQA_PRECISION, else auto.",
        show_default=False,
    ),
]
BackendOpt = Annotated[
    Backend | None,
    typer.Option(
        help="What runs the networks: auto (OpenVINO on the CPU: the authors' flow's speed times 1.4 in fp32, "
        "2.65 in bf16, as measured on 2 cores; PyTorch on GPUs), torch or openvino. Default: $DGIQA_BACKEND, "
        "else auto. OpenVINO compiles each network once and caches it "
        "($DGIQA_CACHE); fp32 keeps every score within 1e-4 of PyTorch's.",
        show_default=False,
    ),
]
MaxPixelsOpt = Annotated[int, typer.Option(min=1, help="Refuse images with more pixels than this (protects memory).")]


def cli_option(declaration: Any, default: Any = None) -> Any:
    """A dataclass field that is also a command-line option: ``declaration`` is its ``Annotated`` Typer type."""
    return dataclasses.field(default=default, metadata={"cli": declaration})


@dataclasses.dataclass(frozen=True)
class ScorerOptions:
    """What a scoring command hands to :class:`~dgiqa_cli.inference.scorer.Scorer`: its keyword arguments, with the
    library's defaults (:mod:`dgiqa_cli.inference.defaults`). Choices are plain strings, as the library takes them."""

    model: str | None = cli_option(ModelOpt)
    weights: str | None = cli_option(WeightsOpt)
    depth_model: str | None = cli_option(DepthModelOpt)
    depth_weights: str | None = cli_option(DepthWeightsOpt)
    crops: int = cli_option(CropsOpt, DEFAULT_CROPS)
    crop_mode: str = cli_option(CropModeOpt, DEFAULT_CROP_MODE)
    seed: int = cli_option(SeedOpt, DEFAULT_SEED)
    device: str = cli_option(DeviceOpt, DEFAULT_DEVICE)
    precision: str | None = cli_option(PrecisionOpt, DEFAULT_PRECISION)
    backend: str | None = cli_option(BackendOpt)
    max_pixels: int = cli_option(MaxPixelsOpt, MAX_PIXELS)

    def as_kwargs(self) -> dict:
        """The Scorer's keyword arguments (also what a Ray actor or replica builds its Scorer from)."""
        return dataclasses.asdict(self)

    def build(self):
        """The Scorer, loaded under a spinner. Its own checks of option values (plain ``ValueError`` s, such as a
        GPU that is not there) are usage errors; every other library error reaches the command line's handler."""
        from dgiqa_cli.inference.scorer import Scorer

        with busy("Loading models…"):
            try:
                return Scorer(**self.as_kwargs())
            except DGIQAError:
                raise
            except ValueError as exc:
                raise UsageError(str(exc)) from None


#: The options of the model alone (the scoring settings come from elsewhere, e.g. a run's rows).
MODEL_OPTIONS = ("model", "weights", "depth_model", "depth_weights", "device", "precision", "backend")


def with_options(**offered: Sequence[str]) -> Callable[[Callable], Callable]:
    """Put the options of a group in place of each command parameter annotated with the group's dataclass (one
    whose fields were made with :func:`cli_option`), and pack the values back into it for the command.

    ``offered``: parameter name -> the fields it offers (default: all); the others keep their defaults. Declare the
    parameter keyword-only and without a default (``*, options: ScorerOptions``): the command line fills it.
    """

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command, eval_str=True)
        groups = {p.name: _group_fields(p.annotation, offered.get(p.name)) for p in signature.parameters.values()}
        groups = {name: (signature.parameters[name].annotation, fields) for name, fields in groups.items() if fields}
        unknown = set(offered) - set(groups)
        if unknown:
            raise TypeError(f"{command.__name__}: no parameter {', '.join(sorted(unknown))} holds options")
        parameters = []
        for parameter in signature.parameters.values():
            if parameter.name not in groups:
                parameters.append(parameter)
                continue
            for field in groups[parameter.name][1]:
                parameters.append(
                    parameter.replace(name=field.name, annotation=field.metadata["cli"], default=field.default)
                )

        @functools.wraps(command)
        def run(**values: Any) -> Any:
            for name, (cls, fields) in groups.items():
                values[name] = cls(**{f.name: _plain(values.pop(f.name)) for f in fields})
            return command(**values)

        run.__signature__ = signature.replace(parameters=parameters)  # a name offered twice raises here, at import
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        return run

    return decorate


def _group_fields(annotation: Any, names: Sequence[str] | None) -> list[dataclasses.Field]:
    """The fields of ``annotation`` that are options (those in ``names``, if given); none if it is no such group."""
    if not (isinstance(annotation, type) and dataclasses.is_dataclass(annotation)):
        return []
    fields = [f for f in dataclasses.fields(annotation) if "cli" in f.metadata]
    if names is not None:
        missing = set(names) - {f.name for f in fields}
        if missing:
            raise TypeError(f"{annotation.__name__} has no option {', '.join(sorted(missing))}")
        fields = [f for f in fields if f.name in names]
    return fields


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value
