"""``python -m storage.maintenance``: the operators' command line (see ``cli.py``)."""

from storage.maintenance.cli import cli

cli()
