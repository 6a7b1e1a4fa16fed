"""Folder mode on folders of 2,000, 20,000 and 100,000 small images, in a
real, shown viewer (issue 18): the time to the first image and the longest
event-loop stall on opening the folder, on moving to a cached image and on
a pick's autosave.

    xvfb-run -a python benchmarks/bench_folder_scale.py [--sizes 2000,20000,100000]

Each folder holds N images of 64 x 48 px (hard links of a few files, so a
100,000-image folder takes seconds to make and almost no disk) and a box
table for every 10th image (N/10 tables, so the progress has something to
count). The first images' candidates are computed into the cache first (as
the look-ahead does), so every move is served from the cache. Each folder is
opened twice: the first open builds the progress index (in a worker), the
second reads it.

A 5 ms QTimer records the gap between its ticks: a gap over the period is
time the UI thread could not process events. Target: every stall at most
0.3 s, the first image within 2 s, at 100,000 images.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_ui_stall import Stalls, wait  # noqa: E402

#: Images per seed file (a file system limits the links of one file).
_PER_SEED = 20_000


def make_folder(folder: Path, n: int) -> None:
    """``n`` images (links of a few seeds) and a table for every 10th."""
    from PIL import Image

    from napari_samboxes.boxes import Boxes
    from napari_samboxes.formats.boxtable import write_box_table

    folder.mkdir(parents=True)
    seeds = folder.parent / f"seeds-{n}"
    seeds.mkdir()
    rng = np.random.default_rng(0)
    ann = folder / "annotations"
    ann.mkdir()
    table = Boxes(np.array([[5.0, 5, 30, 30]]), ("cat",), np.array([np.nan]), ("hand",))
    for i in range(n):
        seed = seeds / f"{i // _PER_SEED}.png"
        if not seed.exists():
            pix = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
            Image.fromarray(pix).save(seed)
        os.link(seed, folder / f"img{i:06d}.png")
        if i % 10 == 5:
            write_box_table(ann / f"img{i:06d}.csv", table.to_table())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="2000,20000,100000")
    ap.add_argument("--points-per-side", type=int, default=4)
    ap.add_argument("--moves", type=int, default=3)
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_samboxes._napari.widget import SamBoxesWidget
    from napari_samboxes.cache import CandidateCache
    from napari_samboxes.pipeline import RunRequest, drain, precompute
    from napari_samboxes.settings import Settings
    from napari_samboxes.testing import write_structured_checkpoint

    tmp = Path(tempfile.mkdtemp())
    os.environ["NAPARI_SAMBOXES_CONFIG"] = str(tmp / "config")
    ckpt = write_structured_checkpoint(tmp / "structured.pt")
    cache = CandidateCache(tmp / "cache")
    request = RunRequest(
        None, ckpt, "cpu", Settings(points_per_side=args.points_per_side)
    )
    folders = {}
    for n in sizes:
        t = time.perf_counter()
        folders[n] = tmp / f"f{n}"
        make_folder(folders[n], n)
        first = [folders[n] / f"img{i:06d}.png" for i in range(args.moves + 2)]
        drain(precompute(first, request, cache))
        print(f"made {n} images ({n // 10} tables) in {time.perf_counter() - t:.1f} s")

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    widget = SamBoxesWidget(viewer, cache=cache)
    viewer.window.add_dock_widget(widget)
    widget.checkpoint.value = str(ckpt)
    widget.points_per_side.value = args.points_per_side
    stalls = Stalls()

    before: list[object] = [None]  # the panel's folder mode before an open

    def shown(index: int) -> bool:
        fm = widget.folder_mode
        return (
            fm is not None
            and fm is not before[0]
            and fm.session.dataset.folder == folder
            and fm.index == index == fm.target
            and widget.current_run is None
            and len(widget.session.candidates) > 0
        )

    def settle() -> None:
        for _ in range(20):
            app.processEvents()
            time.sleep(0.005)

    # a warm-up folder first: napari's first image layer, shaders and text
    # are set up once per process, not per folder size
    warm = tmp / "warm"
    make_folder(warm, 3)
    drain(precompute(list(warm.glob("*.png")), request, cache))
    folders = {0: warm, **folders}
    rows = []
    for n in [0, *sizes]:
        folder = folders[n]
        for which in ("first open", "second open"):
            before[0] = widget.folder_mode
            stalls.start()
            t = time.perf_counter()
            widget.open_folder(path=str(folder))
            wait(app, lambda: shown(0))
            first = time.perf_counter() - t
            wait(app, lambda: widget.folder_mode.session.counted)
            counted = time.perf_counter() - t
            settle()
            open_stall = stalls.stop()
            rows.append((n, which, first, counted, open_stall))
        fm = widget.folder_mode
        images = n or 3  # 0: the warm-up folder, 3 images and no table
        assert fm.session.progress() == (n // 10, images), fm.session.progress()
        move = []
        for k in range(1, min(args.moves, images - 1) + 1):
            stalls.start()
            widget.mode.do("next_image")
            before[0] = None
            wait(app, lambda k=k: shown(k))
            settle()
            move.append(stalls.stop())
        # a pick: two points in the picks layer, then the autosave
        s = widget.session
        c = s.candidates
        x0, y0, x1, y1 = c.boxes[int(np.argmax(c.areas))]
        picks = widget.annotator.view.ensure("picks")
        table = fm.session.dataset.annotation_path(fm.index)
        stalls.start()
        picks.add([(y0 + y1) / 2, (x0 + x1) / 2])
        app.processEvents()
        picks.add([y0 + 1, x0 + 1])
        saved = fm.session

        def written(table: Path = table, saved: object = saved) -> bool:
            return table.is_file() and not saved.pending  # type: ignore[attr-defined]

        wait(app, written, timeout=30)
        settle()
        pick = stalls.stop()
        assert fm.session.progress()[0] == n // 10 + 1
        rows[-1] = (*rows[-1], max(move), pick)
        if n == 0:
            rows = []
            continue
        print(
            f"{n:>7} images: first image after {rows[-2][2]:.2f} s / "
            f"{rows[-1][2]:.2f} s (first / second open; counted after "
            f"{rows[-2][3]:.2f} s / {rows[-1][3]:.2f} s); longest stall: open "
            f"{rows[-2][4] * 1e3:.0f} / {rows[-1][4] * 1e3:.0f} ms, move to a "
            f"cached image {max(move) * 1e3:.0f} ms, pick + autosave "
            f"{pick * 1e3:.0f} ms",
            flush=True,
        )
    print()
    print(
        "| images | first image (1st / 2nd open) | stall on open | move | pick + autosave |"
    )
    print("|---|---|---|---|---|")
    for i in range(0, len(rows), 2):
        a, b = rows[i], rows[i + 1]
        print(
            f"| {a[0]:,} | {a[2]:.2f} s / {b[2]:.2f} s | "
            f"{a[4] * 1e3:.0f} / {b[4] * 1e3:.0f} ms | {b[5] * 1e3:.0f} ms | "
            f"{b[6] * 1e3:.0f} ms |"
        )
    widget.shutdown()
    viewer.close()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
