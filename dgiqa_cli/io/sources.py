"""Where pictures come from: folders and files, WebDataset tar shards, Parquet files of image bytes, remote URLs.

A run's inputs are a list of :class:`Unit` s, each read as a stream of :class:`Item` s (a name for the row and
the picture's bytes, or where to read them, or why there are none):

* ``files``: image files (a folder walked as :mod:`dgiqa_cli.io.discover` walks it, or files named directly);
  an item per file, named by its path and read by the worker that prepares it;
* ``tar``: a WebDataset shard (``shards/000001.tar``): one item per image member (by its suffix; the
  ``.json``/``.txt``/``.cls`` members of a sample are skipped), named ``SHARD/MEMBER``, e.g.
  ``shards/000001.tar/sample0042.jpg``. Read with :mod:`tarfile` in stream mode: one pass, one member in
  memory at a time, nothing unpacked to disk. A shard that breaks off (truncated, not a tar) gives one
  error row named after the shard; the members read before the break keep their rows;
* ``parquet``: a Parquet file with an image-bytes column (binary, or a struct with a ``bytes`` field as
  Hugging Face datasets store images) and a key column: one item per row, named ``FILE/KEY``
  (``FILE/ROW``, the row's number from 0, where the file has no key column; ``FILE/KEY#ROW`` for a key
  repeated in the file). Read a record batch at a time
  (:meth:`pyarrow.parquet.ParquetFile.iter_batches`), never the whole file.

Any of these may be a URL (``s3://``, ``gs://``, ``http(s)://``, ``memory://``, ...): it is opened through
:mod:`fsspec` with whichever backends are installed (``s3fs``, ``gcsfs``, ``aiohttp``). A URL with ``*`` is
expanded (``s3://bucket/shards/*.tar``); a URL without a known suffix is a folder, listed recursively.

Names are unique within a run and stable from run to run, so ``--resume`` matches rows on them.
"""

from __future__ import annotations

import hashlib
import posixpath
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dgiqa_cli.errors import UsageError
from dgiqa_cli.io.images import MAX_FILE_BYTES, is_image_path

TAR_SUFFIXES = (".tar",)
PARQUET_SUFFIXES = (".parquet", ".pq")
#: Columns tried, in order, when no ``--image-column`` / ``--key-column`` is given.
IMAGE_COLUMNS = ("image", "jpg", "jpeg", "png", "webp", "img", "image_bytes", "bytes")
KEY_COLUMNS = ("key", "__key__", "path", "name", "id", "url")
READ_BATCH_ROWS = 64  # Parquet rows per record batch read: a few MB of pictures at a time


class SourceError(UsageError):
    """A source that cannot be used at all (a usage error: no such file, no image column, no fsspec backend)."""


@dataclass(frozen=True)
class Item:
    """One picture to score: its row name and its encoded bytes, or where to read them, or why there are none."""

    name: str
    data: bytes | None = None  # already in memory (a tar member, a Parquet cell)
    url: str | None = None  # read by the worker that prepares it (a remote file)
    error: str | None = None  # no picture to decode: the row's error


@dataclass(frozen=True)
class Unit:
    """A piece of a run that is read as one stream and, in a distributed run, written as one output file."""

    kind: str  # "files", "tar" or "parquet"
    location: str  # the shard or Parquet file; for "files" the first file
    files: tuple[str, ...] = ()
    image_column: str | None = None
    key_column: str | None = None

    @property
    def id(self) -> str:
        """Stable over runs with the same inputs: where a distributed run's output for this unit goes."""
        what = "\n".join(self.files) if self.kind == "files" else self.location
        digest = hashlib.sha1(f"{self.kind}\n{what}".encode("utf-8", "surrogateescape")).hexdigest()[:16]
        stem = posixpath.basename(self.location.rstrip("/")).replace(".", "_")[:40] or "part"
        return f"{stem}-{digest}"

    def items(self) -> Iterator[Item]:
        if self.kind == "tar":
            return tar_items(self.location)
        if self.kind == "parquet":
            return parquet_items(self.location, self.image_column, self.key_column)
        return (Item(f) if not is_url(f) else Item(f, url=f) for f in self.files)

    def count(self) -> int | None:
        """How many items the unit yields, where that is cheap to know (None for a remote shard)."""
        if self.kind == "files":
            return len(self.files)
        if self.kind == "parquet":
            import pyarrow.parquet as pq

            with open_binary(self.location) as fh:
                return pq.ParquetFile(fh).metadata.num_rows
        if is_url(self.location):
            return None
        try:  # headers only: a seekable tar is walked member by member without reading their data
            with tarfile.open(self.location, mode="r:") as tar:
                return sum(1 for m in tar if m.isfile() and is_image_path(m.name))
        except (OSError, tarfile.TarError):
            return None


def is_url(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def kind_of(location: str) -> str:
    lower = location.lower().rstrip("/")
    if lower.endswith(TAR_SUFFIXES):
        return "tar"
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return "file" if is_image_path(lower) else "folder"


def open_binary(location: str, sequential: bool = False):
    """A readable binary file: a local path opened directly, anything else through fsspec. ``sequential``: read
    from start to end only (over HTTP: one streamed response, no range requests)."""
    if not is_url(location):
        return open(location.removeprefix("file://"), "rb")
    import fsspec

    options = {"block_size": 0} if sequential and location.startswith(("http://", "https://")) else {}
    return fsspec.open(location, "rb", **options).open()


def read_url(url: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a remote file, no more than ``limit`` (the cap local files have)."""
    with open_binary(url, sequential=True) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise OSError(f"file too large (over {limit // 1024**3} GiB)")
    return data


# -- finding the units -----------------------------------------------------------------------------------------------


def collect_units(
    specs: list[str],
    recursive: bool = True,
    pattern: str | None = None,
    from_list: str | None = None,
    image_column: str | None = None,
    key_column: str | None = None,
    files_per_unit: int = 1000,
) -> list[Unit]:
    """The units of a run, in order: loose image files grouped ``files_per_unit`` at a time (folders walked as
    ``dgiqa batch`` always walked them), each shard and Parquet file a unit of its own."""
    from dgiqa_cli.io.discover import collect_inputs

    files: list[str] = []
    units: list[Unit] = []
    local = [Path(s) for s in specs if not is_url(s) and kind_of(s) in ("file", "folder")]
    files.extend(collect_inputs(local, recursive, pattern, from_list))
    for spec in specs:
        if not is_url(spec) and kind_of(spec) in ("file", "folder"):
            continue
        for location in _expand(spec) if is_url(spec) else [spec.removeprefix("file://")]:
            kind = kind_of(location)
            if kind == "tar":
                units.append(Unit("tar", location))
            elif kind == "parquet":
                columns = _choose_columns(location, image_column, key_column)
                units.append(Unit("parquet", location, image_column=columns[0], key_column=columns[1]))
            elif kind == "file":
                files.append(location)
    files = list(dict.fromkeys(files))
    loose = [
        Unit("files", chunk[0], files=tuple(chunk))
        for chunk in (files[i : i + files_per_unit] for i in range(0, len(files), files_per_unit))
    ]
    return loose + list(dict.fromkeys(units))


def _expand(url: str) -> list[str]:
    """A URL as the files it names: itself, the matches of a ``*`` pattern, or the files under a folder."""
    try:
        from fsspec.core import url_to_fs
    except ImportError:
        raise SourceError(f"{url}: remote sources need fsspec (pip install fsspec)") from None
    try:
        fs, path = url_to_fs(url)
    except (ImportError, ValueError) as exc:  # no backend for the protocol (s3fs, gcsfs, ...)
        raise SourceError(f"{url}: {exc}") from None
    protocol = url.split("://", 1)[0]

    def unstrip(p: str) -> str:
        return p if "://" in p else f"{protocol}://{p.lstrip('/') if protocol == 'memory' else p}"

    if protocol in ("http", "https"):  # no listing over plain HTTP: the URL is the file
        return [url]
    try:
        if any(ch in path for ch in "*?["):
            found = sorted(fs.glob(path))
        elif kind_of(url) != "folder":
            return [url]
        else:
            found = sorted(fs.find(path))
    except (OSError, ValueError) as exc:
        raise SourceError(f"{url}: cannot be listed ({exc})") from None
    wanted = [p for p in found if kind_of(p) != "folder"]
    if not wanted:
        raise SourceError(f"{url}: no images, shards (.tar) or Parquet files there")
    return [unstrip(p) for p in wanted]


def _choose_columns(location: str, image_column: str | None, key_column: str | None) -> tuple[str, str | None]:
    """The image-bytes and key columns of a Parquet file: the ones asked for, else the first of the usual names."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SourceError(f"{location}: Parquet needs pyarrow, a dgiqa dependency (pip install pyarrow)") from None
    try:
        with open_binary(location) as fh:
            names = pq.ParquetFile(fh).schema_arrow.names
    except FileNotFoundError:
        raise SourceError(f"{location}: no such file") from None
    except Exception as exc:
        raise SourceError(f"{location}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    if image_column is None:
        image_column = next((c for c in IMAGE_COLUMNS if c in names), None)
    if image_column not in names:
        raise SourceError(
            f"{location}: no image column {image_column or '(' + ', '.join(IMAGE_COLUMNS) + ')'}; "
            f"it has {', '.join(names)}: name one with --image-column"
        )
    if key_column is None:
        key_column = next((c for c in KEY_COLUMNS if c in names), None)
    elif key_column not in names:
        raise SourceError(f"{location}: no key column {key_column}; it has {', '.join(names)}")
    return image_column, key_column


# -- reading them ----------------------------------------------------------------------------------------------------


def tar_items(location: str) -> Iterator[Item]:
    """One item per image member of a shard, in the shard's order, streamed (see the module docstring)."""
    seen: set[str] = set()
    try:
        with open_binary(location, sequential=True) as fh, tarfile.open(fileobj=fh, mode="r|*") as tar:
            for member in tar:
                if not member.isfile() or not is_image_path(member.name):
                    continue
                name = f"{location}/{member.name}"
                if name in seen:  # a member repeated in one shard: one row, as for a path listed twice
                    continue
                seen.add(name)
                if member.size > MAX_FILE_BYTES:
                    yield Item(name, error=f"member too large ({member.size / 1024**3:.1f} GiB)")
                    continue
                yield Item(name, data=tar.extractfile(member).read())
    except (OSError, tarfile.TarError, EOFError) as exc:
        detail = str(exc) or type(exc).__name__
        yield Item(location, error=f"shard cannot be read past {len(seen)} images ({detail})")


def parquet_items(location: str, image_column: str, key_column: str | None) -> Iterator[Item]:
    """One item per row, a record batch at a time (see the module docstring)."""
    import pyarrow.parquet as pq

    row, seen = 0, set()
    columns = [image_column] + ([key_column] if key_column and key_column != image_column else [])
    try:
        with open_binary(location) as fh:
            for batch in pq.ParquetFile(fh).iter_batches(batch_size=READ_BATCH_ROWS, columns=columns):
                images = batch.column(image_column).to_pylist()
                keys = batch.column(key_column).to_pylist() if key_column else [None] * len(images)
                for cell, key in zip(images, keys, strict=True):
                    name = f"{location}/{row if key is None else key}"
                    if name in seen:  # a repeated key: the repeat is told apart by its row number
                        name = f"{name}#{row}"
                    seen.add(name)
                    yield _cell_item(name, cell)
                    row += 1
    except Exception as exc:  # a damaged file: a row for the break, the rows read before it kept
        yield Item(location, error=f"Parquet file cannot be read past row {row} ({type(exc).__name__}: {exc})")


def _cell_item(name: str, cell) -> Item:
    if isinstance(cell, dict):  # Hugging Face datasets' Image feature: {"bytes": ..., "path": ...}
        cell = cell.get("bytes")
    if cell is None:
        return Item(name, error="no image bytes (an empty cell)")
    if isinstance(cell, str):
        return Item(name, error="the image column holds text, not image bytes")
    return Item(name, data=bytes(cell))


def iter_items(units: list[Unit], skip: Callable[[str], bool] | None = None) -> Iterator[Item]:
    """Every item of ``units`` in order, less those ``skip`` says are done."""
    for unit in units:
        for item in unit.items():
            if skip is None or not skip(item.name):
                yield item


def total_items(units: list[Unit]) -> int | None:
    """The number of items of a run, or None when a unit cannot tell without reading it all."""
    total = 0
    for unit in units:
        count = unit.count()
        if count is None:
            return None
        total += count
    return total
