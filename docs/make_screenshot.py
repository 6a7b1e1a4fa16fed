"""Make the README's screenshots in a real viewer (Xvfb on a headless machine):

    xvfb-run -a .venv/bin/python docs/make_screenshot.py

* ``first-screen.png``: ``napari-samboxes view`` with no weights anywhere;
  prints the canvas width against the window width.
* ``screenshot.png``: a folder session (structured test checkpoint): the
  grouped dock with the box list, boxes of three classes (one selected in
  the list), and the preview of the box a second click would give.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QApplication

HERE = Path(__file__).parent


def settle(n: int = 30) -> None:
    app = QApplication.instance()
    for _ in range(n):
        app.processEvents()


def first_screen(tmp: Path) -> None:
    from napari_samboxes._napari.view import open_view

    os.environ["NAPARI_SAMBOXES_CACHE"] = str(tmp / "empty-cache")
    os.environ.pop("NAPARI_SAMBOXES_WEIGHTS", None)
    viewer, widget = open_view(None)
    viewer.window.resize(1300, 800)
    settle()
    widget.checkpoint.value = str(tmp / "a-rather-long-folder-name" / "wrong.pt")
    settle()
    canvas = viewer.window._qt_viewer.canvas.native.width()
    window = viewer.window._qt_window.width()
    print(f"first screen: canvas {canvas} px of a {window} px window "
          f"({canvas / window:.0%}); status: {widget.status.value!r}")
    viewer.screenshot(str(HERE / "first-screen.png"), canvas_only=False)
    viewer.close()


def folder_session(tmp: Path) -> None:
    import napari
    from PIL import Image

    from napari_samboxes._napari.sample_data import sample_image
    from napari_samboxes._napari.widget import SamBoxesWidget
    from napari_samboxes.cache import CandidateCache
    from napari_samboxes.testing import write_structured_checkpoint

    ckpt = write_structured_checkpoint(tmp / "structured.pt")
    shots = tmp / "shots"
    shots.mkdir()
    photo = sample_image()
    Image.fromarray(photo).save(shots / "coffee.png")
    Image.fromarray(photo[::-1]).save(shots / "coffee-flipped.png")
    (shots / "classes.txt").write_text("cup\nsaucer\nspoon\n")
    viewer = napari.Viewer()
    viewer.window.resize(1400, 850)
    widget = SamBoxesWidget(viewer, cache=CandidateCache(tmp / "cache"))
    viewer.window.add_dock_widget(widget, name="SAM boxes", area="right")
    widget.checkpoint.value = str(ckpt)
    widget.points_per_side.value = 8
    widget.folder.value = str(shots)
    app = QApplication.instance()
    fm = widget.folder_mode
    while widget.current_run is not None or fm.index < 0 or not len(
        widget.session.candidates
    ):
        app.processEvents()
    c = widget.session.candidates
    h, w = photo.shape[:2]
    mid = np.abs((c.boxes[:, 0] + c.boxes[:, 2]) / 2 - w / 2) + np.abs(
        (c.boxes[:, 1] + c.boxes[:, 3]) / 2 - h / 2
    )
    medium = np.flatnonzero((c.areas > 0.02 * h * w) & (c.areas < 0.08 * h * w))
    chosen = medium[np.argsort(mid[medium])][[0, 3, 9]]
    for label, i in zip(("cup", "saucer", "spoon"), chosen, strict=True):
        x0, y0, x1, y1 = c.boxes[i]
        widget.box_label.value = label
        widget.pick(np.array([[y0 + 0.45 * (y1 - y0), x0 + 0.45 * (x1 - x0)],
                              [y0 + 0.55 * (y1 - y0), x0 + 0.55 * (x1 - x0)]]))
    # one pending pick and the preview of the box the second click gives
    j = medium[np.argsort(mid[medium])][6]
    x0, y0, x1, y1 = c.boxes[j]
    picks = widget.annotator.view.layer("picks")
    picks.add(np.array([y0 + 0.4 * (y1 - y0), x0 + 0.4 * (x1 - x0)]))
    viewer.reset_view()
    widget.annotator.select([1], centre=False)
    widget.annotator.preview(np.array([y0 + 0.6 * (y1 - y0), x0 + 0.6 * (x1 - x0)]))
    settle()
    viewer.screenshot(str(HERE / "screenshot.png"), canvas_only=False)
    print("folder session:", widget.folder_progress.value, len(c), "candidates")
    widget.shutdown()
    viewer.close()


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    first_screen(tmp)
    folder_session(tmp)


if __name__ == "__main__":
    main()
