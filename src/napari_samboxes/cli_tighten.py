"""The ``tighten`` command of ``napari-samboxes`` (arguments and messages;
:mod:`napari_samboxes.tighten` does the work).

Exit codes: 2 for a bad argument (checked before the model loads), 1 when
the model cannot be loaded or any image failed (each failed image gets one
line on stderr, and the others are still tightened), 0 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

from .cli_datasets import add_model_arguments, check_model_options, fail
from .settings import DEFAULTS, Settings, SettingsError

__all__ = ["COMMANDS", "add_commands", "check_arguments", "run_command"]

#: The sub-commands of this module.
COMMANDS = ("tighten",)


def add_commands(sub: Any) -> None:
    """Add ``tighten`` to the sub-parsers ``sub``."""
    add_model_arguments(
        sub.add_parser("tighten", help="snap a folder's boxes to SAM's candidates")
    )


def check_arguments(args: argparse.Namespace) -> Settings | str:
    """The run settings of ``tighten``'s arguments, or one line saying which
    argument is wrong (nothing is loaded)."""
    try:
        settings = DEFAULTS.with_(points_per_side=args.points_per_side)
    except SettingsError as e:
        return f"error: --points-per-side: {e}"
    if not Path(args.folder).is_dir():
        return f"error: {args.folder} is not a folder"
    problem = check_model_options(args)  # checkpoint, cache, device, as masks
    return settings if problem is None else f"error: {problem}"


def run_command(args: argparse.Namespace) -> int:
    """Run ``tighten``; returns the exit code."""
    from tqdm import tqdm

    from .cache import CandidateCache
    from .model import CheckpointError, DeviceError
    from .tighten import tighten_folder

    checked = check_arguments(args)
    if isinstance(checked, str):
        return fail(checked, 2)
    bar: dict[str, Any] = {}

    def prompted(done: int, total: int) -> None:
        if "bar" not in bar:  # only shown on a terminal
            bar["bar"] = tqdm(
                total=total, desc="box prompts", leave=False, disable=None
            )
        bar["bar"].update(done - bar["bar"].n)
        if done >= total:
            bar.pop("bar").close()

    def said(name: str, result: Any) -> None:
        print(f"{name}: {result.message}")

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            report = tighten_folder(
                args.folder,
                args.checkpoint,
                args.device,
                checked,
                CandidateCache(args.cache),
                progress=said,
                on_error=lambda name, why: fail(f"{name}: {why}"),
                on_prompted=prompted,
            )
    except (CheckpointError, DeviceError) as e:
        return fail(f"error: {e}")
    except OSError as e:  # the folder itself (listing it, its annotations)
        return fail(f"error: {args.folder}: {e.strerror or e}")
    finally:
        if "bar" in bar:
            bar.pop("bar").close()
    for w in caught:  # "not the official checkpoint": one line, not two
        fail(f"warning: {w.message}", 0)
    for line in report.problems:
        fail(f"warning: {line}", 0)
    print(report)
    sys.stdout.flush()
    if report.failed:
        return fail(f"{len(report.failed)} image(s) failed")
    return 0
