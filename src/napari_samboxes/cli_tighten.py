"""The ``tighten`` command of ``napari-samboxes`` (arguments and messages;
:mod:`napari_samboxes.tighten` does the work)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .cli_datasets import add_model_arguments, fail
from .settings import DEFAULTS

__all__ = ["COMMANDS", "add_commands", "run_command"]

#: The sub-commands of this module.
COMMANDS = ("tighten",)


def add_commands(sub: Any) -> None:
    """Add ``tighten`` to the sub-parsers ``sub``."""
    add_model_arguments(
        sub.add_parser("tighten", help="snap a folder's boxes to SAM's candidates")
    )


def run_command(args: argparse.Namespace) -> int:
    from .cache import CandidateCache
    from .tighten import tighten_folder

    settings = DEFAULTS.with_(points_per_side=args.points_per_side)
    if not Path(args.folder).is_dir():
        return fail(f"error: {args.folder} is not a folder", 2)
    results = tighten_folder(
        args.folder,
        args.checkpoint,
        args.device,
        settings,
        CandidateCache(args.cache),
        progress=lambda n, r: print(f"{n}: {r.message}"),
    )
    print(
        f"{sum(r.moved for r in results.values())} box(es) moved in "
        f"{len(results)} annotated image(s)"
    )
    return 0
