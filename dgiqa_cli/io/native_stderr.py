"""Keeping C libraries quiet in the ``dgiqa`` program: libpng and libjpeg print to file descriptor 2.

The library never touches fd 2: a caller's own writes to it (log lines, other
threads' output) must all arrive, so a library user sees the decoders' rare
warnings about damaged files. The ``dgiqa`` program (its ``main``) sends the
process's fd 2 to /dev/null once at start, while Python's ``sys.stderr`` keeps
the terminal (:func:`silence_native_stderr`); a server gives fd 2 back, since a
server's fd 2 is its log (:func:`keep_native_stderr`).
"""

from __future__ import annotations

import os
import sys

_process_quiet = False


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
    """For servers (``dgiqa serve``): undo :func:`silence_native_stderr`, so fd 2 points where ``sys.stderr``
    writes again and every log line written to it is kept."""
    if _process_quiet:
        sys.stderr.flush()
        os.dup2(sys.stderr.fileno(), 2)
