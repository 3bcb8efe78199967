"""What Ray and shards cost on one machine, measured in one run.

    python benchmarks/scale.py --images 16 --crops 4

Makes N synthetic JPEGs (640 x 480), a WebDataset shard of the same files, and stand-in weights (ViT-S
depth; a network's speed does not depend on its weights), then measures, the flows of each pair alternating
over ``--rounds`` (A B, B A, ...) so that neither always runs first:

  1. ``dgiqa batch DIR`` against ``dgiqa batch DIR --ray`` (a local Ray cluster started by the command, one
     actor given every CPU but half a core left to the reader task): wall time of the whole command, model
     loading and Ray's start included, as a user sees it;
  2. the batch engine on the shard against the same pictures as files (one loaded scorer, in this process):
     the cost of reading members from a tar stream instead of files;
  3. the resident memory (RSS, and its peak) of one scoring actor, read inside the actor after its batches.

Prints one JSON object: images/s of each flow, the ratios, the largest score difference, the actor's RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import make_jpegs, standin_weights  # noqa: E402

from dgiqa_cli.inference.engine import BatchRunner  # noqa: E402
from dgiqa_cli.inference.scorer import Scorer  # noqa: E402
from dgiqa_cli.io.parquet import read_rows  # noqa: E402
from dgiqa_cli.io.sources import Unit  # noqa: E402


def rss_mib() -> dict:
    """This process's resident memory now and at its peak (Linux /proc)."""
    found = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                found[line.split(":")[0]] = int(line.split()[1]) / 1024
    return {"rss_mib": found.get("VmRSS"), "rss_peak_mib": found.get("VmHWM")}


def command_run(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--crops", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    os.environ.setdefault("DGIQA_BACKEND", "torch")  # the reference path on both sides
    cpus = os.cpu_count() or 1
    dgiqa = shutil.which("dgiqa") or sys.exit("the dgiqa command is not on PATH")
    with tempfile.TemporaryDirectory(prefix="dgiqa-scale-") as tmp:
        folder = Path(tmp) / "pics"
        folder.mkdir()
        paths = make_jpegs(folder, args.images, size=(480, 640))
        shard = Path(tmp) / "000000.tar"
        with tarfile.open(shard, "w") as tar:
            for path in paths:
                tar.add(path, arcname=os.path.basename(path))
        dgiqa_weights, depth_weights = standin_weights(Path(tmp), "vits")
        weights = ["--weights", str(dgiqa_weights), "--depth-model", "vits", "--depth-weights", str(depth_weights)]
        common = [*weights, "--device", "cpu", "--crops", str(args.crops), "--quiet"]
        local_cmd = [dgiqa, "batch", str(folder), *common, "--parquet", str(Path(tmp) / "local.parquet"), "--overwrite"]
        ray_out = Path(tmp) / "ray"
        ray_cmd = [dgiqa, "batch", str(folder), *common, "--ray", "--parquet", str(ray_out), "--overwrite"]
        ray_cmd += ["--num-cpus-per-worker", str(max(0.5, cpus - 0.5)), "--batch-size", "1"]

        print(f"1/3 dgiqa batch DIR vs --ray, {args.images} images, {args.rounds} rounds ...", file=sys.stderr)
        seconds = {"local": 0.0, "ray": 0.0}
        for r in range(args.rounds):
            for name in ("local", "ray") if r % 2 == 0 else ("ray", "local"):
                seconds[name] += command_run(local_cmd if name == "local" else ray_cmd)
        local_rows = {row["path"]: row["score"] for row in read_rows(Path(tmp) / "local.parquet")}
        ray_rows = {row["path"]: row["score"] for row in read_rows(ray_out)}
        engine = {name: args.images * args.rounds / s for name, s in seconds.items()}

        print("2/3 shard vs files through the batch engine ...", file=sys.stderr)
        scorer = Scorer(dgiqa_weights, depth_model="vits", depth_weights=depth_weights, crops=args.crops, device="cpu")
        runner = BatchRunner(scorer, batch_size=1, workers=1)
        shard_seconds = {"files": 0.0, "shard": 0.0}
        scores = {"files": {}, "shard": {}}
        for r in range(args.rounds):
            for name in ("files", "shard") if r % 2 == 0 else ("shard", "files"):
                inputs = paths if name == "files" else Unit("tar", str(shard)).items()
                started = time.perf_counter()
                runner.run(inputs, lambda res, n=name: scores[n].__setitem__(os.path.basename(res.path), res.score))
                shard_seconds[name] += time.perf_counter() - started
        source = {name: args.images * args.rounds / s for name, s in shard_seconds.items()}

        print("3/3 RSS of one scoring actor ...", file=sys.stderr)
        actor = actor_memory(paths, dgiqa_weights, depth_weights, args.crops)

    same = max(abs(local_rows[p] - ray_rows[p]) for p in local_rows)
    same_shard = max(abs(scores["files"][k] - scores["shard"][k]) for k in scores["files"])
    print(
        json.dumps(
            {
                "cpus": cpus,
                "images": args.images,
                "crops": args.crops,
                "rounds": args.rounds,
                "batch_dir_images_per_s": engine["local"],
                "batch_dir_ray_images_per_s": engine["ray"],
                "ray_over_local": engine["ray"] / engine["local"],
                "max_abs_score_diff_ray_local": same,
                "engine_files_images_per_s": source["files"],
                "engine_shard_images_per_s": source["shard"],
                "shard_over_files": source["shard"] / source["files"],
                "max_abs_score_diff_shard_files": same_shard,
                "actor": actor,
            },
            indent=2,
        )
    )
    return 0


def actor_memory(paths, dgiqa_weights, depth_weights, crops) -> dict:
    """Score the pictures through one DGIQAPredictor actor and read its RSS inside it afterwards."""
    import pyarrow as pa
    import ray

    from dgiqa_cli.inference.distributed import DGIQAPredictor

    class Measured(DGIQAPredictor):
        def __call__(self, batch):
            table = super().__call__(batch)
            memory = rss_mib()
            return table.append_column("actor_rss", pa.array([memory["rss_mib"]] * table.num_rows)).append_column(
                "actor_rss_peak", pa.array([memory["rss_peak_mib"]] * table.num_rows)
            )

    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        items = [{"key": os.path.basename(p), "image": Path(p).read_bytes()} for p in paths]
        options = {"weights": str(dgiqa_weights), "depth_model": "vits", "depth_weights": str(depth_weights)}
        options.update(device="cpu", crops=crops, backend="torch")
        rows = (
            ray.data.from_items(items)
            .map_batches(Measured, fn_constructor_kwargs=options, batch_size=4, concurrency=1)
            .take_all()
        )
    finally:
        ray.shutdown()
    return {"rss_mib": rows[-1]["actor_rss"], "rss_peak_mib": max(r["actor_rss_peak"] for r in rows)}


if __name__ == "__main__":
    sys.exit(main())
