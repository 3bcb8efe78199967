"""`dgiqa batch` on shards, Parquet files and URLs: the scores `dgiqa score` gives, every member a row, resumable."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import cv2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import FIXTURES, PICTURES
from typer.testing import CliRunner

from dgiqa_cli.cli import app
from dgiqa_cli.io.parquet import read_rows
from dgiqa_cli.io.rows import FIELDS, read_jsonl
from dgiqa_cli.io.sources import Unit, collect_units, parquet_items, tar_items

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def small_pictures(folder: Path, sizes=((240, 320), (300, 200), (256, 256))) -> list[Path]:
    """Small PNG and JPEG pictures (fast to score), cut from the fixture picture."""
    folder.mkdir(parents=True, exist_ok=True)
    base = cv2.imread(str(FIXTURES / PICTURES[0]))
    paths = []
    for i, (h, w) in enumerate(sizes):
        path = folder / f"pic{i}.{'jpg' if i % 2 else 'png'}"
        cv2.imwrite(str(path), cv2.resize(base, (w, h), interpolation=cv2.INTER_AREA))
        paths.append(path)
    return paths


def make_shard(path: Path, pictures: list[Path], extra: dict[str, bytes] | None = None) -> Path:
    """A WebDataset shard: per sample KEY.EXT and KEY.json members (plus ``extra`` members)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for i, picture in enumerate(pictures):
            add(f"sample{i:04d}{picture.suffix}", picture.read_bytes())
            add(f"sample{i:04d}.json", b'{"caption": "x"}')
        for name, data in (extra or {}).items():
            add(name, data)
    return path


def make_parquet(path: Path, pictures: list[Path], row_group_size: int = 2) -> Path:
    table = pa.table(
        {"key": [p.stem for p in pictures], "jpg": [p.read_bytes() for p in pictures], "caption": ["x"] * len(pictures)}
    )
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def test_shard_members_stream_in_order_with_their_names(tmp_path):
    pictures = small_pictures(tmp_path / "pics")
    shard = make_shard(tmp_path / "000001.tar", pictures, {"bad.jpg": b"\xff\xd8\xff\xe0 not a jpeg"})
    items = list(tar_items(str(shard)))
    assert [i.name for i in items] == [f"{shard}/sample{i:04d}{p.suffix}" for i, p in enumerate(pictures)] + [
        f"{shard}/bad.jpg"
    ]
    assert items[0].data == pictures[0].read_bytes()
    assert Unit("tar", str(shard)).count() == 4
    # a shard cut short: the members before the break keep their items, the break is one error item
    with tarfile.open(shard) as tar:
        middle = tar.getmember(f"sample0001{pictures[1].suffix}").offset_data + 100  # inside the second picture
    cut = tmp_path / "cut.tar"
    cut.write_bytes(shard.read_bytes()[:middle])
    items = list(tar_items(str(cut)))
    assert items[-1].name == str(cut) and "cannot be read" in items[-1].error
    assert items[0].data == pictures[0].read_bytes()


def test_parquet_rows_are_read_a_record_batch_at_a_time(tmp_path, monkeypatch):
    pictures = small_pictures(tmp_path / "pics")
    file = make_parquet(tmp_path / "images.parquet", pictures, row_group_size=1)
    import dgiqa_cli.io.sources as sources

    monkeypatch.setattr(sources, "READ_BATCH_ROWS", 1)
    seen = []
    original = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        for batch in original(self, *args, **kwargs):
            seen.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    (unit,) = collect_units([str(file)])
    assert (unit.image_column, unit.key_column) == ("jpg", "key")
    items = list(parquet_items(str(file), unit.image_column, unit.key_column))
    assert [i.name for i in items] == [f"{file}/{p.stem}" for p in pictures]
    assert seen == [1, 1, 1]  # never the whole file at once
    assert items[2].data == pictures[2].read_bytes()


@pytest.mark.slow
def test_folder_shard_and_parquet_score_as_dgiqa_score_with_parquet_output(tmp_path, weight_args, scorer):
    pictures = small_pictures(tmp_path / "pics", sizes=((240, 320), (300, 200)))
    shard = make_shard(tmp_path / "shards" / "000001.tar", pictures, {"broken.jpg": b"\xff\xd8\xff\xe0garbage"})
    table = make_parquet(tmp_path / "images.parquet", pictures)
    out = tmp_path / "rows.parquet"
    args = ["batch", tmp_path / "pics", shard, table, *weight_args, "--crops", "1", "--parquet", out]
    result = invoke(*args)
    assert result.exit_code == 1, result.stderr  # the broken member failed, the rest scored
    rows = {row["path"]: row for row in read_rows(out)}
    assert pq.read_schema(out).names == list(FIELDS)
    assert len(rows) == 3 * len(pictures) + 1
    assert "broken.jpg" in result.stderr and rows[f"{shard}/broken.jpg"]["score"] is None
    assert rows[f"{shard}/broken.jpg"]["error"]
    for i, picture in enumerate(pictures):
        expected = scorer.score(picture).score
        for name in (str(picture), f"{shard}/sample{i:04d}{picture.suffix}", f"{table}/{picture.stem}"):
            assert rows[name]["score"] == pytest.approx(expected, abs=1e-5), name
            assert rows[name]["error"] is None


@pytest.mark.slow
def test_parquet_output_resume_keeps_the_old_rows_and_adds_the_new(tmp_path, weight_args):
    pictures = small_pictures(tmp_path / "pics", sizes=((200, 200), (220, 260)))
    out = tmp_path / "rows.parquet"
    first = invoke("batch", pictures[0], *weight_args, "--crops", "1", "--parquet", out)
    assert first.exit_code == 0, first.stderr
    assert "exists" in invoke("batch", tmp_path / "pics", *weight_args, "--parquet", out).stderr
    (tmp_path / ".rows.parquet.partial").write_bytes(b"left by a killed run")
    second = invoke("batch", tmp_path / "pics", *weight_args, "--crops", "1", "--parquet", out, "--resume")
    assert second.exit_code == 0, second.stderr
    assert "1 scored, 0 failed, 1 skipped" in " ".join(second.stderr.split())
    assert sorted(r["path"] for r in read_rows(out)) == sorted(map(str, pictures))
    assert not (tmp_path / ".rows.parquet.partial").exists()
    other = invoke("batch", tmp_path / "pics", *weight_args, "--crops", "2", "--parquet", out, "--resume")
    assert other.exit_code == 2 and "crops" in other.stderr


@pytest.mark.slow
def test_sources_in_memory_through_fsspec(tmp_path, weight_args, scorer):
    import fsspec

    pictures = small_pictures(tmp_path / "pics", sizes=((200, 240),))
    fs = fsspec.filesystem("memory")
    fs.pipe("/dgiqa-test/shards/a.tar", make_shard(tmp_path / "a.tar", pictures).read_bytes())
    fs.pipe("/dgiqa-test/shards/b.tar", make_shard(tmp_path / "b.tar", pictures).read_bytes())
    fs.pipe("/dgiqa-test/t.parquet", make_parquet(tmp_path / "t.parquet", pictures).read_bytes())
    fs.pipe("/dgiqa-test/loose/p.png", pictures[0].read_bytes())
    try:
        out = tmp_path / "rows.jsonl"
        sources = ["memory://dgiqa-test/shards/*.tar", "memory://dgiqa-test/t.parquet", "memory://dgiqa-test/loose"]
        result = invoke("batch", *sources, *weight_args, "--crops", "1", "--jsonl", out)
        assert result.exit_code == 0, result.stderr
        rows = {r["path"]: r["score"] for r in read_jsonl(out)}
        expected = scorer.score(pictures[0]).score
        assert sorted(rows) == sorted(
            [
                "memory://dgiqa-test/shards/a.tar/sample0000.png",
                "memory://dgiqa-test/shards/b.tar/sample0000.png",
                "memory://dgiqa-test/t.parquet/pic0",
                "memory://dgiqa-test/loose/p.png",
            ]
        )
        assert all(score == pytest.approx(expected, abs=1e-5) for score in rows.values())
        missing = invoke("batch", "memory://dgiqa-test/nothing/*.tar", *weight_args)
        assert missing.exit_code == 2 and "no images" in missing.stderr
    finally:
        fs.rm("/dgiqa-test", recursive=True)


@pytest.mark.slow
def test_a_shard_over_http(tmp_path, weight_args, scorer):
    """The README's `dgiqa batch https://host/x.tar` on the plain install: aiohttp comes with fsspec[http], a core
    dependency (tests/test_packaging.py), so this test is never skipped."""
    from hub_server import FileServer

    pictures = small_pictures(tmp_path / "pics", sizes=((200, 240),))
    root = tmp_path / "served"
    make_shard(root / "000007.tar", pictures)
    shutil.copy(pictures[0], root / "single.png")
    with FileServer(root) as server:
        url = f"{server.url}/000007.tar"
        result = invoke("batch", url, f"{server.url}/single.png", *weight_args, "--crops", "1", "--jsonl", "-")
    assert result.exit_code == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("{")]
    import json

    scores = {r["path"]: r["score"] for r in map(json.loads, rows)}
    assert set(scores) == {f"{url}/sample0000.png", f"{server.url}/single.png"}
    assert all(s == pytest.approx(scorer.score(pictures[0]).score, abs=1e-5) for s in scores.values())
