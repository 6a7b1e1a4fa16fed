"""The ``stats`` command of ``napari-samboxes`` (arguments and messages;
:mod:`napari_samboxes.stats` does the work).

Bad arguments are one line on stderr and exit code 2, checked before any
table is read; tables that cannot be read are named (one line each) and
give exit code 1 after the report of the others, as does a folder with no
timed box.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
from pathlib import Path
from typing import Any

from .cli_datasets import fail

__all__ = ["COMMANDS", "add_commands", "run_command"]

#: The sub-commands of this module.
COMMANDS: tuple[str, ...] = ("stats",)


def add_commands(sub: Any) -> None:
    """Add ``stats`` to the sub-parsers ``sub``."""
    from .stats import IDLE_S

    p = sub.add_parser(
        "stats",
        help="seconds and actions per box, from the box tables' time columns",
    )
    p.add_argument("folder", help="image folder (its annotations/) or box tables")
    p.add_argument(
        "--idle",
        type=float,
        default=IDLE_S,
        help=f"gaps longer than this many seconds are idle, left out (default "
        f"{IDLE_S:g})",
    )
    p.add_argument("--plot", help="draw seconds and actions over time to this PNG")


def _check(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments, if anything."""
    if not Path(args.folder).is_dir():
        return f"{args.folder} is not a folder"
    if not args.idle > 0 or not math.isfinite(args.idle):
        return f"--idle must be a positive number of seconds, not {args.idle:g}"
    if args.plot:
        plot = Path(args.plot)
        if plot.suffix.lower() != ".png":
            return f"--plot {plot}: give a .png file"
        if not plot.parent.is_dir():
            return f"--plot {plot}: no folder {plot.parent}"
        if importlib.util.find_spec("matplotlib") is None:
            return "--plot needs matplotlib (pip install matplotlib)"
    return None


def run_command(args: argparse.Namespace) -> int:
    """Run ``stats``; returns the exit code."""
    from .stats import folder_stats, plot_stats

    problem = _check(args)
    if problem:
        return fail(f"error: {problem}", 2)
    stats, problems = folder_stats(args.folder, args.idle)
    for line in problems:
        fail(line)
    if not stats.tables:
        return fail(f"{args.folder}: no box tables (annotations/*.csv or *.csv)")
    print(stats.text())
    if not stats.boxes:
        return fail(
            f"{args.folder}: no box has a time (boxes made elsewhere have none; "
            "boxes made in the panel have a 'created' column)"
        )
    if args.plot:
        try:
            print(f"plot: {plot_stats(stats, args.plot)}")
        except OSError as e:
            return fail(f"--plot {args.plot}: cannot write it ({e.strerror or e})")
    return 1 if problems else 0
