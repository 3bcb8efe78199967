"""Throughput of dgiqa's scoring flows against the authors' image-after-image flow, measured in one run.

    python benchmarks/throughput.py --device cpu --depth-model vits --crops 20 --images 4 --sequential-images 4

Makes N synthetic 1024x768 JPEGs and stand-in weights (the speed of a network does not depend on its weights),
then times these flows (``--flows``; on the CPU all four, on a GPU ``authors`` and ``default``):

  authors     the authors' flow, image after image in fp32 with PyTorch (read, depth map of one image, crops,
              DGIQA on them): ``Scorer(precision="fp32", backend="torch").score``;
  torch-fp32  ``dgiqa batch``'s pipeline (worker threads, batched depth and crops) with PyTorch in fp32;
  exact       ``dgiqa batch --precision fp32``: the exact mode on the default backend (OpenVINO on the CPU);
  default     ``dgiqa batch`` as it comes (``--precision`` / ``--backend``, default auto: bf16 where the
              hardware computes it).

Model loading is outside the timings; each flow gets one untimed warm-up, then the flows alternate for
``--rounds`` rounds, in the order A B C D, D C B A, ... (so that no flow always runs first, and a machine that
slows down or speeds up during the run weighs on all alike). Prints images/s for each, its ratio to the authors'
flow, the largest score difference from the authors' flow on the pictures both scored, peak GPU memory and peak
host RSS; on the CPU also large matrix products timed in the same run (fp32 and bf16), and the share of the
arithmetic limit each flow reaches (its GFLOP per picture times pictures/s over the peak in its precision).
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


# Arithmetic per image (GFLOP, PERF_NOTES.md): about 650 with ViT-S depth and 20 crops, of which DGIQA's 20
# crops are about 482 (24.1 a crop); Depth Anything at 518 x 686 is the rest (168; 1808 for ViT-L, of 2290).
DEPTH_GFLOP = {"vits": 168.0, "vitl": 1808.0}
DGIQA_GFLOP_PER_CROP = 24.1


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


FLOWS = ("authors", "torch-fp32", "exact", "default")


def flow_settings(name: str, args) -> dict:
    """The Scorer's settings of flow ``name``."""
    return {
        "authors": {"precision": "fp32", "backend": "torch"},
        "torch-fp32": {"precision": "fp32", "backend": "torch"},
        "exact": {"precision": "fp32", "backend": "auto"},
        "default": {"precision": args.precision, "backend": args.backend},
    }[name]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=128, help="pictures for each batch flow (default 128)")
    parser.add_argument(
        "--sequential-images",
        type=int,
        default=16,
        help="pictures for the slow authors' flow (default 16; it runs at a steady pace)",
    )
    parser.add_argument("--depth-model", default="vits", choices=["vits", "vitb", "vitl"])
    parser.add_argument("--crops", type=int, default=20)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--flows",
        default=None,
        help=f"comma-separated, from {', '.join(FLOWS)} (default: all on the CPU, authors,default on a GPU)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="default: dgiqa batch's default")
    parser.add_argument("--workers", type=int, default=None, help="default: dgiqa batch's default")
    parser.add_argument("--compile", action="store_true", help="torch.compile in the default flow")
    parser.add_argument(
        "--backend", default="auto", choices=["auto", "torch", "openvino"], help="default flow's backend"
    )
    parser.add_argument("--precision", default="auto", help="default flow's precision (auto, fp32, bf16)")
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

        authors = Scorer(dgiqa_weights, **flow_settings("authors", args), **common)
        device = authors.device
        names = args.flows.split(",") if args.flows else list(FLOWS if device.type == "cpu" else ("authors", "default"))
        unknown = sorted(set(names) - set(FLOWS))
        if unknown or "authors" not in names:
            parser.error(f"--flows: {', '.join(unknown) or 'authors is the baseline and must be one'} ({FLOWS})")
        batch_size = args.batch_size or default_batch_size(device)
        workers = default_workers(device) if args.workers is None else args.workers
        flows = {}
        for name in names:
            started = time.perf_counter()
            scorer = authors if name == "authors" else Scorer(dgiqa_weights, **flow_settings(name, args), **common)
            load_s = time.perf_counter() - started
            if name == "default" and args.compile:
                scorer.compile()
            scores: dict = {}
            if name == "authors":
                images, work, extra = (
                    args.sequential_images,
                    sequential_flow(scorer, paths[: args.sequential_images], scores),
                    {},
                )
                scorer.score(paths[0])  # warm-up (untimed): first kernels, cuDNN's choices, compilation
            else:
                runner = BatchRunner(scorer, batch_size=batch_size, workers=workers)
                images, work = args.images, batch_flow(runner, paths[: args.images], scores)
                extra = {"batch_size": runner.batch_size, "workers": workers}
                runner.run(paths[:batch_size], lambda _: None)
            extra.update(backend=scorer.backend, precision=scorer.precision, load_s=load_s)
            print(f"{name}: {scorer.backend} {scorer.precision}, loaded in {load_s:.1f} s", file=sys.stderr)
            flows[name] = (Timer(device), images, work, scores, extra)

        peaks = matmul_peak() if device.type == "cpu" else {}
        order = list(flows)
        for round_number in range(args.rounds):
            for name in order if round_number % 2 == 0 else reversed(order):
                timer, images, work, _, _ = flows[name]
                timer.measure(images, work)

        rows, reference = {}, flows["authors"][3]
        gflop = DEPTH_GFLOP.get(args.depth_model, 0) + DGIQA_GFLOP_PER_CROP * args.crops
        for name, (timer, _, _, scores, extra) in flows.items():
            row = timer.report(**extra)
            common_paths = reference.keys() & scores.keys()
            row["max_drift_from_authors"] = max((abs(reference[p] - scores[p]) for p in common_paths), default=None)
            if peaks and args.depth_model in DEPTH_GFLOP:
                # The peak in the flow's precision: the faster of PyTorch's and oneDNN's (OpenVINO) products.
                fast = row["precision"] in ("bf16", "fp16")
                keys = ("torch_bf16", "openvino_bf16") if fast else ("torch_fp32", "openvino_f32")
                peak = max(peaks.get(key, 0) for key in keys)
                row["limit_images_per_s"] = peak / gflop
                row["share_of_limit"] = row["images_per_s"] / row["limit_images_per_s"]
            rows[name] = row
        for row in rows.values():
            row["x_authors"] = row["images_per_s"] / rows["authors"]["images_per_s"]

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    report = {
        "device": name,
        "torch": torch.__version__,
        "depth_model": args.depth_model,
        "crops": args.crops,
        "image_size": "1024x768",
        "gflop_per_image": gflop,
        "compile": args.compile,
        "dgiqa": __version__,
        "matmul_gflops": peaks,
        "rounds": args.rounds,
        "flows": rows,
    }
    print(f"device: {name}, depth {args.depth_model}, {args.crops} crops, 1024x768 JPEGs, {args.rounds} rounds")
    if peaks:
        print("matmul GFLOP/s (2048^3, this run): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))
        print(f"arithmetic per picture: {gflop:.0f} GFLOP")
    header = ("flow", "what runs", "images", "images/s", "x authors", "% of limit", "max drift", "GPU MiB", "RSS MiB")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for label, row in rows.items():
        drift = row["max_drift_from_authors"]
        cells = (
            label,
            f"{row['backend']} {row['precision']}",
            str(row["images"]),
            f"{row['images_per_s']:.3f}",
            f"{row['x_authors']:.2f}",
            f"{100 * row['share_of_limit']:.0f}% of {row['precision'] if row['precision'] != 'fp16' else 'bf16'}"
            if "share_of_limit" in row
            else "-",
            "-" if label == "authors" else (f"{drift:.2g}" if drift is not None else "-"),
            f"{row['gpu_peak_mib']:.0f}" if row["gpu_peak_mib"] is not None else "-",
            f"{row['host_rss_peak_mib']:.0f}",
        )
        print("| " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
