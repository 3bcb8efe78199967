"""``python -m dgiqa_cli`` is the same as the ``dgiqa`` command."""

from .cli import main

main()
