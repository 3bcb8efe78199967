"""What one picture costs from the command line: `dgiqa score photo.jpg`, cold and warm, split into phases.

    python benchmarks/startup.py --depth-model vits --rounds 2 --baseline /tmp/dgiqa-before

Makes stand-in weights (as benchmarks/throughput.py does; the speed of a network does not depend on its
weights) and one 720x540 JPEG, then runs fresh processes, as a user's commands are:

  phases  a child process times what `dgiqa score` does, in order: imports (the command line and the scorer),
          model load (``Scorer(...)``: weights checked and hashed, networks built or read from the cache,
          compiled), first inference (the first picture, with the backend's warm-up), scoring (the same picture
          again: the steady per-picture time); the parent adds the whole process's wall time.
  cli     the real `dgiqa score photo.jpg --json`, timed end to end.

cold: an empty ``$DGIQA_CACHE`` (the weights hashed, the networks converted and compiled); "warm, 1st": the
next start (which may still save what it compiled); warm: the start after that. With ``--baseline DIR``
(another source tree of the package, e.g. the commit before a change: ``git archive <commit> | tar -x -C DIR``),
that tree runs as B beside this one (A), alternating A B, B A, ..., each with its own cache, and the table gives
B / A ratios, so that a machine busy with other work weighs on both alike. Each cell is the median over
``--rounds``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PHASES = ("imports", "model load", "first inference", "scoring", "process")


def child(args) -> None:
    """One `dgiqa score`-like start in this process; prints its phases as JSON."""
    started = time.perf_counter()
    import dgiqa_cli.cli  # noqa: F401 - what the console script imports before parsing
    from dgiqa_cli.inference.scorer import Scorer

    imported = time.perf_counter()
    scorer = Scorer(
        args.weights, depth_model=args.depth_model, depth_weights=args.depth_weights, crops=args.crops, device="cpu"
    )
    loaded = time.perf_counter()
    first = scorer.score(args.picture)
    inferred = time.perf_counter()
    again = scorer.score(args.picture)
    scored = time.perf_counter()
    assert first.score == again.score, "the same picture scored twice differs"
    phases = {
        "imports": imported - started,
        "model load": loaded - imported,
        "first inference": inferred - loaded,
        "scoring": scored - inferred,
        "score": first.score,
        "network": repr(getattr(scorer.iqa_model, "network", "")),
        "package": str(Path(dgiqa_cli.__file__).parent.parent),
    }
    print(json.dumps(phases))


def run_child(tree: Path, cache: Path, args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "DGIQA_CACHE": str(cache)}
    command = [sys.executable, str(HERE / "startup.py"), "--child", "--picture", args.picture]
    command += ["--weights", args.weights, "--depth-model", args.depth_model, "--depth-weights", args.depth_weights]
    command += ["--crops", str(args.crops)]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cache.parent, capture_output=True, text=True, check=True)
    phases = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(phases["package"]) == tree, f"{phases['package']} ran instead of {tree}"
    phases["process"] = time.perf_counter() - started
    return phases


def run_cli(tree: Path, cache: Path, args) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree), "DGIQA_CACHE": str(cache)}
    command = [sys.executable, "-m", "dgiqa_cli", "score", args.picture, "--json", "--weights", args.weights]
    command += ["--depth-model", args.depth_model, "--depth-weights", args.depth_weights, "--device", "cpu"]
    command += ["--crops", str(args.crops)]
    started = time.perf_counter()
    # cwd: not a source tree, whose dgiqa_cli `python -m` would run instead of ``tree``'s
    subprocess.run(command, env=env, cwd=cache.parent, capture_output=True, text=True, check=True)
    return time.perf_counter() - started


def prepare(folder: Path, depth_model: str) -> tuple[str, str, str]:
    sys.path.insert(0, str(HERE))
    from throughput import make_jpegs, standin_weights

    weights, depth = standin_weights(folder, depth_model)
    (picture,) = make_jpegs(folder, 1, size=(540, 720))
    return str(weights), str(depth), picture


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth-model", default="vits", choices=("vits", "vitb", "vitl"))
    parser.add_argument("--crops", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", type=Path, help="another source tree of dgiqa_cli, run as B")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--depth-weights", help=argparse.SUPPRESS)
    parser.add_argument("--picture", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0

    scratch = Path(tempfile.mkdtemp(prefix="dgiqa-startup-"))
    try:
        return measure(scratch, args)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # weights and caches: gigabytes


def measure(scratch: Path, args) -> int:
    args.weights, args.depth_weights, args.picture = prepare(scratch, args.depth_model)
    trees = {"A": HERE.parent}
    if args.baseline:
        trees["B"] = args.baseline.resolve()
    rows: dict[tuple[str, str], list[dict]] = {}
    cli: dict[str, list[float]] = {name: [] for name in trees}
    for round_ in range(args.rounds):
        order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
        for name in order:
            cache = Path(tempfile.mkdtemp(prefix=f"cache-{name}-", dir=scratch))
            rows.setdefault((name, "cold"), []).append(run_child(trees[name], cache, args))
            rows.setdefault((name, "warm, 1st"), []).append(run_child(trees[name], cache, args))
            rows.setdefault((name, "warm"), []).append(run_child(trees[name], cache, args))
            cli[name].append(run_cli(trees[name], cache, args))
    print(f"`dgiqa score` of one 720x540 JPEG, {args.depth_model} depth, {args.crops} crops, CPU; seconds, median of")
    print(f"{args.rounds} rounds; A = {trees['A']}" + (f", B = {trees['B']}" if "B" in trees else ""))
    print()
    print("| tree | cache | " + " | ".join(PHASES) + " | network |")
    print("|---|---|" + "---|" * (len(PHASES) + 1))
    for (name, state), runs in rows.items():
        cells = [f"{statistics.median(r[p] for r in runs):.2f}" for p in PHASES]
        print(f"| {name} | {state} | " + " | ".join(cells) + f" | {runs[-1]['network']} |")
    print()
    for name, times in cli.items():
        print(f"{name}: warm `dgiqa score photo.jpg --json` end to end: {statistics.median(times):.2f} s")
    if "B" in trees:
        print()
        print("B / A (the times A saves, measured in the same run):")
        for state in ("cold", "warm, 1st", "warm"):
            ratios = []
            for phase in PHASES:
                a = statistics.median(r[phase] for r in rows[("A", state)])
                b = statistics.median(r[phase] for r in rows[("B", state)])
                ratios.append(f"{phase} {b / a:.2f}x")
            print(f"  {state}: " + ", ".join(ratios))
        print(f"  warm CLI end to end: {statistics.median(cli['B']) / statistics.median(cli['A']):.2f}x")
        scores = {name: rows[(name, "warm")][-1]["score"] for name in trees}
        print(f"  score drift A vs B: {abs(scores['A'] - scores['B']):.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
