"""Does the look-ahead keep pace? An annotator pages through a folder of 10
photos (1024 x 768, never seen: a fresh cache) at one image every N seconds,
in a real, shown viewer with the real panel, and this prints how long each
image made them wait for its candidates.

The annotator arrives on an image, waits until its candidates are all there
(the *waiting time*, 0 when the look-ahead had it ready), then dwells N
seconds from arrival (or goes on at once if the wait was longer) and presses
Next. The first image cannot have been looked ahead and is shown apart.

    xvfb-run -a python benchmarks/bench_lookahead.py --grid 16 --dwell 2 4 6
    xvfb-run -a python benchmarks/bench_lookahead.py --grid 32 --dwell 10 15 20

Weights: the structured test checkpoint in the real vit_t architecture (the
same work per prompt as MobileSAM's own).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np

#: Waits shorter than this count as none (a cached image being drawn).
READY_S = 0.3


def photos(n: int = 10) -> list[np.ndarray]:
    """``n`` different 1024 x 768 photos from scikit-image's samples."""
    from skimage import data, transform

    base = [data.coffee(), data.astronaut(), data.chelsea(), data.rocket()]
    out = []
    for k in range(n):
        img = base[k % len(base)][..., :3]
        h, w = img.shape[:2]
        variant = k // len(base)  # the whole photo, mirrored, its centre
        if variant == 1:
            img = img[:, ::-1]
        elif variant == 2:
            img = img[h // 6 : h - h // 6, w // 6 : w - w // 6]
        img = transform.resize(img, (768, 1024), order=1)
        out.append((img * 255).round().astype(np.uint8))
    return out


def pace(app, viewer, ckpt, folder: Path, cache_dir: Path, grid: int, dwell: float):
    """Page through ``folder`` once; the waiting time of each image."""
    from napari_samboxes._napari.widget import SamBoxesWidget
    from napari_samboxes.cache import CandidateCache

    widget = SamBoxesWidget(viewer, cache=CandidateCache(cache_dir))
    viewer.window.add_dock_widget(widget)
    widget.checkpoint.value = str(ckpt)
    widget.points_per_side.value = grid
    widget.folder.value = str(folder)
    fm = widget.folder_mode
    n = len(fm.session.images)
    waits = []
    for i in range(n):
        arrived = time.perf_counter()

        def ready(i: int = i) -> bool:
            a, s = widget.annotator, widget.session
            return (
                fm.index == i
                and a.run is None
                and s.committed is not None
                and s.image_key == fm.session.key(i)
            )

        while not ready():
            app.processEvents()
            time.sleep(0.002)
        waits.append(time.perf_counter() - arrived)
        while time.perf_counter() - arrived < dwell:
            app.processEvents()
            time.sleep(0.005)
        if i + 1 < n:
            widget.next_image.native.click()
            while fm.target != i + 1:
                app.processEvents()
    widget.close()
    with contextlib.suppress(LookupError):  # closing took it out already
        viewer.window.remove_dock_widget(widget)
    viewer.layers.clear()
    return waits


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", type=int, default=16)
    ap.add_argument("--dwell", type=float, nargs="+", default=[2.0, 4.0, 6.0])
    args = ap.parse_args()

    import napari
    from PIL import Image
    from qtpy.QtWidgets import QApplication

    from napari_samboxes.testing import write_structured_checkpoint

    tmp = Path(tempfile.mkdtemp())
    # the panel's remembered run settings: none of the user's, none kept
    os.environ["NAPARI_SAMBOXES_CONFIG"] = str(tmp / "config")
    ckpt = write_structured_checkpoint(tmp / "structured.pt")
    folder = tmp / "photos"
    folder.mkdir()
    for k, img in enumerate(photos()):
        Image.fromarray(img).save(folder / f"photo{k:02d}.png")
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    rows = []
    for k, dwell in enumerate(args.dwell):
        waits = pace(app, viewer, ckpt, folder, tmp / f"cache{k}", args.grid, dwell)
        later = waits[1:]
        print(
            f"grid {args.grid}, dwell {dwell:g} s: first image {waits[0]:.1f} s; "
            "then " + " ".join(f"{w:.1f}" for w in later) + " s",
            flush=True,
        )
        rows.append((dwell, waits[0], later))
    print(f"\ngrid {args.grid}, 10 photos 1024x768, this CPU")
    print("| dwell per image | first image | wait on images 2-10: mean / max | "
          "images with no wait |")
    print("|---|---|---|---|")
    for dwell, first, later in rows:
        none = sum(w < READY_S for w in later)
        print(f"| {dwell:g} s | {first:.1f} s | {np.mean(later):.1f} / "
              f"{max(later):.1f} s | {none} of {len(later)} |")
    viewer.close()


if __name__ == "__main__":
    main()
