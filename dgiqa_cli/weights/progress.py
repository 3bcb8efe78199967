"""Progress bars for weight downloads: rich on stderr, silent when quiet.

One bar class serves both downloaders: pooch's ``HTTPDownloader(progressbar=...)``
(an object with ``total``, ``update``, ``reset`` and ``close``) and
huggingface_hub's ``tqdm_class`` hook (a class built with ``total=``, ``initial=``,
``desc=``; ``update``, ``close``, a context manager).

Quiet unless told otherwise when: :func:`configure` said so (the CLI passes its
``--quiet``), ``HF_HUB_DISABLE_PROGRESS_BARS`` is set, or the ``dgiqa`` logger
is set above WARNING (what ``--quiet`` does to it).
"""

from __future__ import annotations

import logging
import os

_TRUTHY = {"1", "true", "yes", "on"}
_settings: dict = {"quiet": None, "console": None}


def configure(*, quiet: bool | None = None, console=None) -> None:
    """Set whether download bars are drawn (``None``: decide from the environment) and on which rich console.

    Pass the console the rest of the program draws on (e.g. the CLI's stderr console), so that a
    download bar nests in a spinner that is already running instead of fighting it.
    """
    _settings["quiet"] = quiet
    _settings["console"] = console


def is_quiet() -> bool:
    if _settings["quiet"] is not None:
        return bool(_settings["quiet"])
    if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "").strip().lower() in _TRUTHY:
        return True
    return not logging.getLogger("dgiqa").isEnabledFor(logging.WARNING)


def _console():
    if _settings["console"] is not None:
        return _settings["console"]
    from rich.console import Console

    return Console(stderr=True)


class DownloadBar:
    """A rich progress bar for one transfer (pooch's progress-bar protocol and huggingface_hub's tqdm_class)."""

    def __init__(self, *args, total=None, initial=0, desc="", **kwargs):
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=_console(),
            transient=False,  # a file or pipe gets the finished bar as one line, for logs
        )
        self._task = self._progress.add_task(str(desc or "download"), total=total or None, completed=initial or 0)
        self._total = total or None
        self._after_reset = False
        self._started = False
        if self._total:
            self._start()

    def _start(self) -> None:
        """Drawn from the first sign of a transfer on: a refused connection or an HTTP error leaves no bar behind."""
        if not self._started:
            self._started = True
            self._progress.start()

    @property
    def total(self):
        return self._total

    @total.setter
    def total(self, value) -> None:  # pooch sets it once the response headers are in (0: unknown)
        self._total = value or None
        self._progress.update(self._task, total=self._total)
        self._start()

    def update(self, n=1) -> None:
        if self._after_reset and not self._total:
            return  # pooch's closing reset()+update(total) would zero a bar of unknown size
        self._start()
        self._progress.advance(self._task, n or 0)

    def reset(self) -> None:
        self._after_reset = True
        if self._total:
            self._progress.reset(self._task, total=self._total)

    def close(self) -> None:
        if self._started:
            self._progress.stop()
            self._started = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class _Silent:
    """The same protocol, drawing nothing."""

    total = None

    def __init__(self, *args, **kwargs):
        pass

    def update(self, n=1) -> None:
        pass

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def bar_class() -> type:
    """The bar class for huggingface_hub's ``tqdm_class``: :class:`DownloadBar`, or a silent one when quiet."""
    return _Silent if is_quiet() else DownloadBar


def bar(desc: str):
    """A bar for one pooch transfer, or a silent one when quiet."""
    return bar_class()(desc=desc)
