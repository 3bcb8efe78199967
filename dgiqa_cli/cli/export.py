"""``dgiqa export``: the networks as ONNX and OpenVINO IR files with a card, for other runtimes."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from dgiqa_cli.cli.common import QuietOpt, app, busy, err, fail, out, setup_logging
from dgiqa_cli.cli.options import DepthModelOpt, DepthWeightsOpt, ModelOpt, WeightsOpt
from dgiqa_cli.errors import EXIT_OK, EXIT_USAGE
from dgiqa_cli.io.names import printable


class ExportFormat(str, Enum):
    onnx = "onnx"
    openvino = "openvino"


@app.command("export")
def export(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the files into (created if missing).")],
    formats: Annotated[
        list[ExportFormat] | None,
        typer.Option("--format", "-f", help="onnx (ONNX Runtime, TensorRT, ...) and/or openvino (IR). Default: both."),
    ] = None,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    depth_model: DepthModelOpt = None,
    depth_weights: DepthWeightsOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite files that exist.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the card as JSON, and nothing else, on stdout.")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Write the scoring network (and DGIQA's depth network) as ONNX / OpenVINO IR files, with card.json.

    The graphs take what the models take: normalised 224x224 crops (batch dynamic) and,
    for Depth Anything, the normalised picture (height and width dynamic, multiples of 14).
    card.json says each file's inputs, outputs, normalisation and the weights' sha256.

    [dim]Examples:[/]

      dgiqa export deploy/ --weights DGIQA_Koniq10k.pth

      dgiqa export deploy/ --format onnx --depth-model vits
    """
    from dgiqa_cli.inference.backends.export import export_networks
    from dgiqa_cli.inference.model import create_model

    setup_logging(quiet)
    chosen = tuple(f.value for f in formats) if formats else ("onnx", "openvino")
    if out_dir.exists() and not out_dir.is_dir():
        raise fail(f"{printable(str(out_dir))}: exists and is not a folder", EXIT_USAGE)
    taken = [p for p in sorted(out_dir.glob("*")) if p.suffix in (".onnx", ".xml", ".bin") or p.name == "card.json"]
    if taken and not force:
        raise fail(f"{printable(str(taken[0]))} exists; use --force to overwrite, or another folder", EXIT_USAGE)
    options = {
        "family": model.value if model else None,
        "depth_model": depth_model.value if depth_model else None,
        "depth_weights": depth_weights,
    }
    with busy("Loading models…"):
        try:
            pipeline = create_model(weights, device="cpu", precision="fp32", backend="torch", **options)
        except ValueError as exc:
            raise fail(str(exc), EXIT_USAGE) from None
    networks = [(pipeline.network, pipeline.arch, pipeline.weights.sha256)]
    if pipeline.depth is not None:
        networks.append((pipeline.depth, pipeline.depth_weights.arch, pipeline.depth_weights.sha256))
    with busy("Converting…"):
        try:
            card = export_networks(out_dir, networks, formats=chosen)
        except OSError as exc:
            raise fail(f"{printable(str(out_dir))}: cannot write there ({exc.strerror or exc})", EXIT_USAGE) from None
    if as_json:
        sys.stdout.write(json.dumps(card, indent=2) + "\n")
        raise typer.Exit(EXIT_OK)
    table = Table(title=f"{pipeline.arch} · {escape(pipeline.model_name)}", header_style="bold")
    for column in ("network", "files", "inputs", "output"):
        table.add_column(column, overflow="fold")
    for network in card["networks"]:
        files = [f for value in network["files"].values() for f in ([value] if isinstance(value, str) else value)]
        inputs = ", ".join(f"{i['name']} {i['shape']}" for i in network["inputs"])
        outputs = ", ".join(f"{o['name']} {o['shape']}" for o in network["outputs"])
        table.add_row(network["arch"], escape(", ".join(files)), escape(inputs), escape(outputs))
    out.print(table)
    if not quiet:
        err.print(f"wrote {printable(str(out_dir / 'card.json'))}", highlight=False)
