"""``python -m dgiqa_cli`` is the same as the ``dgiqa`` command."""

from dgiqa_cli.cli import main

main()
