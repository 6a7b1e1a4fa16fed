"""Pick latency with 5,000 candidates, and reading a 100,000-row box table.

    python benchmarks/bench_pick.py                 # core figures
    xvfb-run -a python benchmarks/bench_pick.py --gui   # also in a real viewer

Prints the median time of ``select_box`` over 1,000 picks, the time to read
and write 100,000 box-table rows, and with ``--gui`` the time to show 5,000
candidates (one ``add_rectangles`` call) and the end-to-end time of a pick in
the widget (second click -> box in the boxes layer).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_samboxes import Candidates, select_box
from napari_samboxes.formats.boxtable import BoxTable, read_box_table, write_box_table


def candidates(n: int, rng: np.random.Generator) -> Candidates:
    xy = rng.uniform(0, 4000, (n, 2))
    wh = rng.uniform(5, 800, (n, 2))
    return Candidates.from_unsorted(
        np.hstack([xy, xy + wh]).round(),
        np.prod(wh, 1).astype(np.int64),
        rng.random(n).astype(np.float32),
        rng.random(n).astype(np.float32),
    )


def core() -> None:
    rng = np.random.default_rng(0)
    c = candidates(5000, rng)
    pts = rng.uniform(0, 4000, (1000, 2, 2))
    times = []
    for p in pts:
        t = time.perf_counter()
        select_box(c, p)
        times.append(time.perf_counter() - t)
    print(
        f"select_box, 5000 candidates: median {np.median(times) * 1e3:.3f} ms, "
        f"max {np.max(times) * 1e3:.3f} ms over 1000 picks"
    )
    n = 100_000
    t = BoxTable(
        [f"class{i % 9}" for i in range(n)],
        c.boxes[rng.integers(0, 5000, n)],
        rng.random(n),
        np.zeros((n, 0)),
    )
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "big.csv"
        t0 = time.perf_counter()
        write_box_table(p, t)
        t1 = time.perf_counter()
        back = read_box_table(p)
        t2 = time.perf_counter()
    assert len(back) == n
    print(f"box table, 100000 rows: write {t1 - t0:.2f} s, read {t2 - t1:.2f} s")


def gui() -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_samboxes._widget import SamBoxesWidget

    rng = np.random.default_rng(1)
    viewer = napari.Viewer(show=False)
    viewer.add_image(np.zeros((4000, 4800), np.uint8), name="img")
    w = SamBoxesWidget(viewer)
    c = candidates(5000, rng)
    w._run_image = w._cand_image = viewer.layers["img"]
    w._candidates = c
    t = time.perf_counter()
    w._show_candidates()
    QApplication.processEvents()
    print(
        f"show 5000 candidates (one add_rectangles call): {time.perf_counter() - t:.2f} s"
    )
    picks = w._picks_layer_for(viewer.layers["img"])
    times = []
    for _ in range(50):
        i = int(rng.integers(0, len(c)))
        x0, y0, x1, y1 = c.boxes[i]
        picks.add([(y0 + y1) / 2, (x0 + x1) / 2])
        t = time.perf_counter()
        picks.add([y0 + 1, x0 + 1])
        times.append(time.perf_counter() - t)
    print(
        f"pick in the widget (second click -> box added), 5000 candidates: "
        f"median {np.median(times) * 1e3:.1f} ms, {len(viewer.layers['img boxes'].data)} boxes"
    )
    viewer.close()


if __name__ == "__main__":
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--gui", action="store_true")
    args = a.parse_args()
    core()
    if args.gui:
        gui()
