"""The dataset commands of ``napari-samboxes``: export, import, masks.

Argument parsing and messages only (:mod:`napari_samboxes.export`,
:mod:`napari_samboxes.importing`, :mod:`napari_samboxes.masks` do the
work). Every failure is one line on stderr: exit code 2 for bad
arguments, 1 for malformed input (nothing written) and for images that
could not be exported (the others were).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

from .convert import FORMATS, LAYOUTS
from .settings import DEFAULTS, SettingsError

__all__ = [
    "DATASET_COMMANDS",
    "add_dataset_commands",
    "add_model_arguments",
    "add_no_recursive",
    "check_model_options",
    "fail",
    "run_dataset_command",
]

#: The sub-commands of this module.
DATASET_COMMANDS = ("export", "import", "masks")


def fail(message: object, code: int = 1) -> int:
    """Write one line (line breaks folded) to stderr; return ``code``."""
    text = " ".join(str(message).split())
    sys.stderr.write(f"napari-samboxes: {text}\n")
    return code


def add_dataset_commands(sub: Any) -> None:
    """Add ``export``, ``import`` and ``masks`` to the sub-parsers ``sub``."""
    ex = sub.add_parser(
        "export", help="write a folder's boxes as YOLO, YOLO-seg, VOC or COCO"
    )
    ex.add_argument("folder", help="image folder (with annotations/)")
    ex.add_argument("--format", required=True, choices=FORMATS)
    ex.add_argument("--out", required=True, help="output folder")
    ex.add_argument(
        "--split", help="train,val[,test] fractions, e.g. 0.8,0.2 (default: all train)"
    )
    ex.add_argument("--seed", type=int, default=0, help="the split's seed")
    ex.add_argument(
        "--layout",
        choices=sorted({x for v in LAYOUTS.values() for x in v} - {"ultralytics"}),
        help="VOC: flat (LabelImg, default) or devkit; COCO: flat or subsets",
    )
    ex.add_argument(
        "--copy-images", action="store_true", help="copy images (default: link)"
    )
    add_no_recursive(ex)
    im = sub.add_parser("import", help="turn YOLO/VOC/COCO files into box tables")
    im.add_argument("src", help="label folder or file (COCO .json, VOC .xml)")
    im.add_argument("--format", required=True, choices=FORMATS)
    im.add_argument("folder", help="image folder (box tables go to annotations/)")
    im.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing box tables (and write through links inside DIR)",
    )
    add_no_recursive(im)
    add_model_arguments(
        sub.add_parser("masks", help="compute and store the SAM masks of boxes")
    )


def run_dataset_command(args: argparse.Namespace) -> int:
    """Run ``export``, ``import`` or ``masks``; returns the exit code."""
    if args.command == "masks":
        return _masks(args)
    return _convert(args)


def _convert(args: argparse.Namespace) -> int:
    """``export`` and ``import``: print the summary and its messages; exit
    1 when an image could not be exported."""
    from .convert import check_layout
    from .export import export_dataset
    from .formats.boxtable import BoxTableError
    from .formats.errors import FormatError
    from .importing import import_dataset
    from .splits import parse_split

    problem = _folder_problem(args.folder, "the image folder")
    if args.command == "export":
        try:  # arguments first: one line, exit 2
            check_layout(args.format, args.layout, parse_split(args.split) is not None)
        except ValueError as e:
            problem = problem or str(e)
        out = Path(args.out)
        if not args.out.strip():
            problem = problem or "--out is empty: give a folder"
        elif out.exists() and not out.is_dir():
            problem = problem or f"--out {out} is a file; give a folder"
    elif not args.src.strip() or not Path(args.src).exists():
        problem = f"{args.src or repr(args.src)}: no such file or folder"
    if problem:
        return fail(f"error: {problem}", 2)
    try:
        if args.command == "export":
            summary = export_dataset(
                args.folder,
                args.format,
                args.out,
                split=args.split,
                seed=args.seed,
                layout=args.layout,
                copy_images=args.copy_images,
                recursive=args.recursive,
            )
        else:
            summary = import_dataset(
                args.src,
                args.format,
                args.folder,
                overwrite=args.overwrite,
                recursive=args.recursive,
            )
    except (FormatError, BoxTableError, ValueError, OSError) as e:
        return fail(e)
    print(summary)
    for m in summary.messages:
        print(m)
    return 1 if summary.failed else 0


def _masks(args: argparse.Namespace) -> int:
    """``masks``: fill the missing masks of a folder's boxes."""
    from .cache import CandidateCache
    from .formats.boxtable import BoxTableError
    from .formats.errors import FormatError
    from .masks import fill_folder
    from .model import CheckpointError, DeviceError, load_model

    try:
        settings = DEFAULTS.with_(points_per_side=args.points_per_side)
    except SettingsError as e:
        return fail(f"error: {e}", 2)
    problem = _folder_problem(args.folder, "the folder") or check_model_options(args)
    if problem:
        return fail(f"error: {problem}", 2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model = load_model(args.checkpoint, device=args.device)
        report = fill_folder(
            args.folder,
            model,
            cache=CandidateCache(args.cache),
            settings=settings,
            progress=print,
        )
    except (CheckpointError, DeviceError, FormatError, BoxTableError, OSError) as e:
        return fail(e)
    print(report)
    for m in report.messages:
        print(m)
    return 1 if report.messages else 0


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """A folder and the model's options (``masks``, ``tighten``)."""
    parser.add_argument("folder", help="image folder (with annotations/)")
    parser.add_argument("--points-per-side", type=int, default=DEFAULTS.points_per_side)
    parser.add_argument(
        "--checkpoint", help="mobile_sam.pt (default: found automatically)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--cache", help="cache folder (default: the user cache)")


def add_no_recursive(parser: argparse.ArgumentParser) -> None:
    """``--no-recursive``: a folder's own images only, not its subfolders'."""
    parser.add_argument(
        "--no-recursive",
        dest="recursive",
        action="store_false",
        help="a folder's own images only (default: its subfolders' too, "
        "named by their path, e.g. train/a.png)",
    )


def _folder_problem(folder: str, what: str) -> str | None:
    """What is wrong with a folder argument (one sentence), or None."""
    if not folder.strip():
        return f"{what} is empty: give a path"
    p = Path(folder)
    if not p.exists():
        return f"{folder}: no such folder"
    if not p.is_dir():
        return f"{folder} is not a folder"
    return None


def check_model_options(
    args: argparse.Namespace, *, device_here: bool = True
) -> str | None:
    """What is wrong with ``--checkpoint``, ``--cache`` and ``--device``
    (one sentence), before the model loads; None when nothing is.

    ``device_here``: the device must exist on this machine (False for
    ``propose`` on a cluster, whose workers have their own: only the name
    is checked).
    """
    from .cache import embeddings_from_env, limit_from_env
    from .model import DeviceError, pick_device

    try:  # the cache's settings in the environment, before anything loads
        limit_from_env()
        embeddings_from_env()
    except ValueError as e:
        return str(e)
    ckpt = getattr(args, "checkpoint", None)
    if ckpt is not None and not Path(ckpt).is_file():
        what = "a folder" if Path(ckpt).is_dir() else "no such file"
        return f"--checkpoint {ckpt}: {what}"
    cache = getattr(args, "cache", None)
    if cache is not None:
        if not cache.strip():
            return "--cache is empty: give a folder"
        if Path(cache).exists() and not Path(cache).is_dir():
            return f"--cache {cache} is a file; give a folder"
    device = getattr(args, "device", "auto") or ""
    if not device_here:
        named = device in ("auto", "cpu", "cuda", "mps") or (
            device.startswith("cuda:") and device[5:].isdigit()
        )
        return (
            None
            if named
            else f"--device {device!r}: use auto, cpu, cuda, cuda:N or mps"
        )
    try:
        pick_device(device)
    except DeviceError as e:
        return f"--device: {e}"
    return None
