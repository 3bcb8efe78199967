"""What can go wrong with weights; each message says what to do next."""

from __future__ import annotations

from ..errors import EXIT_USAGE, EXIT_WEIGHTS, DGIQAError


class WeightsError(DGIQAError):
    """Weights that cannot be had or do not fit; the message says what to do next."""

    exit_code = EXIT_WEIGHTS


class UnknownWeightsError(WeightsError, ValueError):
    """A weights spec that names nothing: a typo on the command line (a usage error)."""

    exit_code = EXIT_USAGE


class WrongKindError(UnknownWeightsError):
    """A depth model given where a scoring model is expected, or the other way round."""


class MissingHubFileError(WeightsError):
    """The Hub repository exists but has no such file."""
