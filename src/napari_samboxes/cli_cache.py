"""The ``cache info|clear`` command(s) of ``napari-samboxes`` (to be written)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["COMMANDS", "add_commands", "run_command"]

#: The sub-commands of this module.
COMMANDS: tuple[str, ...] = ()


def add_commands(sub: Any) -> None:
    """Add this module's sub-commands to the sub-parsers ``sub``."""


def run_command(args: argparse.Namespace) -> int:
    """Run one of :data:`COMMANDS`; returns the exit code."""
    raise ValueError(args.command)
