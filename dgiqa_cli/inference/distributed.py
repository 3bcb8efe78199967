"""Scoring on a Ray cluster: a stateful scorer for ``ray.data``'s ``map_batches``, and ``dgiqa batch --ray``.

:class:`DGIQAPredictor` is the piece to put into your own pipeline: Ray Data builds one per actor (the models
load once, in ``__init__``) and calls it on batches of rows holding encoded image bytes and a key::

    import ray
    from dgiqa_cli.inference.distributed import DGIQAPredictor

    ds = ray.data.read_parquet("s3://bucket/images/")  # columns: key, jpg (encoded bytes)
    scores = ds.map_batches(DGIQAPredictor, fn_constructor_kwargs={"image_column": "jpg"}, batch_size=32,
                            concurrency=4, num_gpus=1)
    scores.write_parquet("s3://bucket/scores/")

It returns the CSV's columns (:data:`dgiqa_cli.io.rows.FIELDS`; ``path`` is the key) plus the input's other
columns, one row per input row, in order; a picture that cannot be decoded gets a row with ``error`` set.
Scores are the ones ``dgiqa score`` gives (same decoder, same preprocessing, same batch engine).

``dgiqa batch SOURCE... --ray`` (:func:`run`) reads every unit of the run (a shard, a Parquet file, a group of
loose files: :mod:`dgiqa_cli.io.sources`) in Ray tasks, scores them through an actor pool of this class, and writes
one Parquet file per unit into the output folder, renamed into place only once the unit's last row is in it
(:class:`dgiqa_cli.io.parquet.UnitFile`). Each unit's reader ends its rows with a marker row carrying the count,
so the driver knows when a unit is complete without reading it twice. Exactly once: a restarted run
(``--resume``) skips units whose file exists; an actor that dies is restarted by Ray and its batch retried
(Ray Data's defaults for actor pools), and the driver drops any row it has already written for a unit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from dgiqa_cli.io.rows import FIELDS, SETTINGS_FIELDS, ResumeError, check_rows
from dgiqa_cli.io.sources import Item, Unit, is_url

log = logging.getLogger("dgiqa")

ROWS_PER_READ_BATCH = 32  # rows a reader task emits at a time: a few MB of encoded pictures


class DGIQAPredictor:
    """A loaded :class:`~dgiqa_cli.inference.scorer.Scorer` as a Ray Data callable class (see the module docstring).

    ``image_column``: encoded image bytes (binary; a Hugging Face ``{"bytes": ...}`` struct works too); where
    a batch has no such column, each row's key is read as a path or URL. ``key_column``: the row's name (the
    ``path`` column of the output); ``error_column``: rows where it is set are not decoded and keep that error.
    ``batch_size``: images per device batch (default: 32 on a GPU, 1 on the CPU). Other keyword arguments go to
    :class:`~dgiqa_cli.inference.scorer.Scorer` (``weights``, ``crops``, ``precision``, ``device``, ...).
    """

    def __init__(
        self,
        image_column: str = "image",
        key_column: str = "key",
        error_column: str | None = None,
        batch_size: int | None = None,
        **scorer_options,
    ):
        from dgiqa_cli.inference.engine import BatchRunner, default_batch_size
        from dgiqa_cli.inference.scorer import Scorer

        cpus = _use_assigned_cpus()
        self.scorer = Scorer(**scorer_options)
        # On a GPU, threads decode and prepare a batch's pictures in parallel (as many as the actor's CPUs);
        # on the CPU the networks want every core, and the actor prepares in its own thread.
        workers = 0 if self.scorer.device.type == "cpu" else max(1, cpus or 4)
        self.runner = BatchRunner(self.scorer, batch_size or default_batch_size(self.scorer.device), workers=workers)
        self.settings = self.scorer.settings
        self.image_column, self.key_column, self.error_column = image_column, key_column, error_column

    def __call__(self, batch: dict):
        """A batch (dict of columns, as Ray Data gives it) -> an Arrow table, one scored row per input row."""
        import pyarrow as pa

        table = self.score_table(batch)
        for name, values in batch.items():  # the input's other columns ride along
            if name not in (self.image_column, *FIELDS) and getattr(values, "ndim", 1) == 1:
                table = table.append_column(name, pa.array(list(values)))
        return table

    def score_table(self, batch: dict):
        """The rows of :data:`~dgiqa_cli.io.rows.FIELDS` for a batch, typed as the Parquet output has them."""
        from dgiqa_cli.io.parquet import table_of
        from dgiqa_cli.io.rows import row_of

        results = []
        self.runner.run(self.items(batch), results.append)
        return table_of([row_of(result, self.settings) for result in results])

    def items(self, batch: dict) -> list[Item]:
        from dgiqa_cli.io.sources import _cell_item

        count = len(next(iter(batch.values()))) if batch else 0
        keys = batch.get(self.key_column)
        if keys is None:
            keys = batch.get("path", [f"<row {i}>" for i in range(count)])
        errors = batch.get(self.error_column) if self.error_column else None
        images = batch.get(self.image_column)
        items = []
        for i in range(count):
            name = str(keys[i])
            if errors is not None and errors[i] is not None:
                items.append(Item(name, error=str(errors[i])))
            elif images is None:
                items.append(Item(name, url=name) if is_url(name) else Item(name))
            else:
                items.append(_cell_item(name, images[i]))
        return items


def _use_assigned_cpus() -> int | None:
    """Inside a Ray actor, as many torch threads as CPUs the actor was given (rounded up): Ray's default of
    ``OMP_NUM_THREADS=1`` would leave the cores of a 1.5- or 4-CPU actor idle. Returns that number."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except Exception:  # not in a Ray worker, or an older Ray
        return None
    if not cpus:
        return None
    import math

    import torch

    torch.set_num_threads(max(1, math.ceil(cpus)))
    return max(1, math.ceil(cpus))


class _UnitPredictor(DGIQAPredictor):
    """The predictor of ``dgiqa batch --ray``: keeps each row's unit, passes the readers' end-of-unit marker rows
    (``count`` >= 0) through unscored."""

    def __call__(self, batch: dict):
        import numpy as np
        import pyarrow as pa

        from dgiqa_cli.io.parquet import table_of

        counts = np.asarray(batch["count"])
        images = counts < 0
        parts = []
        if images.any():
            parts.append(
                _with_unit(
                    self.score_table({k: np.asarray(v)[images] for k, v in batch.items()}),
                    np.asarray(batch["unit"])[images],
                    counts[images],
                )
            )
        if (~images).any():
            markers = table_of([{k: None for k in FIELDS} for _ in range(int((~images).sum()))])
            parts.append(_with_unit(markers, np.asarray(batch["unit"])[~images], counts[~images]))
        return pa.concat_tables(parts) if len(parts) > 1 else parts[0]


def _with_unit(table, units, counts):
    import pyarrow as pa

    table = table.append_column("unit", pa.array([str(u) for u in units], pa.string()))
    return table.append_column("count", pa.array([int(c) for c in counts], pa.int64()))


def read_units(batch: dict, units: list[Unit]):
    """Ray task: the rows of the units named in ``batch`` (indices into ``units``), then one marker row each."""
    import pyarrow as pa

    schema = pa.schema(
        [
            ("unit", pa.string()),
            ("key", pa.string()),
            ("image", pa.binary()),
            ("error", pa.string()),
            ("count", pa.int64()),
        ]
    )
    for index in batch["index"]:
        unit = units[int(index)]
        rows, count = [], 0
        for item in unit.items():
            data, error = item.data, item.error
            if data is None and error is None:  # a loose file: read here, in the reader task
                try:
                    data = _read(item)
                except OSError as exc:
                    error = _os_reason(exc)
            rows.append({"unit": unit.id, "key": item.name, "image": data, "error": error, "count": -1})
            count += 1
            if len(rows) >= ROWS_PER_READ_BATCH:
                yield pa.Table.from_pylist(rows, schema=schema)
                rows = []
        rows.append({"unit": unit.id, "key": None, "image": None, "error": None, "count": count})
        yield pa.Table.from_pylist(rows, schema=schema)


def _read(item: Item) -> bytes:
    from dgiqa_cli.io.images import ImageError, read_file_bytes
    from dgiqa_cli.io.sources import read_url

    if item.url is not None:
        return read_url(item.url)
    try:
        return read_file_bytes(item.name)
    except ImageError as exc:
        raise OSError(exc.reason) from None


def _os_reason(exc: OSError) -> str:
    from dgiqa_cli.io.images import os_error_reason

    return os_error_reason(exc) if exc.errno else str(exc)


@dataclass
class DistributedStats:
    scored: int = 0
    failed: int = 0
    skipped: int = 0
    incomplete: list[str] = field(default_factory=list)


def connect(address: str | None):
    """Join the cluster at ``address`` (``auto``, ``ray://HOST:PORT``, ...), or start a local one; quiet."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    return ray


def cluster_gpus(address: str | None) -> float:
    """GPUs in the cluster (joining it, or starting a local one)."""
    return connect(address).cluster_resources().get("GPU", 0)


def run(
    units: list[Unit],
    folder,
    scorer_options: dict,
    *,
    address: str | None = None,
    resume: bool = False,
    batch_size: int | None = None,
    concurrency: int = 1,
    num_gpus: float = 0,
    num_cpus: float = 1,
    on_rows: Callable[[list[dict]], None] | None = None,
    predictor=_UnitPredictor,
) -> DistributedStats:
    """Score ``units`` on a Ray cluster into ``folder`` (one Parquet file per unit; see the module docstring).

    ``on_rows`` sees each unit's new rows as they are written (for progress). Returns what was done; units
    whose rows did not all come back are listed in ``incomplete`` (their files are not written).
    """
    from pathlib import Path

    import pyarrow.parquet as pq

    from dgiqa_cli.io.parquet import UnitFile, clean_partials, done_units

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clean_partials(folder)
    done = done_units(folder) if resume else set()
    stats = DistributedStats()
    existing = sorted(p for p in folder.glob("*.parquet") if p.name[: -len(".parquet")] in done)
    stats.skipped = sum(pq.ParquetFile(p).metadata.num_rows for p in existing)
    todo = [u for u in units if u.id not in done]
    if not todo:
        return stats
    ray = connect(address)
    reader_cpus = min(0.5, max(0.1, num_cpus / 2))
    ds = ray.data.from_items([{"index": i} for i in range(len(todo))], override_num_blocks=min(len(todo), 1000))
    ds = ds.map_batches(read_units, batch_size=1, batch_format="numpy", fn_kwargs={"units": todo}, num_cpus=reader_cpus)
    options = {"image_column": "image", "key_column": "key", "error_column": "error", "batch_size": batch_size}
    ds = ds.map_batches(
        predictor,
        fn_constructor_kwargs={**options, **scorer_options},
        batch_size=batch_size or (32 if num_gpus else 4),
        batch_format="numpy",
        concurrency=concurrency,
        num_gpus=num_gpus,
        num_cpus=num_cpus,
    )
    writers: dict[str, UnitFile] = {}
    written: dict[str, set[str]] = {}
    expected: dict[str, int] = {}
    reference = _reference_rows(existing[:1])
    try:
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            for unit_id in set(batch.column("unit").to_pylist()):
                part = batch.filter(_equals(batch, "unit", unit_id))
                _take(part, unit_id, folder, writers, written, expected, stats, reference, on_rows)
    finally:
        for writer in writers.values():
            writer.abort()  # whatever is still open did not complete
    stats.incomplete = [u.id for u in todo if u.id not in done_units(folder)]
    return stats


def _reference_rows(files) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(files[0]).slice(0, 1).to_pylist() if files else []


def _equals(table, column: str, value):
    import pyarrow.compute as pc

    return pc.equal(table.column(column), value)


def _take(part, unit_id, folder, writers, written, expected, stats, reference, on_rows) -> None:
    """File one unit's share of a result batch: rows into its file (each name once), the marker's count noted;
    the file is committed once every row is in."""
    import pyarrow.compute as pc

    from dgiqa_cli.io.parquet import UnitFile

    markers = part.filter(pc.greater_equal(part.column("count"), 0))
    if markers.num_rows:
        expected[unit_id] = int(markers.column("count")[0].as_py())
    rows = part.filter(pc.less(part.column("count"), 0))
    seen = written.setdefault(unit_id, set())
    names = rows.column("path").to_pylist()
    fresh = [i for i, n in enumerate(names) if n not in seen]
    if len(fresh) < len(names):  # a retried batch: rows this unit already has are dropped
        rows = rows.take(fresh)
    if rows.num_rows:
        new = rows.select(list(FIELDS)).to_pylist()
        if reference:  # rows of another run in the same folder must have the same settings
            try:
                check_rows(folder, reference, {k: new[0][k] for k in SETTINGS_FIELDS})
            except ResumeError:
                raise ResumeError(
                    f"{folder} holds rows made with other settings than this run's: use a new folder, "
                    "or --overwrite to start it again"
                ) from None
        if unit_id not in writers:
            writers[unit_id] = UnitFile(folder, unit_id)
        writers[unit_id].write_table(rows)
        seen.update(r["path"] for r in new)
        stats.failed += sum(r["error"] is not None for r in new)
        stats.scored += sum(r["error"] is None for r in new)
        if on_rows is not None:
            on_rows(new)
    if unit_id in expected and len(seen) >= expected[unit_id]:
        writer = writers.pop(unit_id, None) or UnitFile(folder, unit_id)  # an empty unit: an empty file
        writer.commit()
