"""The ``napari-samboxes`` command: view, propose, export, import, masks, ...

Every failure is one line on stderr and a non-zero exit, never a traceback:
exit code 2 for bad arguments (checked before the model is loaded), 1 for
what went wrong while running (a bad checkpoint, images that failed), 130
for Ctrl-C. In ``propose`` a failure on one image is reported and the
others are processed. ``NAPARI_SAMBOXES_DEBUG=1`` shows the traceback of an
unexpected error.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import cli_cache, cli_measure, cli_stats, cli_tighten
from .cli_datasets import (
    DATASET_COMMANDS,
    add_dataset_commands,
    run_dataset_command,
)
from .settings import DEFAULTS, Settings, SettingsError

__all__ = ["main"]

PROG = "napari-samboxes"

#: Modules adding sub-commands: each has ``COMMANDS`` (their names),
#: ``add_commands(sub)`` and ``run_command(args) -> exit code``.
_MORE = (cli_tighten, cli_cache, cli_measure, cli_stats)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="MobileSAM 'segment everything' as a bounding-box tool for napari.",
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    v = sub.add_parser("view", help="open napari with the SAM boxes widget")
    v.add_argument(
        "image",
        nargs="?",
        help="image, box table (.csv) or folder of images (default: the sample photo)",
    )
    v.add_argument(
        "--points-per-side", type=int, help="grid of prompts (remembered per folder)"
    )
    v.add_argument("--crop-n-layers", type=int, help="crop layers (0 to 4)")
    v.add_argument("--pred-iou-thresh", type=float)
    v.add_argument("--stability-score-thresh", type=float)
    v.add_argument("--box-nms-thresh", type=float)
    v.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"])
    v.add_argument("--checkpoint", help="mobile_sam.pt (default: found automatically)")
    pr = sub.add_parser(
        "propose",
        help="compute candidate boxes for images, written as box tables (and cached)",
    )
    pr.add_argument("images", nargs="+", help="image files or folders of images")
    pr.add_argument(
        "--out", required=True, help="folder for <image key>.csv box tables"
    )
    pr.add_argument("--points-per-side", type=int, default=DEFAULTS.points_per_side)
    pr.add_argument("--pred-iou-thresh", type=float, default=DEFAULTS.pred_iou_thresh)
    pr.add_argument(
        "--stability-score-thresh",
        type=float,
        default=DEFAULTS.stability_score_thresh,
    )
    pr.add_argument("--box-nms-thresh", type=float, default=DEFAULTS.box_nms_thresh)
    pr.add_argument("--checkpoint", help="mobile_sam.pt (default: found automatically)")
    pr.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    pr.add_argument("--cache", help="cache folder (default: the user cache)")
    where = pr.add_mutually_exclusive_group()
    where.add_argument(
        "--workers", type=int, help="run on a local Dask cluster of N processes"
    )
    where.add_argument("--scheduler", help="run on the Dask cluster at ADDRESS")
    add_dataset_commands(sub)
    for more in _MORE:
        more.add_commands(sub)
    f = sub.add_parser("fetch-weights", help="download the official mobile_sam.pt")
    f.add_argument("--dest", help="folder or .pt path (default: the user cache)")
    return p


def _fail(message: object, code: int = 1) -> int:
    """Write one line (line breaks folded) to stderr; return ``code``."""
    text = " ".join(str(message).split())
    sys.stderr.write(f"{PROG}: {text}\n")
    return code


def _check_target(target: str | None) -> str | None:
    """What is wrong with ``view``'s argument, before napari starts."""
    if not target:
        return None
    p = Path(target)
    if not p.exists():
        return f"{target}: no such file or folder"
    if not (p.is_file() or p.is_dir()):
        return f"{target}: not a regular file (a FIFO, device or socket)"
    if p.is_dir():
        from .dataset import IMAGE_SUFFIXES, list_images

        if not list_images(p):
            kinds = ", ".join(sorted(s[1:] for s in IMAGE_SUFFIXES))
            return f"{target}: no images in this folder ({kinds})"
    return None


def _view_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The run settings given to ``view``; raises SettingsError."""
    from .remember import FIELDS

    given = {k: getattr(args, k) for k in FIELDS if getattr(args, k, None) is not None}
    DEFAULTS.with_(**{k: v for k, v in given.items() if k != "device"})
    return given


def _view(args: argparse.Namespace) -> int:
    target = args.image
    problem = _check_target(target)  # before napari starts (seconds, a window)
    if problem:
        return _fail(problem)
    try:
        settings = _view_settings(args)
    except SettingsError as e:
        return _fail(e, 2)
    if args.checkpoint and not Path(args.checkpoint).is_file():
        return _fail(f"{args.checkpoint}: no such checkpoint file", 2)
    import napari

    from ._napari.view import open_view

    viewer = napari.Viewer()
    try:
        open_view(target, viewer, settings=settings, checkpoint=args.checkpoint)
    except Exception as e:  # noqa: BLE001 - no reader, damaged file
        viewer.close()
        return _fail(f"{target}: cannot open it: {e}")
    napari.run()
    return 0


def _image_failure(path: Path, target: Path, e: Exception) -> str:
    """One line saying what went wrong with one image."""
    from .image import ImageError
    from .imread import ImageReadError

    if isinstance(e, ImageReadError | ImageError):
        text = str(e)
        return f"{path}: cannot read image: {text.removeprefix(f'{path}: ')}"
    if isinstance(e, OSError):
        return f"{path}: cannot write {target}: {e.strerror or e}"
    if isinstance(e, MemoryError):
        return f"{path}: out of memory ({e}); try fewer --points-per-side"
    return f"{path}: failed: {type(e).__name__}: {e}"


def _run_here(
    jobs: Sequence[tuple[Path, Path]], model: Any, settings: Settings, cache: Any
) -> Iterator[tuple[Path, Path, int | Exception]]:
    """The jobs in this process, one after the other; failures are yielded."""
    from .batch import propose_one

    for path, target in jobs:
        try:
            yield path, target, propose_one(path, target, model, settings, cache)
        except Exception as e:  # noqa: BLE001 - report per image, go on
            yield path, target, e


def _propose(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .cache import CandidateCache
    from .distributed import DistributedError, plan_jobs, run_on_cluster
    from .model import CheckpointError, DeviceError, load_model

    try:  # arguments first: nothing is loaded for a bad one
        settings = DEFAULTS.with_(
            points_per_side=args.points_per_side,
            pred_iou_thresh=args.pred_iou_thresh,
            stability_score_thresh=args.stability_score_thresh,
            box_nms_thresh=args.box_nms_thresh,
        )
    except SettingsError as e:
        return _fail(f"error: {e}", 2)
    if args.workers is not None and args.workers < 1:
        return _fail("error: --workers must be at least 1", 2)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return _fail(f"error: --out {out} is a file; give a folder", 2)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return _fail(f"--out {out}: cannot create the folder ({e.strerror or e})")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            model = load_model(args.checkpoint, device=args.device)
    except DeviceError as e:
        return _fail(f"error: {e}", 2)
    except CheckpointError as e:
        return _fail(e)
    for w in caught:  # "not the official checkpoint": one line, not two
        _fail(f"warning: {w.message}", 0)
    jobs, skipped = plan_jobs(args.images, out)
    for line in skipped:
        _fail(line)
    failed = len(skipped)
    if args.workers is not None or args.scheduler:
        results: Iterator[tuple[Path, Path, int | Exception]] = run_on_cluster(
            jobs,
            model.checkpoint,
            args.device,
            settings,
            args.cache,
            workers=args.workers,
            scheduler=args.scheduler,
        )
    else:
        results = _run_here(jobs, model, settings, CandidateCache(args.cache))
    try:
        for path, target, result in tqdm(
            results, total=len(jobs), desc="images", unit="image"
        ):
            if isinstance(result, Exception):
                _fail(_image_failure(path, target, result))
                failed += 1
    except DistributedError as e:
        return _fail(e)
    if failed:
        return _fail(f"{failed} of {len(jobs) + len(skipped)} images failed")
    return 0


def _fetch(dest: str | None) -> int:
    from .model import fetch_weights

    try:
        path = fetch_weights(dest)
    except Exception as e:  # noqa: BLE001 - network, hash, disk
        return _fail(f"download failed: {e}")
    print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``napari-samboxes`` console script."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "view":
            return _view(args)
        if args.command == "propose":
            return _propose(args)
        if args.command in DATASET_COMMANDS:
            return run_dataset_command(args)
        for more in _MORE:
            if args.command in more.COMMANDS:
                return int(more.run_command(args))
        return _fetch(args.dest)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as e:  # noqa: BLE001 - one line, never a traceback
        if os.environ.get("NAPARI_SAMBOXES_DEBUG"):
            raise
        return _fail(
            f"unexpected error: {type(e).__name__}: {e} "
            "(NAPARI_SAMBOXES_DEBUG=1 shows the traceback)"
        )


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
