"""The `yrdx` command line: the only place with argparse, printing and exit codes."""

from gateway.cli.main import main

__all__ = ["main"]
