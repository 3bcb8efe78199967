"""How far half-precision scores drift from fp32, measured on one device in one run.

    python benchmarks/precision_drift.py --images 16 --precision bf16 --depth-model vits

Scores the same synthetic pictures (those of ``throughput.py``) with stand-in
weights in fp32 and in the chosen half precision, through ``dgiqa batch``'s
pipeline, and prints the largest and mean absolute score difference. Stand-in
weights are random, so real checkpoints may drift differently: rerun this with
``--weights FILE`` on the weights you use.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from dgiqa_cli.inference.engine import BatchRunner
from dgiqa_cli.inference.scorer import Scorer

sys.path.insert(0, str(Path(__file__).parent))
from throughput import make_jpegs, standin_weights  # noqa: E402


def scores(scorer: Scorer, paths: list[str]) -> np.ndarray:
    rows = []
    BatchRunner(scorer, batch_size=4, workers=2).run(paths, rows.append)
    assert all(r.ok for r in rows), [r.error for r in rows if not r.ok]
    return np.array([r.score for r in rows])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16"])
    parser.add_argument("--depth-model", default="vits", choices=["vits", "vitb", "vitl"])
    parser.add_argument("--crops", type=int, default=20)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--weights", default=None, help="DGIQA weights (default: stand-in weights)")
    parser.add_argument("--depth-weights", default=None, help="depth weights (default: stand-in weights)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="dgiqa-drift-") as tmp:
        folder = Path(tmp)
        paths = make_jpegs(folder, args.images)
        weights, depth_weights = standin_weights(folder, args.depth_model)
        common = dict(
            depth_model=args.depth_model,
            depth_weights=args.depth_weights or depth_weights,
            crops=args.crops,
            device=args.device,
        )
        reference = scores(Scorer(args.weights or weights, precision="fp32", backend="torch", **common), paths)
        half = scores(Scorer(args.weights or weights, precision=args.precision, **common), paths)
    diff = np.abs(half - reference)
    print(
        f"{args.precision} vs fp32 on {args.images} pictures, depth {args.depth_model}, {args.crops} crops, "
        f"device {args.device}: max |diff| {diff.max():.2e}, mean |diff| {diff.mean():.2e} "
        f"(scores {reference.min():.4f}..{reference.max():.4f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
