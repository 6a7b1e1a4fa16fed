"""Make docs/screenshot.png: the widget in use on the sample photo.

Runs a real viewer (use Xvfb on a headless machine:
``xvfb-run -a .venv/bin/python docs/make_screenshot.py``) with the structured
test checkpoint, runs the widget, picks two boxes, and saves a screenshot.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

from napari_samboxes._sample_data import sample_image
from napari_samboxes._widget import SamBoxesWidget
from napari_samboxes.cache import CandidateCache
from napari_samboxes.testing import write_structured_checkpoint


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    ckpt = write_structured_checkpoint(tmp / "structured.pt")
    viewer = napari.Viewer()
    viewer.window.resize(1300, 800)
    viewer.add_image(sample_image(), name="photo", rgb=True)
    widget = SamBoxesWidget(viewer, cache=CandidateCache(tmp / "cache"))
    viewer.window.add_dock_widget(widget, name="SAM boxes", area="right")
    widget.checkpoint.value = str(ckpt)
    widget.points_per_side.value = 8
    widget.run.native.click()
    app = QApplication.instance()
    while widget._worker is not None:
        app.processEvents()
    c = widget._candidates
    picks = viewer.layers["photo picks"]
    h, w = viewer.layers["photo"].data.shape[:2]
    # two medium-sized candidates in the middle of the photo
    mid = np.abs((c.boxes[:, 0] + c.boxes[:, 2]) / 2 - w / 2) + np.abs(
        (c.boxes[:, 1] + c.boxes[:, 3]) / 2 - h / 2
    )
    medium = np.flatnonzero((c.areas > 0.02 * h * w) & (c.areas < 0.08 * h * w))
    chosen = medium[np.argsort(mid[medium])][[0, 3]]
    for label, i in zip(("cup", "saucer"), chosen):
        x0, y0, x1, y1 = c.boxes[i]
        widget.box_label.value = label
        for fx, fy in ((0.45, 0.45), (0.55, 0.55)):
            picks.add(np.array([y0 + fy * (y1 - y0), x0 + fx * (x1 - x0)]))
    picks.add(np.array([200.0, 300.0]))  # one pending pick, shown in red
    viewer.reset_view()
    for _ in range(20):
        app.processEvents()
    out = Path(__file__).with_name("screenshot.png")
    viewer.screenshot(str(out), canvas_only=False)
    print(out, len(c), "candidates")
    viewer.close()


if __name__ == "__main__":
    main()
