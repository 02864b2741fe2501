"""``python -m pclandscape``: the command line."""

from .cli import entry

entry()
