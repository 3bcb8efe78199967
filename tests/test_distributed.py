"""`dgiqa batch --ray` and DGIQAPredictor on a local Ray cluster (CPU only, 2 CPUs, one per module).

The scores are the ones `dgiqa score` gives, from a folder, a shard or a Parquet file; a run killed and resumed
ends with exactly one row per image; an actor that dies is restarted and nothing is lost or written twice.
"""

from __future__ import annotations

import os
import shutil
import signal

import pytest

ray = pytest.importorskip("ray")

from conftest import run_interrupted  # noqa: E402
from test_sources import invoke, make_parquet, make_shard, small_pictures  # noqa: E402

from dgiqa_cli.io.parquet import read_rows  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def cluster(ray_cluster):
    """Every test here runs on the session's local Ray (conftest)."""
    return ray_cluster


def scorer_options(standin_weights) -> dict:
    return {
        "weights": str(standin_weights["model"]),
        "depth_model": "vits",
        "depth_weights": str(standin_weights["depth"]),
        "device": "cpu",
        "crops": 1,
    }


def test_folder_shard_and_parquet_on_ray_score_as_dgiqa_score(tmp_path, weight_args, scorer):
    pictures = small_pictures(tmp_path / "pics", sizes=((240, 320), (300, 200)))
    shard = make_shard(tmp_path / "shards" / "000001.tar", pictures, {"broken.jpg": b"\xff\xd8\xff\xe0garbage"})
    table = make_parquet(tmp_path / "images.parquet", pictures)
    out = tmp_path / "scores"
    args = ["batch", tmp_path / "pics", shard, table, *weight_args, "--crops", "1", "--ray", "--parquet", out]
    result = invoke(*args, "--batch-size", "2")
    assert result.exit_code == 1, result.stderr  # the broken member
    assert len(list(out.glob("*.parquet"))) == 3  # one file per unit: the loose files, the shard, the Parquet file
    rows = {row["path"]: row for row in read_rows(out)}
    assert len(rows) == 3 * len(pictures) + 1
    assert rows[f"{shard}/broken.jpg"]["error"] and rows[f"{shard}/broken.jpg"]["score"] is None
    for i, picture in enumerate(pictures):
        expected = scorer.score(picture).score
        for name in (str(picture), f"{shard}/sample{i:04d}{picture.suffix}", f"{table}/{picture.stem}"):
            assert rows[name]["score"] == pytest.approx(expected, abs=1e-5), name
    again = invoke(*args, "--resume")
    assert again.exit_code == 0, again.stderr
    assert "0 scored, 0 failed, 7 skipped" in " ".join(again.stderr.split())


def test_a_killed_run_resumes_to_one_row_per_image(tmp_path, weight_args, cluster):
    pictures = small_pictures(tmp_path / "pics", sizes=((160, 200),))
    shards = [make_shard(tmp_path / "shards" / f"{i:06d}.tar", pictures) for i in range(4)]
    out = tmp_path / "scores"
    command = [shutil.which("dgiqa"), "batch", *map(str, shards), *weight_args, "--crops", "1", "--batch-size", "1"]
    command += ["--ray", "--ray-address", cluster, "--parquet", str(out), "--quiet"]
    killed = run_interrupted(command, "unit", 1, "SIGKILL")  # the driver dies once its first unit is committed
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    assert 1 <= len(finished) < len(shards)

    result = invoke("batch", *shards, *weight_args, "--crops", "1", "--ray", "--parquet", out, "--resume")
    assert result.exit_code == 0, result.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet") if p.name in finished} == finished
    names = sorted(row["path"] for row in read_rows(out))
    assert names == sorted(f"{s}/sample{i:04d}{p.suffix}" for s in shards for i, p in enumerate(pictures))
    assert not list(out.glob(".*partial*"))


def test_an_actor_killed_mid_run_is_restarted_and_no_row_is_lost_or_doubled(tmp_path, standin_weights, scorer):
    from dgiqa_cli.inference import distributed
    from dgiqa_cli.io.sources import collect_units

    marker = tmp_path / "crashed-once"

    class CrashingOnce(distributed._UnitPredictor):
        def __call__(self, batch):
            if not marker.exists():
                marker.write_text(str(os.getpid()))
                os._exit(1)  # the actor's process dies, as an OOM kill or a lost node would end it
            return super().__call__(batch)

    pictures = small_pictures(tmp_path / "pics", sizes=((160, 200),))
    units = collect_units(
        [str(make_shard(tmp_path / "a.tar", pictures)), str(make_shard(tmp_path / "b.tar", pictures))]
    )
    stats = distributed.run(
        units, tmp_path / "out", scorer_options(standin_weights), batch_size=1, predictor=CrashingOnce
    )
    assert marker.exists()
    assert (stats.scored, stats.failed, stats.incomplete) == (2, 0, [])
    rows = read_rows(tmp_path / "out")
    assert sorted(r["path"] for r in rows) == sorted(
        f"{tmp_path}/{s}.tar/sample{i:04d}{p.suffix}" for s in "ab" for i, p in enumerate(pictures)
    )
    expected = {p.suffix: scorer.score(p).score for p in pictures}
    assert all(r["score"] == pytest.approx(expected[os.path.splitext(r["path"])[1]], abs=1e-5) for r in rows)


def test_predictor_in_a_users_own_pipeline(tmp_path, standin_weights, scorer):
    from dgiqa_cli.inference.distributed import DGIQAPredictor

    pictures = small_pictures(tmp_path / "pics", sizes=((180, 220),))
    items = [{"key": "a", "jpg": pictures[0].read_bytes(), "caption": "kept"}, {"key": "b", "jpg": b"nope"}]
    ds = ray.data.from_items(items)
    options = {"image_column": "jpg", **scorer_options(standin_weights)}
    rows = ds.map_batches(DGIQAPredictor, fn_constructor_kwargs=options, batch_size=2, concurrency=1).take_all()
    rows = {r["path"]: r for r in rows}
    assert rows["a"]["score"] == pytest.approx(scorer.score(pictures[0]).score, abs=1e-5)
    assert rows["a"]["caption"] == "kept"
    assert rows["b"]["score"] is None and rows["b"]["error"]
