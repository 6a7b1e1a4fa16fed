"""The ``napari-samboxes`` command: view, propose, fetch-weights.

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
from pathlib import Path
from typing import Any, NoReturn

from .settings import DEFAULTS, Settings, SettingsError

__all__ = ["main"]

PROG = "napari-samboxes"


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
    v.add_argument("image", nargs="?", help="image file (default: the sample photo)")
    pr = sub.add_parser(
        "propose",
        help="compute candidate boxes for images, written as box tables (and cached)",
    )
    pr.add_argument("images", nargs="+", help="image files")
    pr.add_argument(
        "--out", required=True, help="folder for <image stem>.csv box tables"
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
    f = sub.add_parser("fetch-weights", help="download the official mobile_sam.pt")
    f.add_argument("--dest", help="folder or .pt path (default: the user cache)")
    return p


def _fail(message: object, code: int = 1) -> int:
    """Write one line (line breaks folded) to stderr; return ``code``."""
    text = " ".join(str(message).split())
    sys.stderr.write(f"{PROG}: {text}\n")
    return code


def _view(image: str | None) -> int:
    if image:  # checked before napari starts (seconds, and a window)
        p = Path(image)
        if not p.exists():
            return _fail(f"{image}: no such file or folder")
        if not (p.is_file() or p.is_dir()):
            return _fail(f"{image}: not a regular file (a FIFO, device or socket)")
    import napari

    from ._widget import SamBoxesWidget

    viewer = napari.Viewer()
    if image:
        try:
            viewer.open(image)
        except Exception as e:  # noqa: BLE001 - no reader, damaged file
            viewer.close()
            return _fail(f"{image}: cannot open it: {e}")
    else:
        from ._sample_data import sample_image

        viewer.add_image(sample_image(), name="photo", rgb=True)
    widget = SamBoxesWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SAM boxes", area="right")
    napari.run()
    return 0


def _propose_one(
    path: Path, target: Path, model: Any, settings: Settings, cache: Any
) -> int:
    """Candidates of one image, written to ``target``; returns their count."""
    from tqdm import tqdm

    from .formats.boxtable import BoxTable, write_box_table
    from .image import to_rgb8
    from .imread import read_image
    from .pipeline import BatchDone, drain, raw_results

    rgb8 = to_rgb8(read_image(path))
    n = -(-(settings.points_per_side**2) // settings.batch_for(model.device))
    with tqdm(total=n, desc=path.name, unit="batch", leave=False) as bar:
        raw = drain(
            raw_results(rgb8, settings, model=model, cache=cache),
            lambda ev: bar.update(1) if isinstance(ev, BatchDone) else None,
        )
    c = raw.candidates(settings)
    write_box_table(
        target,
        BoxTable(
            labels=["candidate"] * len(c),
            boxes=c.boxes,
            scores=c.scores.astype(float),
            slices=c.boxes[:, :0],
            sources=["candidate"] * len(c),
        ),
    )
    return len(c)


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


def _propose(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .cache import CandidateCache
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
    cache = CandidateCache(args.cache)
    inputs = {Path(i).resolve() for i in args.images}
    failed = 0
    for name in tqdm(args.images, desc="images", unit="image"):
        path = Path(name)
        target = out / f"{path.stem}.csv"
        if target.resolve() in inputs:
            _fail(f"{path}: output {target} would overwrite an input; skipped")
            failed += 1
            continue
        try:
            _propose_one(path, target, model, settings, cache)
        except Exception as e:  # noqa: BLE001 - report per image, go on
            _fail(_image_failure(path, target, e))
            failed += 1
    if failed:
        return _fail(f"{failed} of {len(args.images)} images failed")
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
            return _view(args.image)
        if args.command == "propose":
            return _propose(args)
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
