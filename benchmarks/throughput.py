"""Throughput of `dgiqa batch` against the authors' image-after-image flow, measured in one run.

    python benchmarks/throughput.py --images 256 --depth-model vits --crops 20

Makes N synthetic 1024x768 JPEGs and stand-in weights (the speed of a network
does not depend on its weights), then times, in this order:

  (a) sequential: the authors' flow, image after image in fp32 (read, depth map
      of one image, crops, DGIQA on them): ``Scorer(precision="fp32").score``;
  (b) batch: ``dgiqa batch``'s pipeline with its defaults (worker threads,
      batched depth and crops, bf16 on GPUs), over every image; on the CPU its
      networks run through ``--backend`` (default ``auto``: OpenVINO) in
      ``--precision`` (fp32 = exact mode, bf16 = fast mode).

The authors' flow on the CPU:

    python benchmarks/throughput.py --device cpu --images 4 --sequential-images 4 --rounds 2 --precision fp32

Model loading is outside both timings; each gets one untimed warm-up, then the
two flows alternate for ``--rounds`` rounds, in the order A B, B A, ... (so
neither always runs first, and a machine that slows down or speeds up during
the run weighs on both alike). Prints images/s for each,
their ratio, the largest score difference between the two flows, peak GPU
memory and peak host RSS; on the CPU also large matrix products timed in the
same run (fp32 and bf16) and the share of that peak each flow reaches.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from dgiqa_cli import __version__
from dgiqa_cli.inference.engine import BatchRunner, default_batch_size, default_workers
from dgiqa_cli.inference.scorer import Scorer
from dgiqa_cli.models import build_model
from dgiqa_cli.models.seeded_weights import manifest_of, seeded_state


def make_jpegs(folder: Path, count: int, size=(768, 1024)) -> list[str]:
    """Photo-like pictures (smooth shapes plus grain), each different, so decoding does real work."""
    rng = np.random.default_rng(0)
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    paths = []
    for i in range(count):
        base = np.stack([np.sin(xx / (40 + 7 * c + i) + c) * np.cos(yy / (55 + 5 * c)) for c in range(3)], -1)
        grain = rng.normal(0, 0.15, (height // 8, width // 8, 3)).astype(np.float32)
        picture = (base + cv2.resize(grain, (width, height))) * 80 + 128
        path = folder / f"bench_{i:05d}.jpg"
        cv2.imwrite(str(path), np.clip(picture, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(str(path))
    return paths


def standin_weights(folder: Path, depth_model: str) -> tuple[Path, Path]:
    paths = []
    for arch, name in (("dgiqa", "dgiqa.pth"), (f"depth-anything-{depth_model}", "depth.pth")):
        state = seeded_state(manifest_of(build_model(arch).state_dict()), seed=0)
        torch.save(state, folder / name)
        paths.append(folder / name)
    return paths[0], paths[1]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_gpu_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def gpu_peak_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


class Timer:
    """Adds up the images and seconds of one flow over the rounds, and its peaks."""

    def __init__(self, device: torch.device):
        self.device, self.images, self.seconds, self.gpu_peak = device, 0, 0.0, None

    def measure(self, images: int, work) -> None:
        reset_gpu_peak(self.device)
        started = time.perf_counter()
        work()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - started
        self.images += images
        peak = gpu_peak_mib(self.device)
        self.gpu_peak = peak if self.gpu_peak is None else max(self.gpu_peak, peak)

    def report(self, **extra) -> dict:
        return {
            "images": self.images,
            "seconds": self.seconds,
            "images_per_s": self.images / self.seconds,
            "gpu_peak_mib": self.gpu_peak,
            "host_rss_peak_mib": peak_rss_mib(),
            **extra,
        }


def sequential_flow(scorer: Scorer, paths: list[str], scores: dict):
    def work():
        for path in paths:
            result = scorer.score(path)
            assert result.ok, result.error
            scores[path] = result.score

    return work


def batch_flow(runner: BatchRunner, paths: list[str], scores: dict):
    def work():
        failures = []

        def keep(result):
            if not result.ok:
                failures.append(result)
            scores[result.path] = result.score

        runner.run(paths, keep)
        assert not failures, failures[:3]

    return work


# Arithmetic per image (GFLOP, PERF_NOTES.md): Depth Anything at 518 x 686, and DGIQA per 224 crop.
DEPTH_GFLOP = {"vits": 210.0, "vitl": 1850.0}
DGIQA_GFLOP_PER_CROP = 22.0


def matmul_peak(size: int = 2048, repeats: int = 5) -> dict:
    """GFLOP/s of large matrix products in this run: PyTorch fp32, PyTorch bf16, and OpenVINO fp32 / bf16
    (oneDNN, what the OpenVINO backend's matrix work runs on); the best of ``repeats``."""
    flops, peaks = 2 * size**3, {}
    for dtype, name in ((torch.float32, "torch_fp32"), (torch.bfloat16, "torch_bf16")):
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        a @ b
        best = min(_timed(lambda a=a, b=b: a @ b) for _ in range(repeats))
        peaks[name] = flops / best / 1e9
    try:
        import openvino
        import openvino.opset13 as ops

        x = ops.parameter([size, size], openvino.Type.f32)
        w = ops.constant(np.random.default_rng(0).standard_normal((size, size)).astype(np.float32))
        model = openvino.Model([ops.matmul(x, w, False, False)], [x])
        data = np.random.default_rng(1).standard_normal((size, size)).astype(np.float32)
        for hint in ("f32", "bf16"):
            compiled = openvino.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint})
            request = compiled.create_infer_request()
            request.infer([data])
            best = min(_timed(lambda r=request: r.infer([data])) for _ in range(repeats))
            peaks[f"openvino_{hint}"] = flops / best / 1e9
    except Exception as exc:  # no OpenVINO here: the torch numbers stand alone
        print(f"(OpenVINO matmul not timed: {exc})", file=sys.stderr)
    return peaks


def _timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def make_batch_scorer(dgiqa_weights, args, common) -> tuple[Scorer, dict]:
    """The batch flow's Scorer on ``--backend`` / ``--precision``; returns it and its start time."""
    started = time.perf_counter()
    scorer = Scorer(dgiqa_weights, precision=args.precision, backend=args.backend, **common)
    return scorer, {"load_s": time.perf_counter() - started, "backend": scorer.backend}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=128, help="pictures for the batch run (default 128)")
    parser.add_argument(
        "--sequential-images",
        type=int,
        default=16,
        help="pictures for the slow sequential run (default 16; it runs at a steady pace)",
    )
    parser.add_argument("--depth-model", default="vits", choices=["vits", "vitb", "vitl"])
    parser.add_argument("--crops", type=int, default=20)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=None, help="default: dgiqa batch's default")
    parser.add_argument("--workers", type=int, default=None, help="default: dgiqa batch's default")
    parser.add_argument("--compile", action="store_true", help="torch.compile in the batch run")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "openvino"], help="batch flow's backend")
    parser.add_argument("--precision", default="auto", help="batch flow's precision (fp32 = exact, bf16 = fast)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="dgiqa's cache, compiled networks included (default: $DGIQA_CACHE, else the user cache)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="times each flow runs, alternating (default 2)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.cache_dir is not None:
        os.environ["DGIQA_CACHE"] = str(args.cache_dir)

    with tempfile.TemporaryDirectory(prefix="dgiqa-bench-") as tmp:
        folder = Path(tmp)
        print(f"making {args.images} synthetic 1024x768 JPEGs and stand-in weights ...", file=sys.stderr)
        paths = make_jpegs(folder, max(args.images, args.sequential_images))
        dgiqa_weights, depth_weights = standin_weights(folder, args.depth_model)
        common = dict(depth_model=args.depth_model, depth_weights=depth_weights, crops=args.crops, device=args.device)

        sequential_scorer = Scorer(dgiqa_weights, precision="fp32", backend="torch", **common)  # the authors' flow
        device = sequential_scorer.device
        batch_scorer, start = make_batch_scorer(dgiqa_weights, args, common)
        print(f"batch flow: {start}", file=sys.stderr)
        if args.compile:
            batch_scorer.compile()
        batch_size = args.batch_size or default_batch_size(device)
        workers = default_workers(device) if args.workers is None else args.workers
        runner = BatchRunner(batch_scorer, batch_size=batch_size, workers=workers)

        # Warm-ups (untimed): first kernels, cuDNN's choices, compilation.
        sequential_scorer.score(paths[0])
        runner.run(paths[:batch_size], lambda _: None)
        # The flows alternate, in the order A B, B A, A B, ... so that neither always runs first and a
        # machine slowing down or speeding up during the run weighs on both alike.
        peaks = matmul_peak() if device.type == "cpu" else {}
        sequential_timer, batch_timer = Timer(device), Timer(device)
        sequential_scores, batch_scores = {}, {}
        flows = [
            (
                sequential_timer,
                args.sequential_images,
                sequential_flow(sequential_scorer, paths[: args.sequential_images], sequential_scores),
            ),
            (batch_timer, args.images, batch_flow(runner, paths[: args.images], batch_scores)),
        ]
        for round_number in range(args.rounds):
            for timer, images, work in flows if round_number % 2 == 0 else reversed(flows):
                timer.measure(images, work)
        sequential = sequential_timer.report()
        batched = batch_timer.report(
            batch_size=runner.batch_size, workers=workers, precision=batch_scorer.precision, **start
        )
        common_paths = sequential_scores.keys() & batch_scores.keys()
        drift = max((abs(sequential_scores[p] - batch_scores[p]) for p in common_paths), default=None)
        if device.type == "cpu" and peaks and args.depth_model in DEPTH_GFLOP:
            gflop = DEPTH_GFLOP[args.depth_model] + DGIQA_GFLOP_PER_CROP * args.crops
            # The machine's peak in the flow's precision: the faster of PyTorch's and oneDNN's (OpenVINO) products.
            fp32_peak = max(peaks["torch_fp32"], peaks.get("openvino_f32", 0))
            bf16_peak = max(peaks["torch_bf16"], peaks.get("openvino_bf16", 0))
            fast = batch_scorer.precision in ("bf16", "fp16")
            for row, peak in ((sequential, fp32_peak), (batched, bf16_peak if fast else fp32_peak)):
                row["share_of_matmul_peak"] = gflop * row["images_per_s"] / peak

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    report = {
        "device": name,
        "torch": torch.__version__,
        "depth_model": args.depth_model,
        "crops": args.crops,
        "image_size": "1024x768",
        "compile": args.compile,
        "dgiqa": __version__,
        "matmul_gflops": peaks,
        "max_score_drift": drift,
        "rounds": args.rounds,
        "sequential": sequential,
        "batch": batched,
        "ratio": batched["images_per_s"] / sequential["images_per_s"],
    }
    print(f"device: {name}, depth {args.depth_model}, {args.crops} crops, 1024x768 JPEGs")
    if peaks:
        print("matmul GFLOP/s (2048^3, this run): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))
    print(f"{'flow':<12}{'images':>8}{'images/s':>11}{'GPU peak MiB':>15}{'host RSS MiB':>15}{'% of peak':>11}")
    for label, row in (("sequential", sequential), ("batch", batched)):
        gpu = f"{row['gpu_peak_mib']:.0f}" if row["gpu_peak_mib"] is not None else "-"
        share = f"{100 * row['share_of_matmul_peak']:.0f}%" if "share_of_matmul_peak" in row else "-"
        print(
            f"{label:<12}{row['images']:>8}{row['images_per_s']:>11.2f}{gpu:>15}"
            f"{row['host_rss_peak_mib']:>15.0f}{share:>11}"
        )
    drift_text = f"{drift:.2g}" if drift is not None else "-"
    print(
        f"ratio (batch / sequential): {report['ratio']:.2f}x   max score drift: {drift_text}   "
        f"[batch: {batched['backend']} {batched['precision']}, batch size {batched['batch_size']}, "
        f"{batched['workers']} workers]"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
