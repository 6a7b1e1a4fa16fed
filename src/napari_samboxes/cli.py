"""The ``napari-samboxes`` command: view, propose, fetch-weights."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="napari-samboxes",
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
    pr.add_argument("--points-per-side", type=int, default=32)
    pr.add_argument("--pred-iou-thresh", type=float, default=0.88)
    pr.add_argument("--stability-score-thresh", type=float, default=0.95)
    pr.add_argument("--box-nms-thresh", type=float, default=0.7)
    pr.add_argument("--checkpoint", help="mobile_sam.pt (default: found automatically)")
    pr.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    pr.add_argument("--cache", help="cache folder (default: the user cache)")
    f = sub.add_parser("fetch-weights", help="download the official mobile_sam.pt")
    f.add_argument("--dest", help="folder or .pt path (default: the user cache)")
    return p


def _view(image: str | None) -> int:
    import napari

    from ._widget import SamBoxesWidget

    viewer = napari.Viewer()
    if image:
        viewer.open(image)
    else:
        from ._sample_data import sample_image

        viewer.add_image(sample_image(), name="photo", rgb=True)
    widget = SamBoxesWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SAM boxes", area="right")
    napari.run()
    return 0


def _read_image(path: Path):  # noqa: ANN202
    import numpy as np

    try:
        import imageio.v3 as iio

        return np.asarray(iio.imread(path))
    except ImportError:  # pragma: no cover
        from skimage import io

        return np.asarray(io.imread(path))


def _propose(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .cache import CandidateCache
    from .formats.boxtable import BoxTable, write_box_table
    from .image import to_rgb8
    from .model import CheckpointError, load_model
    from .pipeline import BatchDone, drain, raw_results
    from .settings import Settings, SettingsError

    try:
        settings = Settings(
            points_per_side=args.points_per_side,
            pred_iou_thresh=args.pred_iou_thresh,
            stability_score_thresh=args.stability_score_thresh,
            box_nms_thresh=args.box_nms_thresh,
        )
    except SettingsError as e:
        sys.stderr.write(f"napari-samboxes: {e}\n")
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        model = load_model(args.checkpoint, device=args.device)
    except (CheckpointError, ValueError) as e:
        sys.stderr.write(f"napari-samboxes: {e}\n")
        return 1
    cache = CandidateCache(args.cache)
    inputs = {Path(i).resolve() for i in args.images}
    failed = 0
    for name in tqdm(args.images, desc="images", unit="image"):
        path = Path(name)
        target = out / f"{path.stem}.csv"
        if target.resolve() in inputs:
            sys.stderr.write(
                f"napari-samboxes: {path}: output {target} would overwrite "
                "an input; skipped\n"
            )
            failed += 1
            continue
        try:
            rgb8 = to_rgb8(_read_image(path))
        except Exception as e:  # noqa: BLE001 - report per file, go on
            sys.stderr.write(f"napari-samboxes: {path}: cannot read image: {e}\n")
            failed += 1
            continue
        n = -(-(settings.points_per_side**2) // settings.batch_for(model.device))
        with tqdm(total=n, desc=path.name, unit="batch", leave=False) as bar:
            raw = drain(
                raw_results(rgb8, settings, model=model, cache=cache),
                lambda ev: bar.update(1) if isinstance(ev, BatchDone) else None,
            )
        c = raw.candidates(*settings.thresholds(), settings.crop_nms_thresh)
        write_box_table(
            target,
            BoxTable(
                labels=["candidate"] * len(c),
                boxes=c.boxes,
                scores=c.scores.astype(float),
                slices=c.boxes[:, :0],
            ),
        )
    if failed:
        sys.stderr.write(
            f"napari-samboxes: {failed} of {len(args.images)} images failed\n"
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``napari-samboxes`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "view":
        return _view(args.image)
    if args.command == "propose":
        return _propose(args)
    from .model import fetch_weights

    try:
        path = fetch_weights(args.dest)
    except Exception as e:  # noqa: BLE001 - network, hash, disk
        sys.stderr.write(f"napari-samboxes: download failed: {e}\n")
        return 1
    print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
