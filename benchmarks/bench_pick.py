"""Pick latency with 5,000 candidates, and reading a 100,000-row box table.

    python benchmarks/bench_pick.py                 # core figures
    xvfb-run -a python benchmarks/bench_pick.py --gui   # also in a real viewer
    python benchmarks/bench_pick.py --prompts       # prompt fallback (CPU)

Prints the median time of ``select_box`` over 1,000 picks, the time to read
and write 100,000 box-table rows, and with ``--gui`` the time to show 5,000
candidates (one ``add_rectangles`` call) and the end-to-end time of a pick in
the widget (second click -> box in the boxes layer); the preview update
with 5,000 candidates (``session.preview``, and with ``--gui``
``Preview.update`` including the layer assignment, target < 16 ms); with
``--prompts`` the prompt fallback's time with the embedding in memory
(target < 1 s on a 2-core CPU) and box vs box + points prompts.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_samboxes import Candidates, select_box
from napari_samboxes.candidates import RawMasks
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


def _raw(c: Candidates) -> RawMasks:
    n = len(c)
    return RawMasks(
        c.boxes.astype(np.int64),
        c.areas,
        np.ones(n, np.float32),
        np.ones(n, np.float32),
        np.zeros((n, 2)),
    )


def fallback(size: tuple[int, int] = (768, 1024)) -> None:
    """Second click -> prompt box, with the embedding in memory (CPU)."""
    import torch

    from napari_samboxes import engine, load_model
    from napari_samboxes.pipeline import RunRequest
    from napari_samboxes.testing import write_random_checkpoint
    from napari_samboxes.tighten import Prompter

    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as d:
        ck = write_random_checkpoint(Path(d) / "r.pt")
        model = load_model(ck, device="cpu")
        t = time.perf_counter()
        emb = engine.encode_image(rgb, model)
        enc = time.perf_counter() - t
        p = Prompter(RunRequest(rgb, ck, "cpu"), embedding=emb)
        p.model = lambda: model  # type: ignore[method-assign]
        times = []
        for _ in range(5):
            xy = rng.uniform(0, 700, 2)
            t = time.perf_counter()
            p(np.array([[*xy, *(xy + 200)]]))
            times.append(time.perf_counter() - t)
    print(
        f"prompt fallback, {size[1]}x{size[0]} image, embedding known, "
        f"{torch.get_num_threads()} threads: median {np.median(times) * 1e3:.0f} ms, "
        f"max {np.max(times) * 1e3:.0f} ms (target < 1000 ms; an encode would "
        f"add {enc:.1f} s)"
    )


def prompt_quality() -> None:
    """Box prompt vs box + the two clicks as positive points (structured ckpt)."""
    from skimage import data, transform

    from napari_samboxes import engine, load_model, propose_boxes
    from napari_samboxes.testing import write_structured_checkpoint
    from napari_samboxes.tighten import iou_matrix

    img = transform.resize(data.astronaut(), (192, 256), anti_aliasing=True)
    img = (img * 255).round().astype(np.uint8)
    with tempfile.TemporaryDirectory() as d:
        model = load_model(write_structured_checkpoint(Path(d) / "s.pt"), "cpu")
    c = propose_boxes(img, model, points_per_side=4)
    emb = engine.encode_image(img, model)
    b = c.boxes.astype(float)
    p0, p1 = (
        b[:, :2] + 0.2 * (b[:, 2:] - b[:, :2]),
        b[:, 2:] - 0.2 * (b[:, 2:] - b[:, :2]),
    )
    span = np.hstack([p0, p1])
    for name, pts in (("box", None), ("box + 2 points", np.stack([p0, p1], 1))):
        got, ious = engine.prompt_boxes(model, emb, span, pts)
        iou = np.diag(iou_matrix(got, b))
        empty = np.all(got == 0, axis=1).mean()
        print(
            f"prompt '{name}': mean IoU with the object's candidate {iou.mean():.3f}, "
            f"empty masks {empty:.0%}, mean predicted IoU {ious.mean():.3f}"
        )


def preview(viewer: object = None) -> None:
    """Preview update with 5,000 candidates: the selection, and in a real
    viewer the selection plus the preview layer's assignment."""
    from napari_samboxes.session import Session

    rng = np.random.default_rng(3)
    c = candidates(5000, rng)
    s = Session()
    s.set_thresholds(0.0, 0.0, 1.0)
    s.begin_run()
    s.commit(_raw(c))
    cursors = rng.uniform(0, 4000, (500, 2))
    t = time.perf_counter()
    for xy in cursors:
        s.preview(np.vstack([[2000.0, 2000.0], xy]))
    per = (time.perf_counter() - t) / len(cursors)
    print(f"session.preview, {len(s.candidates)} candidates: {per * 1e3:.3f} ms")
    if viewer is None:
        return
    from qtpy.QtWidgets import QApplication

    from napari_samboxes._napari.widget import SamBoxesWidget

    image = viewer.add_image(np.zeros((4000, 4800), np.uint8), name="img")  # type: ignore[attr-defined]
    w = SamBoxesWidget(viewer)  # type: ignore[arg-type]
    w._layers_for(image)
    w.session = s
    w.render_candidates()
    w.show_candidates.value = "under cursor"
    QApplication.processEvents()
    times, shown = [], 0
    for xy in cursors[:200]:
        t = time.perf_counter()
        shown += w.preview.update(xy[::-1]) is not None
        times.append(time.perf_counter() - t)
    print(
        f"Preview.update in a viewer, 5000 candidates (selection + layer "
        f"assignment, {shown} of 200 with a box): median "
        f"{np.median(times) * 1e3:.2f} ms, max {np.max(times) * 1e3:.2f} ms "
        "(target < 16 ms)"
    )


def gui() -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_samboxes._napari.widget import SamBoxesWidget

    rng = np.random.default_rng(1)
    viewer = napari.Viewer(show=False)
    image = viewer.add_image(np.zeros((4000, 4800), np.uint8), name="img")
    w = SamBoxesWidget(viewer)
    c = candidates(5000, rng)
    w._layers_for(image)
    w.session.set_thresholds(0.0, 0.0, 1.0)
    w.session.begin_run()
    t = time.perf_counter()
    w.session.commit(_raw(c))
    w.render_candidates()
    QApplication.processEvents()
    print(
        f"show 5000 candidates (one layer assignment): {time.perf_counter() - t:.2f} s"
    )
    picks = w._picks()
    c = w.session.candidates
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
    preview(viewer)
    viewer.close()


if __name__ == "__main__":
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--gui", action="store_true")
    a.add_argument(
        "--prompts",
        action="store_true",
        help="also time the prompt fallback and compare prompt kinds",
    )
    args = a.parse_args()
    core()
    if args.gui:
        gui()
    else:
        preview()
    if args.prompts:
        fallback()
        prompt_quality()
