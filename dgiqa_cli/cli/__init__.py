"""The ``dgiqa`` command line: parse, call the library, render. No model logic lives here.

:mod:`.common` holds the Typer app and what the commands share, :mod:`.options` the
options that travel together (the scoring settings), :mod:`.running`
the outputs and scoring loop of the commands that score many images; every other
module of this package is one command (or command group) that registers
itself on the app when imported. Importing this package imports them all, so
``from dgiqa_cli.cli import app`` gives the complete command line.
"""

from __future__ import annotations

import importlib
import pkgutil
import warnings

from dgiqa_cli.cli.common import app

#: Modules every command may import; each other module is a command, registered by importing it.
SHARED = ("common", "options", "running")

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in SHARED:
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    from dgiqa_cli.io.native_stderr import silence_native_stderr

    # C decoders (libpng, libjpeg) print to fd 2 from worker threads; our own messages keep the terminal.
    # `dgiqa serve` gives its fd 2 back (a server's fd 2 is its log: dgiqa_cli.io.native_stderr.keep_native_stderr).
    silence_native_stderr()
    warnings.filterwarnings("ignore", module=r"PIL\.")  # Pillow's notes on odd files: our rows say why
    app()
