"""Keeping C libraries quiet: libpng and libjpeg print to file descriptor 2, past every log level.

The decoder sends fd 2 to /dev/null while it runs (:func:`native_stderr_silenced`); the CLI does it once for the
whole process at start (:func:`silence_native_stderr`); a server gives fd 2 back and never redirects it
(:func:`keep_native_stderr`).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_quiet_lock = threading.Lock()
_quiet_depth = 0
_quiet_saved_fd: int | None = None
_process_quiet = False
_native_stderr_kept = False


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null while a C decoder runs.

    libpng and libjpeg print warnings ("libpng warning: iCCP: ...", "Corrupt
    JPEG data: ...") straight to fd 2, past OpenCV's log level; a folder of odd
    files printed a thousand such lines. Worker threads decode at once, so the
    redirect is shared: the first decoder in sets it, the last one out restores
    it. Whatever else writes to fd 2 meanwhile is lost too, so a program that
    prints while other threads decode should call :func:`silence_native_stderr`
    once at start instead, which makes this a no-op.
    """
    global _quiet_depth, _quiet_saved_fd
    if _process_quiet or _native_stderr_kept:
        yield
        return
    with _quiet_lock:
        if _quiet_depth == 0:
            sys.stderr.flush()
            _quiet_saved_fd = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0 and _quiet_saved_fd is not None:
                os.dup2(_quiet_saved_fd, 2)
                os.close(_quiet_saved_fd)
                _quiet_saved_fd = None


def silence_native_stderr() -> None:
    """For programs (the CLI): Python's ``sys.stderr`` keeps the terminal, C libraries' fd 2 goes to /dev/null.

    Call once at start, before consoles or log handlers are made, so that none
    holds the old stream. Rich consoles made with ``stderr=True`` look up
    ``sys.stderr`` on each write and keep working.
    """
    global _process_quiet
    if _process_quiet:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    sys.stderr = open(saved, "w", encoding=encoding, errors="backslashreplace", buffering=1)  # noqa: SIM115
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    _process_quiet = True


def keep_native_stderr() -> None:
    """For servers (``dgiqa serve``): fd 2 never redirected, so log lines written while others decode are kept.
    Undoes :func:`silence_native_stderr` (fd 2 points again where ``sys.stderr`` writes)."""
    global _native_stderr_kept
    _native_stderr_kept = True
    if _process_quiet:
        sys.stderr.flush()
        os.dup2(sys.stderr.fileno(), 2)
