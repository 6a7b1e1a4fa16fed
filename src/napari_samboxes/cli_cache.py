"""The ``cache info|clear`` command of ``napari-samboxes`` (arguments and
messages; :mod:`napari_samboxes.cache` does the work)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from .cli_datasets import fail

__all__ = ["COMMANDS", "add_commands", "parse_age", "run_command"]

#: The sub-commands of this module.
COMMANDS = ("cache",)

_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: How each kind of file is named in ``cache info``.
_LABELS = {
    "candidates": "candidates",
    "partial": "partial runs",
    "embeddings": "embeddings",
    "old layout": "old layout (unused)",
    "unfinished": "unfinished writes",
}


def parse_age(text: str) -> float:
    """Seconds in an age such as ``30d``, ``12h``, ``90m``, ``45s``, ``2w``.

    Raises
    ------
    ValueError
        For anything else (a unit is required).
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([smhdw])\s*", text.lower())
    if m is None:
        raise ValueError(
            f"--older-than {text!r} is not an age: write e.g. 30d, 12h, 90m or 2w"
        )
    return float(m.group(1)) * _AGE_UNITS[m.group(2)]


def add_commands(sub: Any) -> None:
    """Add ``cache info`` and ``cache clear`` to the sub-parsers ``sub``."""
    c = sub.add_parser(
        "cache", help="see or clear the cache of candidates and embeddings"
    )
    actions = c.add_subparsers(dest="cache_command", required=True)
    info = actions.add_parser(
        "info", help="the cache's folder, its entries by kind, bytes and limit"
    )
    clear = actions.add_parser(
        "clear", help="remove the cache's entries (all, or those unused for AGE)"
    )
    for p in (info, clear):
        p.add_argument("--cache", help="cache folder (default: the user cache)")
    what = clear.add_mutually_exclusive_group(required=True)
    what.add_argument("--all", action="store_true", help="remove every entry")
    what.add_argument(
        "--older-than",
        metavar="AGE",
        help="remove the entries not used for AGE (30d, 12h, 90m, 2w)",
    )


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _info(cache: Any) -> int:
    from .cache import KINDS, LIMIT_ENV, format_size

    files = cache.files()
    print(f"cache folder: {cache.root}")
    if not cache.root.is_dir():
        print("(no such folder yet: nothing cached)")
    for kind in KINDS:
        of_kind = [f for f in files if f.kind == kind]
        if of_kind or kind in ("candidates", "partial", "embeddings"):
            n = _count(len(of_kind), "entry", "entries")
            print(f"{_LABELS[kind]}: {n}, {format_size(sum(f.size for f in of_kind))}")
    total = format_size(sum(f.size for f in files))
    limit = "no limit" if cache.limit is None else f"limit {format_size(cache.limit)}"
    print(f"total: {total} of {limit} (${LIMIT_ENV}, e.g. 2GB, changes it)")
    print(f"embeddings stored as {cache.embeddings}")
    return 0


def run_command(args: argparse.Namespace) -> int:
    """Run ``cache info`` or ``cache clear``; returns the exit code."""
    from .cache import (
        CandidateCache,
        embeddings_from_env,
        format_size,
        limit_from_env,
    )

    folder = args.cache
    if folder is not None and (
        not folder.strip() or (Path(folder).exists() and not Path(folder).is_dir())
    ):
        return fail(f"error: --cache {args.cache!r} is not a folder", 2)
    older = None
    if args.cache_command == "clear" and args.older_than is not None:
        try:
            older = parse_age(args.older_than)
        except ValueError as e:
            return fail(f"error: {e}", 2)
    try:  # the settings of the environment, as any command reads them
        limit_from_env()
        embeddings_from_env()
    except ValueError as e:
        return fail(f"error: {e}", 2)
    cache = CandidateCache(args.cache)
    if args.cache_command == "info":
        return _info(cache)
    n, size = cache.clear(older)
    age = "" if older is None else f" not used for {args.older_than.strip()}"
    files = _count(n, "file", "files")
    print(f"removed {files}{age} ({format_size(size)}) from {cache.root}")
    return 0
