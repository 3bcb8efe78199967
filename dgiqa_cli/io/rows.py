"""Result rows as CSV and JSON Lines, written whole and flushed as each image finishes.

Paths in rows
    Written with :func:`dgiqa_cli.io.names.encode_path`: unchanged unless a name holds
    undecodable bytes, and then escaped losslessly (see :mod:`dgiqa_cli.io.names`).

Spreadsheets (``CsvWriter(csv_safe=True)``)
    A text cell starting with ``=``, ``+``, ``-``, ``@``, tab or CR is run as
    a formula by Excel and LibreOffice (CSV injection). OWASP's remedy: prefix
    it with ``'``. We also prefix cells that already start with ``'``, so that
    ``read_csv(path, csv_safe=True)`` strips exactly one quote and gets every
    cell back. Numbers (the score, negative for Life-IQA) are never touched.

Settings
    Every row records what changes a score (:data:`SETTINGS_FIELDS`), so that
    :func:`check_resume` can refuse to mix rows of two different runs in one
    file. A file without those columns (written before they existed) is
    refused too: its rows cannot be checked.

Faults
    A row is formatted to one string first and written in one go; if the write
    fails (disk full, quota, I/O error) the file is cut back to its length
    before the row, so it only ever holds whole rows, and :class:`OutputError`
    says which file and why in one line. :func:`lock_outputs` keeps two runs
    off the same files.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import stat
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from dgiqa_cli.errors import EXIT_BUSY, EXIT_OUTPUT, DGIQAError, UsageError
from dgiqa_cli.io import interrupts
from dgiqa_cli.io.names import decode_path, encode_path, printable

STDOUT = "-"

#: Per-image columns first (the order older files had), then the settings that produced the score.
FIELDS = (
    "path",
    "score",
    "width",
    "height",
    "crops",
    "arch",
    "model",
    "depth_model",
    "scale",
    "error",
    "weights_sha256",
    "crop_mode",
    "seed",
    "precision",
    "backend",
    "decoder",
    "score_std",
    "score_ci95_low",
    "score_ci95_high",
)
#: Settings that change a score: rows of one output file must agree on all of them (see :func:`check_resume`).
SETTINGS_FIELDS = ("model", "depth_model", "weights_sha256", "crops", "crop_mode", "seed", "precision", "backend")
_FLOATS = ("score", "score_std", "score_ci95_low", "score_ci95_high")
_NUMERIC = frozenset({*_FLOATS, "width", "height", "crops", "seed"})
_PATH_LIKE = ("path", "model", "depth_model")  # file names: escaped losslessly, see the module docstring
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _text(value: str) -> str:
    """Free text (an error message) as valid UTF-8: a stray surrogate becomes ``\\udcNN`` instead of crashing."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


# -- errors ----------------------------------------------------------------------------------------------------------

_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EIO: "input/output error (the disk or the network share failed)",
    errno.EFBIG: "file too large (the file-size limit was reached)",
    errno.EPIPE: "the reader closed the pipe",
    errno.ENOENT: "no such file or folder",
    errno.EISDIR: "is a directory, not a file",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.ENAMETOOLONG: "file name too long",
}


def reason(code: int | None) -> str:
    """A short lower-case phrase for an errno, for one-line messages."""
    if code in _REASONS:
        return _REASONS[code]
    return os.strerror(code).lower() if code else "unknown error"


class OutputError(DGIQAError, OSError):
    """An output file cannot be written; ``str()`` is one line naming the file and the cause."""

    @property
    def exit_code(self) -> int:
        return EXIT_BUSY if self.errno == errno.EBUSY else EXIT_OUTPUT

    def __init__(self, path: str | os.PathLike, code: int | None, detail: str | None = None):
        super().__init__(code, detail or reason(code), os.fspath(path))

    def __str__(self) -> str:
        return f"{printable(self.filename)}: {self.strerror}"

    @classmethod
    def wrap(cls, path: str | os.PathLike, error: OSError, doing: str = "") -> OutputError:
        detail = f"{doing}: {reason(error.errno)}" if doing else None
        return cls(path, error.errno, detail)


class ResumeError(UsageError):
    """An existing output was made with other settings (or by an older dgiqa), so rows cannot be appended to it."""


# -- before the run --------------------------------------------------------------------------------------------------


def check_writable(path: str | os.PathLike) -> Path | str:
    """Fail before any work starts when an output cannot be written, saying why in one line.

    ``-`` (stdout), pipes and the terminal are fine. Other devices (``/dev/full``, a disk) are refused: rows
    written there are lost or fail. A full file system is caught here too when it already has no free block.
    """
    if os.fspath(path) == STDOUT:
        return STDOUT
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        info = path.stat()
    except FileNotFoundError:
        info = None
    except OSError as error:
        raise OutputError.wrap(path, error) from None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise OutputError(path, errno.EISDIR)
    if info is not None and not stat.S_ISREG(info.st_mode):
        if stat.S_ISFIFO(info.st_mode) or stat.S_ISSOCK(info.st_mode) or _is_terminal_or_null(path, info):
            return path
        raise OutputError(path, errno.ENODEV, "is a device, not a file (use - for stdout)")
    if not parent.is_dir():
        raise OutputError(path, errno.ENOENT, f"the folder {printable(str(parent))} does not exist")
    if info is not None:
        try:  # opening for append changes nothing, and gives the real reason (EACCES, EROFS, ETXTBSY, ...)
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
        except OSError as error:
            raise OutputError.wrap(path, error) from None
    elif not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(path, errno.EROFS if _read_only(parent) else errno.EACCES)
    elif _read_only(parent):
        raise OutputError(path, errno.EROFS)
    if _no_free_block(parent):
        raise OutputError(path, errno.ENOSPC)
    return path


def _no_free_block(folder: Path) -> bool:
    """A file system that is already full (a real one: pseudo file systems report no blocks at all)."""
    try:
        fs = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs on Windows
        return False
    return fs.f_blocks > 0 and fs.f_bavail == 0


def _read_only(folder: Path) -> bool:
    if not hasattr(os, "statvfs"):  # Windows: access() already said no
        return False
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _is_terminal_or_null(path: Path, info: os.stat_result) -> bool:
    """/dev/null, /dev/tty or this process's own terminal; found without opening the device (opening some acts)."""
    if not stat.S_ISCHR(info.st_mode):
        return False
    if os.path.realpath(path) == "/dev/tty":
        return True
    devices = []
    with contextlib.suppress(OSError):
        devices.append(os.stat(os.devnull).st_rdev)
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            if os.isatty(fd):
                devices.append(os.fstat(fd).st_rdev)
    return info.st_rdev in devices


def _is_regular(path: str | os.PathLike) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


@contextlib.contextmanager
def lock_outputs(paths: Iterable[str | os.PathLike | None]) -> Iterator[None]:
    """Hold ``<output>.lock`` beside each output file for a whole run; a second run on them fails at once.

    Two runs appending to one file would each skip what the other had not yet written, and score it twice, or
    truncate each other's rows. The lock is :mod:`filelock`'s (an ``flock`` on the lock file, released by the
    kernel if the process dies, so it is never stale); the file stays behind, empty but for the holder's pid,
    because removing a lock file others may be opening breaks the lock. ``-`` and devices are not locked.
    """
    from filelock import FileLock, Timeout

    with contextlib.ExitStack() as stack:
        for path in paths:
            if path is None or os.fspath(path) == STDOUT or (os.path.exists(path) and not _is_regular(path)):
                continue
            lock_path = os.path.realpath(path) + ".lock"  # a link and its target share one lock
            lock = _file_lock(FileLock, lock_path)
            try:
                lock.acquire()
            except Timeout:
                holder = _lock_holder(lock_path)
                raise OutputError(
                    path,
                    errno.EBUSY,
                    f"is being written by another dgiqa run{f' (pid {holder})' if holder else ''}; "
                    f"wait for it to end, or write to another file (lock: {printable(lock_path)})",
                ) from None
            except OSError as error:
                raise OutputError.wrap(lock_path, error, "cannot create the lock file") from None
            stack.callback(lock.release)
        yield


def _file_lock(file_lock, lock_path: str):
    """A non-blocking FileLock that records our pid in its file (filelock >= 4.2 lends us the descriptor)."""

    def record_pid(fd: int) -> None:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())

    try:
        return file_lock(lock_path, timeout=0, on_acquired=record_pid)
    except TypeError:  # an older filelock: lock all the same, without the pid
        return file_lock(lock_path, timeout=0)


def _lock_holder(lock_path: str) -> int | None:
    try:
        text = Path(lock_path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


# -- rows ------------------------------------------------------------------------------------------------------------


def row_of(result, settings: dict | None = None) -> dict:
    """The exported fields of a ScoreResult, the run's ``settings`` overriding the result's own values.

    Floats keep full precision (repr); blanks stay ``None``. Paths are not escaped yet (the writers do that).
    """
    row = result.as_dict()
    if settings:
        row.update(settings)
    return {k: row.get(k) for k in FIELDS}


def _cells(row: dict, csv_safe: bool = False) -> dict:
    """A row as it is stored: paths escaped, text made valid UTF-8, formulas defused when asked."""
    out = {}
    for key, value in row.items():
        if value is not None and key not in _NUMERIC:
            value = encode_path(str(value)) if key in _PATH_LIKE else _text(str(value))
            if csv_safe and value.startswith((*_FORMULA_START, "'")):
                value = "'" + value
        out[key] = value
    return out


class RowWriter:
    """An output that stays open for a whole run and only ever holds whole rows (use it as a context manager).

    ``path`` ``-`` is stdout. ``settings`` (the run's model, crops, ...) go into every row.
    """

    def __init__(self, path: str | os.PathLike, append: bool = False, settings: dict | None = None):
        self.path = STDOUT if os.fspath(path) == STDOUT else Path(path)
        self.settings = dict(settings or {})
        self._fd: int | None = None
        self._regular = False
        if self.path == STDOUT:
            self._appending = False
            return
        self._appending = append and _is_regular(self.path) and self.path.stat().st_size > 0
        if self._appending:
            drop_partial_last_row(self.path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if self._appending else os.O_TRUNC)
        try:
            self._fd = os.open(self.path, flags, 0o666)
        except OSError as error:
            raise OutputError.wrap(self.path, error) from None
        self._regular = stat.S_ISREG(os.fstat(self._fd).st_mode)

    def write(self, result) -> None:
        """Write one result's row, whole, and flush it."""
        self._write_text(self.format(row_of(result, self.settings)))
        interrupts.reached("row")

    def format(self, row: dict) -> str:
        raise NotImplementedError

    def _write_text(self, text: str) -> None:
        """Write all of ``text`` or none of it; on failure cut the file back and raise :class:`OutputError`."""
        data = text.encode("utf-8")
        if self._fd is None:
            return self._write_stdout(data)
        start = os.fstat(self._fd).st_size if self._regular else 0
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as error:
            if self._regular:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, start)
            raise OutputError.wrap(self.path, error) from None
        return None

    def _write_stdout(self, data: bytes) -> None:
        try:
            buffer = getattr(sys.stdout, "buffer", None)
            if buffer is not None:
                sys.stdout.flush()
                buffer.write(data)
                buffer.flush()
            else:
                sys.stdout.write(data.decode("utf-8"))
                sys.stdout.flush()
        except OSError as error:
            raise OutputError.wrap("stdout", error) from None

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CsvWriter(RowWriter):
    """CSV rows under a header (written when the file is new); ``csv_safe`` defuses spreadsheet formulas."""

    def __init__(
        self,
        path: str | os.PathLike,
        append: bool = False,
        settings: dict | None = None,
        csv_safe: bool = False,
    ):
        self.csv_safe = csv_safe
        super().__init__(path, append, settings)
        if self._appending:
            header = _csv_header(self.path)
            if header != list(FIELDS):
                self.close()
                raise ResumeError(_old_columns_message(self.path, header))
        else:
            try:
                self._write_text(_csv_line(FIELDS))
            except OutputError:
                self.close()
                raise

    def format(self, row: dict) -> str:
        cells = _cells(row, self.csv_safe)
        return _csv_line(["" if cells[k] is None else cells[k] for k in FIELDS])


def _csv_line(values) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(values)  # the csv module's default \r\n line ends, as before
    return buffer.getvalue()


class JsonlWriter(RowWriter):
    """One JSON object per line."""

    def format(self, row: dict) -> str:
        return json.dumps(_cells(row), ensure_ascii=False) + "\n"


# -- reading back ----------------------------------------------------------------------------------------------------


def read_csv(path: str | os.PathLike, csv_safe: bool = False) -> list[dict]:
    """Rows of a CSV written by :class:`CsvWriter`: numbers parsed, paths decoded (and quotes undone for csv_safe)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return [_parse(row, csv_safe) for row in csv.DictReader(fh)]


def _parse(row: dict, csv_safe: bool = False) -> dict:
    out = {}
    for key, value in row.items():
        if csv_safe and isinstance(value, str) and value.startswith("'") and key not in _NUMERIC:
            value = value[1:]
        out[key] = value if value != "" else None
    for key in _FLOATS:
        if out.get(key) is not None:
            out[key] = float(out[key])
    for key in ("width", "height", "crops", "seed"):
        if out.get(key) is not None:
            out[key] = int(out[key])
    return _decode_paths(out)


def _decode_paths(row: dict) -> dict:
    for key in _PATH_LIKE:
        if isinstance(row.get(key), str):
            row[key] = decode_path(row[key])
    return row


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Rows of a JSON Lines file written by :class:`JsonlWriter`, paths decoded."""
    with open(path, encoding="utf-8") as fh:
        return [_decode_paths(json.loads(line)) for line in fh if line.strip()]


def read_rows(path: str | os.PathLike, csv_safe: bool = False) -> list[dict]:
    """Rows of either kind of output, told apart by the suffix or the first character."""
    path = Path(path)
    if path.suffix.lower() in (".jsonl", ".ndjson") or _looks_jsonl(path):
        return read_jsonl(path)
    return read_csv(path, csv_safe)


def _looks_jsonl(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(1) == b"{"


def _csv_header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        return next(csv.reader(fh), [])


def drop_partial_last_row(path: str | os.PathLike) -> None:
    """Cut a row that a killed run left half-written (no final newline), so appending stays valid.

    Reads only the end of the file: outputs of long runs are large.
    """
    path = Path(path)
    if not _is_regular(path) or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        end = fh.seek(0, os.SEEK_END)
        fh.seek(end - 1)
        if fh.read(1) == b"\n":
            return
        position = end
        while position > 0:
            step = min(65536, position)
            position -= step
            fh.seek(position)
            chunk = fh.read(step)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                fh.truncate(position + cut + 1)
                return
        fh.truncate(0)


def completed_paths(path: str | os.PathLike, csv_safe: bool = False) -> set[str]:
    """Paths that already have a row in an output file (after repairing a torn last row), as discovery yields them."""
    path = Path(path)
    if os.fspath(path) == STDOUT or not _is_regular(path):
        return set()
    drop_partial_last_row(path)
    return {row["path"] for row in read_rows(path, csv_safe)}


def check_resume(path: str | os.PathLike, settings: dict, csv_safe: bool = False) -> None:
    """Refuse to append to an output whose rows were made with other settings, naming each difference.

    Compares every key of ``settings`` (give it :data:`SETTINGS_FIELDS`). A file without the settings columns
    (from a dgiqa older than them) is refused as well: nothing says its rows match this run.
    """
    path = Path(path)
    if os.fspath(path) == STDOUT or not _is_regular(path) or path.stat().st_size == 0:
        return
    drop_partial_last_row(path)
    rows = read_rows(path, csv_safe)
    if not rows:
        if not _looks_jsonl(path) and _csv_header(path) != list(FIELDS):
            raise ResumeError(_old_columns_message(path, _csv_header(path)))
        return
    check_rows(path, rows, settings)


def check_rows(path: str | os.PathLike, rows: list[dict], settings: dict) -> None:
    """:func:`check_resume` on rows already read (from any kind of output, e.g. Parquet)."""
    if not rows:
        return
    missing = [k for k in settings if k not in rows[0]]
    if missing:
        raise ResumeError(_old_columns_message(path, list(rows[0]), missing))
    ours = {k: _same(v) for k, v in settings.items()}
    found: dict[str, list[str]] = {}
    for row in rows:
        for key, value in ours.items():
            theirs = _same(row.get(key))
            if theirs != value and theirs not in found.setdefault(key, []):
                found[key].append(theirs)
    differences = [(k, v) for k, v in found.items() if v]
    if differences:
        made = ", ".join(f"{k}={' and '.join(printable(x) or '(blank)' for x in v)}" for k, v in differences)
        now = ", ".join(f"{k}={printable(ours[k]) or '(blank)'}" for k, _ in differences)
        raise ResumeError(
            f"{printable(str(path))} was made with {made}; this run has {now}: "
            "use a new output file, or --overwrite to start it again"
        )


def _same(value) -> str:
    """Settings compared as text, so a CSV's ``"3"`` equals a JSON ``3``; blank is ``""``."""
    return "" if value is None else str(value)


def _old_columns_message(path, header: list[str], missing: list[str] | None = None) -> str:
    missing = missing or [k for k in FIELDS if k not in header]
    what = f"has no {', '.join(missing)} column{'s' if len(missing) > 1 else ''}" if missing else "has other columns"
    return (
        f"{printable(str(path))} {what} (an older dgiqa, or another program, wrote it), so its rows cannot be "
        "checked against this run's settings: use a new output file, or --overwrite to start it again"
    )


def score_summary(scores: list[float]) -> dict[str, float]:
    """min, quartiles and max of the scores (linear interpolation, like numpy's default)."""
    import numpy as np

    if not scores:
        return {}
    q = np.quantile(np.asarray(scores, dtype=np.float64), [0, 0.25, 0.5, 0.75, 1])
    return dict(zip(("min", "q1", "median", "q3", "max"), map(float, q), strict=True))
