"""How the OpenVINO networks could run faster in bf16: shapes fixed at compile time, and streams, in one run.

    python benchmarks/openvino_layouts.py --crops 20

Converts stand-in DGIQA and Depth Anything ViT-S (or takes them from dgiqa's cache), then times in bf16, for
each network, the first call and the best of ``--repeats`` later calls, compiled with a dynamic batch (as dgiqa
compiles them) and with the shapes fixed (20 crops; one 518 x 686 depth input); for DGIQA also two streams of
one thread, each scoring half of the crops. The matrix-product peak (bf16, 2048^3) of the same run gives each
time its share of the arithmetic limit. A second table says where a fixed-shape call's time goes, by OpenVINO
operation type (its per-node counters, ``PERF_COUNT``): what is not matrix products is what keeps a network
below the peak.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import openvino

sys.path.insert(0, str(Path(__file__).parent))
from throughput import DEPTH_GFLOP, DGIQA_GFLOP_PER_CROP, matmul_peak, standin_weights  # noqa: E402

from dgiqa_cli.inference.backends import accelerate  # noqa: E402
from dgiqa_cli.inference.backends.openvino_runtime import core, entry_folder  # noqa: E402
from dgiqa_cli.weights import load_network  # noqa: E402

CONFIG = {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY"}


def timed(work, repeats: int) -> tuple[float, float]:
    """The first call's seconds and the best of ``repeats`` later ones."""
    started = time.perf_counter()
    work()
    first = time.perf_counter() - started
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return first, best


def time_by_operation(model, inputs) -> dict[str, float]:
    """Seconds per OpenVINO operation type in one call of ``model`` (fixed shapes), from its node counters."""
    request = core().compile_model(model, "CPU", {**CONFIG, "PERF_COUNT": True}).create_infer_request()
    request.infer(inputs)  # the first call's warm-up is not counted
    request.infer(inputs)
    seconds: collections.Counter = collections.Counter()
    for node in request.profiling_info:
        seconds[node.node_type] += node.real_time.total_seconds()
    return dict(seconds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    rows, operations = [], {}
    with tempfile.TemporaryDirectory(prefix="dgiqa-layouts-") as tmp:
        dgiqa_file, depth_file = standin_weights(Path(tmp), "vits")
        crops = [rng.standard_normal((args.crops, 3, 224, 224)).astype(np.float32) for _ in range(2)]
        depth_input = [rng.standard_normal((1, 3, 518, 686)).astype(np.float32)]
        cases = (
            ("dgiqa", dgiqa_file, "model", crops, DGIQA_GFLOP_PER_CROP * args.crops),
            ("depth-anything-vits", depth_file, "depth", depth_input, DEPTH_GFLOP["vits"]),
        )
        for arch, weights, kind, inputs, gflop in cases:
            loaded = load_network(weights, kind)
            accelerate(loaded.network, arch, precision="bf16", weights_sha256=loaded.sha256)  # into the cache
            xml = entry_folder(arch, loaded.sha256) / "model.xml"
            for layout in ("dynamic", "fixed"):
                model = core().read_model(str(xml))
                if layout == "fixed":
                    model.reshape(
                        {port.get_any_name(): list(x.shape) for port, x in zip(model.inputs, inputs, strict=True)}
                    )
                request = core().compile_model(model, "CPU", CONFIG).create_infer_request()
                first, best = timed(lambda r=request, x=inputs: r.infer(x), args.repeats)
                rows.append((arch, f"{layout} shapes, 1 stream", first, best, gflop))
                if layout == "fixed":
                    operations[arch] = time_by_operation(model, inputs)
            if arch == "dgiqa":
                streams = core().compile_model(
                    core().read_model(str(xml)), "CPU", {**CONFIG, "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 2}
                )
                queue = openvino.AsyncInferQueue(streams, 2)
                halves = np.array_split(np.arange(args.crops), 2)

                def two_streams(queue=queue, halves=halves, inputs=inputs):
                    for half in halves:
                        queue.start_async([x[half] for x in inputs], share_inputs=True)
                    queue.wait_all()

                first, best = timed(two_streams, args.repeats)
                rows.append((arch, "dynamic shapes, 2 streams x 1 thread", first, best, gflop))
    peak = matmul_peak()["openvino_bf16"]
    print(f"bf16, OpenVINO {openvino.get_version()}; matrix-product peak in this run: {peak:.0f} GFLOP/s")
    print("| network | compiled with | first call s | later calls s (best) | share of the bf16 limit |")
    print("|---|---|---|---|---|")
    for arch, layout, first, best, gflop in rows:
        print(f"| {arch} | {layout} | {first:.2f} | {best:.2f} | {100 * gflop / best / peak:.0f}% |")
    print()
    print("Where a fixed-shape call's time goes (share of the operations' summed time; the 8 largest types):")
    print("| network | " + " | ".join(f"{i}." for i in range(1, 9)) + " |")
    print("|---|" + "---|" * 8)
    for arch, seconds in operations.items():
        total = sum(seconds.values())
        largest = sorted(seconds.items(), key=lambda item: -item[1])[:8]
        print(f"| {arch} | " + " | ".join(f"{kind} {100 * t / total:.1f}%" for kind, t in largest) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
