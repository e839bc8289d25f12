"""The ``tunefarm`` command line, one module per command group, and its clients of the farm and
of the HTTP API."""

from tunefarm.cli.entry import main

__all__ = ["main"]
