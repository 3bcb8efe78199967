"""One root for everything dgiqa raises on purpose, and the exit code each cause maps to.

Library callers catch :class:`DGIQAError` (or a subclass); the command line maps any of them to
``exc.exit_code`` in one place. Messages are one printable line that says what to do next and never
name a command-line flag: the CLI adds its own wording where a flag is meant.
"""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_WEIGHTS = 0, 1, 2, 3
EXIT_OUTPUT, EXIT_BUSY = 74, 75  # sysexits' EX_IOERR and EX_TEMPFAIL
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM


class DGIQAError(Exception):
    """Root of dgiqa's errors; ``exit_code`` is what the command line exits with."""

    exit_code = EXIT_FAILED


class UsageError(DGIQAError, ValueError):
    """An option value or an input that names nothing usable: the caller must change what they asked for."""

    exit_code = EXIT_USAGE


# -- weights: each message says what to do next ------------------------------------------------


class WeightsError(DGIQAError):
    """Weights that cannot be had or do not fit; the message says what to do next."""

    exit_code = EXIT_WEIGHTS


class UnknownWeightsError(WeightsError, ValueError):
    """A weights spec that names nothing: a typo in what was asked for (a usage error)."""

    exit_code = EXIT_USAGE


class WrongKindError(UnknownWeightsError):
    """A depth model given where a scoring model is expected, or the other way round."""


class MissingHubFileError(WeightsError):
    """The Hub repository exists but has no such file."""
