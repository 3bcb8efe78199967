"""Each network alone, PyTorch against OpenVINO, fp32 and bf16, timed in one run (stand-in weights).

    python benchmarks/networks.py --depth-model vits --crops 20

Prints seconds per call (best of ``--repeats``) for DGIQA on ``--crops`` crops and for Depth Anything on
one 518 x 686 input, and the ratio, so that end-to-end figures (``throughput.py``) can be read part by part.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from dgiqa_cli.inference.backends import OpenVINONetwork, accelerate
from dgiqa_cli.models import build_model
from dgiqa_cli.models.seeded_weights import manifest_of, seeded_state


def best_of(work, repeats: int) -> float:
    work()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth-model", default="vits", choices=["vits", "vitb", "vitl"])
    parser.add_argument("--crops", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    generator = torch.Generator().manual_seed(0)
    depth_arch = f"depth-anything-{args.depth_model}"
    networks = {}
    for arch in ("dgiqa", depth_arch):
        module = build_model(arch)
        module.load_state_dict(seeded_state(manifest_of(module.state_dict()), 0))
        networks[arch] = module
    inputs = {
        "dgiqa": (torch.randn(args.crops, 3, 224, 224, generator=generator),) * 2,
        depth_arch: (torch.randn(1, 3, 518, 686, generator=generator),),
    }
    print(f"{'network':<22} {'precision':<9} {'torch s':>8} {'openvino s':>11} {'ratio':>6}")
    with tempfile.TemporaryDirectory(prefix="dgiqa-networks-") as cache, torch.inference_mode():
        for precision in ("fp32", "bf16"):
            for arch, module in networks.items():
                fast = accelerate(
                    module, arch, precision=precision, weights_sha256=arch.ljust(64, "0"), cache_dir=cache
                )
                if not isinstance(fast, OpenVINONetwork):
                    print(f"{arch}: OpenVINO not available here")
                    continue
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    slow_s = best_of(lambda m=module, a=arch: m(*inputs[a]), args.repeats)
                fast_s = best_of(lambda f=fast, a=arch: f(*inputs[a]), args.repeats)
                print(f"{arch:<22} {precision:<9} {slow_s:8.3f} {fast_s:11.3f} {slow_s / fast_s:5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
