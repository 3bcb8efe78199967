"""What can go wrong with weights; each message says what to do next."""

from __future__ import annotations


class WeightsError(Exception):
    """Weights that cannot be had or do not fit; the message says what to do next."""


class UnknownWeightsError(WeightsError, ValueError):
    """A weights spec that names nothing: a typo on the command line (a usage error)."""


class WrongKindError(UnknownWeightsError):
    """A depth model given where a scoring model is expected, or the other way round."""


class MissingHubFileError(WeightsError):
    """The Hub repository exists but has no such file."""
