"""The ``compoundry`` command line (entry point ``compoundry.cli:app``); one module per command group."""

from compoundry.cli.main import app

__all__ = ["app"]
