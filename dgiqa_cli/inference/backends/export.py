"""The networks as files for other runtimes: ONNX (ONNX Runtime, TensorRT, ...) and OpenVINO IR, with a card.

    export_networks("out/", [(model, "dgiqa", sha), (depth, "depth-anything-vits", depth_sha)])

writes ``out/<arch>.onnx``, ``out/<arch>.xml`` + ``.bin`` and ``out/card.json``
(for ``dgiqa export``). The graphs are those of :mod:`.graphs`: dynamic batch,
and for Depth Anything dynamic height and width (multiples of 14), the
position-embedding resize inside the graph, so that one file serves every
picture shape. Weights stay fp32; the runtime picks its precision.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from dgiqa_cli.inference.backends.graphs import NetworkGraph, network_graph
from dgiqa_cli.inference.backends.openvino_runtime import state_digest
from dgiqa_cli.version import __version__

ONNX_OPSET = 17  # LayerNormalization is native from 17; ONNX Runtime >= 1.13 and TensorRT 8.6 read it
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
INPUT_NOTES = {
    "rgb": "224 x 224 RGB crops: (pixel / 255 - mean) / std per channel, ImageNet mean and std",
    "depth": (
        "224 x 224 crops of the depth picture (Depth Anything's output, resized to the picture, min-max scaled "
        "to 0..255, truncated to uint8, one channel repeated 3 times) at the RGB crops' positions, "
        "normalised like rgb"
    ),
    "image": (
        "RGB / 255, resized (bicubic) so that both sides are >= 518 keeping the aspect ratio, each side a "
        "multiple of 14, then ImageNet-normalised"
    ),
}
OUTPUT_NOTES = {
    "dgiqa": "one score per crop in [0, 1], higher is better; a picture's score is the mean over its crops",
    "life-iqa": "one MOS estimate per crop (unbounded); a picture's score is the mean over its crops",
    "depth": "relative inverse depth (larger = nearer), same height and width as the input",
}


def export_onnx(graph: NetworkGraph, path: str | os.PathLike, opset: int = ONNX_OPSET) -> Path:
    """Trace ``graph`` into an ONNX file with its dynamic dimensions named (batch, height, width)."""
    path = Path(path)
    names = {0: "batch", 2: "height", 3: "width"}
    dynamic = {i.name: {d: names[d] for d, size in enumerate(i.shape) if size is None} for i in graph.inputs}
    dynamic[graph.output] = {d: name for d, name in enumerate(graph.output_shape) if isinstance(name, str)}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph.module,
            graph.examples(),
            str(path),
            dynamo=False,  # the TorchScript exporter: no onnxscript needed, dynamic axes as named here
            opset_version=opset,
            input_names=[i.name for i in graph.inputs],
            output_names=[graph.output],
            dynamic_axes=dynamic,
        )
    return path


def export_openvino(
    graph: NetworkGraph, path: str | os.PathLike, weights_sha256: str | None = None, cache_dir=None
) -> Path:
    """``graph`` as OpenVINO IR (``.xml`` + ``.bin`` beside it, fp32 weights); taken from the compiled-model
    cache when these weights were converted before (``dgiqa score`` on the CPU leaves them there)."""
    import openvino

    from dgiqa_cli.inference.backends.openvino_runtime import load_or_convert

    path = Path(path)
    model, _ = load_or_convert(graph, weights_sha256 or state_digest(graph.module), cache_dir)
    openvino.save_model(model, str(path), compress_to_fp16=False)
    return path


def network_card(graph: NetworkGraph, files: dict[str, str], weights_sha256: str | None) -> dict:
    """What a deployer needs to feed one exported network and read its output."""
    return {
        "arch": graph.arch,
        "files": files,
        "weights_sha256": weights_sha256,
        "precision": "fp32",
        "inputs": [
            {
                "name": i.name,
                "shape": [("batch", None, "height", "width")[d] if s is None else s for d, s in enumerate(i.shape)],
                "dtype": "float32",
                "layout": "NCHW",
                "normalisation": {**IMAGENET, "note": INPUT_NOTES[i.name]},
            }
            for i in graph.inputs
        ],
        "outputs": [
            {
                "name": graph.output,
                "shape": list(graph.output_shape),
                "dtype": "float32",
                "note": OUTPUT_NOTES.get(graph.output if graph.output == "depth" else graph.arch, ""),
            }
        ],
    }


def export_networks(
    out_dir: str | os.PathLike,
    networks: list[tuple[nn.Module, str, str | None]],
    formats: tuple[str, ...] = ("onnx", "openvino"),
    opset: int = ONNX_OPSET,
    cache_dir: str | os.PathLike | None = None,
) -> dict:
    """Write each ``(module, arch, weights_sha256)`` in ``formats`` to ``out_dir``, and ``card.json``.
    ``cache_dir``: the OpenVINO cache to reuse (and fill). Returns the card."""
    unknown = set(formats) - {"onnx", "openvino"}
    if unknown:
        raise ValueError(f"unknown export format(s) {sorted(unknown)}; choose onnx and/or openvino")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cards = []
    for module, arch, sha in networks:
        graph = network_graph(module.eval(), arch)
        files = {}
        if "onnx" in formats:
            files["onnx"] = export_onnx(graph, out / f"{arch}.onnx", opset).name
        if "openvino" in formats:
            xml = export_openvino(graph, out / f"{arch}.xml", sha or state_digest(module), cache_dir)
            files["openvino"] = [xml.name, xml.with_suffix(".bin").name]
        cards.append(network_card(graph, files, sha))
    card = {"dgiqa": __version__, "torch": torch.__version__, "onnx_opset": opset, "networks": cards}
    if "openvino" in formats:
        import openvino

        card["openvino"] = openvino.get_version()
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return card
