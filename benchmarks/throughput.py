"""Throughput of `dgiqa batch` against the authors' image-after-image flow, measured in one run.

    python benchmarks/throughput.py --images 256 --depth-model vits --crops 20

Makes N synthetic 1024x768 JPEGs and stand-in weights (the speed of a network
does not depend on its weights), then times, in this order:

  (a) sequential: the authors' flow, image after image in fp32 (read, depth map
      of one image, crops, DGIQA on them): ``Scorer(precision="fp32").score``;
  (b) batch: ``dgiqa batch``'s pipeline with its defaults (worker threads,
      batched depth and crops, bf16 on GPUs), over every image.

Model loading is outside both timings; each gets one untimed warm-up, then the
two flows alternate for ``--rounds`` rounds, in the order A B, B A, ... (so
neither always runs first, and a machine that slows down or speeds up during
the run weighs on both alike). Prints images/s for each,
their ratio, peak GPU memory and peak host RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from dgiqa_cli.engine import BatchRunner, default_batch_size, default_workers
from dgiqa_cli.models import build_model
from dgiqa_cli.scorer import Scorer
from dgiqa_cli.standin import manifest_of, seeded_state


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


def sequential_flow(scorer: Scorer, paths: list[str]):
    def work():
        for path in paths:
            assert scorer.score(path).ok

    return work


def batch_flow(runner: BatchRunner, paths: list[str]):
    def work():
        failures = []
        runner.run(paths, lambda r: r.ok or failures.append(r))
        assert not failures, failures[:3]

    return work


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
    parser.add_argument("--rounds", type=int, default=2, help="times each flow runs, alternating (default 2)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="dgiqa-bench-") as tmp:
        folder = Path(tmp)
        print(f"making {args.images} synthetic 1024x768 JPEGs and stand-in weights ...", file=sys.stderr)
        paths = make_jpegs(folder, max(args.images, args.sequential_images))
        dgiqa_weights, depth_weights = standin_weights(folder, args.depth_model)
        common = dict(depth_model=args.depth_model, depth_weights=depth_weights, crops=args.crops, device=args.device)

        sequential_scorer = Scorer(dgiqa_weights, precision="fp32", **common)
        device = sequential_scorer.device
        batch_scorer = Scorer(dgiqa_weights, precision="auto", **common)
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
        sequential_timer, batch_timer = Timer(device), Timer(device)
        flows = [
            (
                sequential_timer,
                args.sequential_images,
                sequential_flow(sequential_scorer, paths[: args.sequential_images]),
            ),
            (batch_timer, args.images, batch_flow(runner, paths[: args.images])),
        ]
        for round_number in range(args.rounds):
            for timer, images, work in flows if round_number % 2 == 0 else reversed(flows):
                timer.measure(images, work)
        sequential = sequential_timer.report()
        batched = batch_timer.report(batch_size=runner.batch_size, workers=workers, precision=batch_scorer.precision)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    report = {
        "device": name,
        "torch": torch.__version__,
        "depth_model": args.depth_model,
        "crops": args.crops,
        "image_size": "1024x768",
        "compile": args.compile,
        "rounds": args.rounds,
        "sequential": sequential,
        "batch": batched,
        "ratio": batched["images_per_s"] / sequential["images_per_s"],
    }
    print(f"device: {name}, depth {args.depth_model}, {args.crops} crops, 1024x768 JPEGs")
    print(f"{'flow':<12}{'images':>8}{'images/s':>11}{'GPU peak MiB':>15}{'host RSS MiB':>15}")
    for label, row in (("sequential", sequential), ("batch", batched)):
        gpu = f"{row['gpu_peak_mib']:.0f}" if row["gpu_peak_mib"] is not None else "-"
        print(f"{label:<12}{row['images']:>8}{row['images_per_s']:>11.2f}{gpu:>15}{row['host_rss_peak_mib']:>15.0f}")
    print(
        f"ratio (batch / sequential): {report['ratio']:.2f}x   "
        f"[batch: {batched['precision']}, batch size {batched['batch_size']}, {batched['workers']} workers]"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
