"""Longest stall of napari's event loop while moving between images in
folder mode (candidates cached), opening a folder on a 6000 x 4000 image,
and pressing Run on a 4000 x 3000 image, in a real, shown viewer.

A 5 ms QTimer records the gap between its ticks; any gap longer than the
timer period is time the UI thread could not process events (a frozen
viewer). Targets (issue 15): every image switch at most 0.3 s.

    xvfb-run -a python benchmarks/bench_ui_stall.py [--points-per-side 4]

The images are a photo (scikit-image's coffee) scaled to each size; their
candidates are computed into a fresh cache first, as the look-ahead does,
so every switch measured is served from the cache.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {"1024x768": (768, 1024), "4000x3000": (3000, 4000)}
BIG = (4000, 6000)


class Stalls:
    """Gaps of a 5 ms timer while something happens."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.gaps: list[float] = []
        self._last = time.perf_counter()
        self.timer = QTimer()
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append(now - self._last)
        self._last = now

    def start(self) -> None:
        self.gaps = []
        self._last = time.perf_counter()
        self.timer.start(5)

    def stop(self) -> float:
        self.timer.stop()
        return max(self.gaps, default=0.0)


def photo(shape: tuple[int, int]) -> np.ndarray:
    from skimage import data, transform

    img = transform.resize(data.coffee(), shape, order=1, anti_aliasing=False)
    return (img * 255).round().astype(np.uint8)


def wait(app, cond, timeout: float = 600.0) -> float:
    t = time.perf_counter()
    while not cond():
        app.processEvents()
        time.sleep(0.001)
        if time.perf_counter() - t > timeout:
            raise TimeoutError("waited too long")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points-per-side", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import napari
    from PIL import Image
    from qtpy.QtWidgets import QApplication

    from napari_samboxes._napari.widget import SamBoxesWidget
    from napari_samboxes.cache import CandidateCache
    from napari_samboxes.pipeline import RunRequest, drain, precompute
    from napari_samboxes.settings import Settings
    from napari_samboxes.testing import write_structured_checkpoint

    tmp = Path(tempfile.mkdtemp())
    # the panel's remembered run settings: none of the user's, none kept
    os.environ["NAPARI_SAMBOXES_CONFIG"] = str(tmp / "config")
    ckpt = write_structured_checkpoint(tmp / "structured.pt")
    cache = CandidateCache(tmp / "cache")
    folder, big, big2 = tmp / "folder", tmp / "big", tmp / "big2"
    for d in (folder, big, big2):
        d.mkdir()
    names = []
    for label, shape in SIZES.items():
        for k in range(2):
            name = f"{label}-{k}.jpg"
            img = photo(shape) if k == 0 else photo(shape)[::-1].copy()
            Image.fromarray(img).save(folder / name, quality=92)
            names.append(name)
    Image.fromarray(photo(BIG)).save(big / "6000x4000.jpg", quality=92)
    (big2 / "6000x4000.jpg").write_bytes((big / "6000x4000.jpg").read_bytes())
    settings = Settings(points_per_side=args.points_per_side)
    request = RunRequest(None, ckpt, "cpu", settings)
    paths = [folder / n for n in sorted(names)] + [big / "6000x4000.jpg"]
    t = time.perf_counter()
    drain(precompute(paths, request, cache))  # the look-ahead's work
    print(f"cached {len(paths)} images in {time.perf_counter() - t:.1f} s")

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    widget = SamBoxesWidget(viewer, cache=cache)
    viewer.window.add_dock_widget(widget)
    widget.checkpoint.value = str(ckpt)
    widget.points_per_side.value = args.points_per_side
    stalls = Stalls()

    def shown(index: int) -> bool:
        fm = widget.folder_mode
        return (
            fm is not None
            and fm.index == index == fm.target
            and widget.current_run is None
            and len(widget.session.candidates) > 0
        )

    # opening a folder on a 6000 x 4000 image: in a fresh viewer (napari
    # compiles its image shaders for the first image layer it shows, of any
    # size: about 0.5 s in software OpenGL), then in a viewer that has shown
    # an image (another folder holding the same image)
    for what, where in (
        ("fresh viewer", big),
        ("viewer that has shown an image", big2),
    ):
        stalls.start()
        widget.folder.value = str(where)
        took = wait(app, lambda: shown(0))
        for _ in range(20):  # the frames after it
            app.processEvents()
            time.sleep(0.005)
        worst = stalls.stop()
        print(
            f"open a folder on a 6000x4000 image ({what}): longest stall "
            f"{worst * 1e3:.0f} ms (shown with its candidates after {took:.2f} s)"
        )

    # moving between cached images
    widget.folder.value = str(folder)
    wait(app, lambda: shown(0))
    order = sorted(names)
    worst: dict[str, list[float]] = {k: [] for k in SIZES}
    for _ in range(args.repeats):
        for _ in order:
            target = (widget.folder_mode.index + 1) % len(order)
            label = order[target].split("-")[0]
            stalls.start()
            if target == 0:
                widget.folder_mode.show(0)
            else:
                widget.mode.do("next_image")  # the key d
            wait(app, lambda target=target: shown(target))
            for _ in range(20):  # the frames after it
                app.processEvents()
                time.sleep(0.005)
            worst[label].append(stalls.stop())
    print(f"move to a cached image ({args.repeats} passes over {len(order)} images):")
    for label, gaps in worst.items():
        print(
            f"  {label}: longest stall {max(gaps) * 1e3:.0f} ms "
            f"(median of switches {np.median(gaps) * 1e3:.0f} ms; target 300 ms)"
        )

    # pressing Run on a 4000 x 3000 image (not cached at this grid)
    widget.points_per_side.value = args.points_per_side + 1
    target = order.index(next(n for n in order if "4000" in n))
    widget.folder_mode.show(target)
    wait(app, lambda: widget.folder_mode.index == target and widget.current_run is None)
    wait(app, lambda: widget.current_run is None and not widget.runs.alive("run"))
    stalls.start()
    t = time.perf_counter()
    widget.run.native.click()
    press = time.perf_counter() - t
    wait(app, lambda: widget.current_run is None)
    run_stall = stalls.stop()
    print(
        f"Run on 4000x3000 until its last candidates: longest stall "
        f"{max(run_stall, press) * 1e3:.0f} ms (the click itself {press * 1e3:.0f} ms)"
    )
    widget.shutdown()
    viewer.close()


if __name__ == "__main__":
    main()
