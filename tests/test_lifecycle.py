"""The widget's life in a real napari viewer: hiding and closing its dock,
opening it twice, closing the window, quitting; and the look-ahead's cache
serving images that are not 8-bit.

napari 0.9 (seen here): the dock's hide button and the Plugins menu only
hide and show the same widget, and adding the plugin's dock again returns
that widget; the dock's close button takes the widget out of the window
without deleting it, and the Plugins menu then makes a new widget.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from gui_helpers import TIMEOUT, child_pick_script, make_widget, wait_image
from napari_samboxes.formats.boxtable import read_box_table

PLUGIN = "napari-samboxes"


@pytest.fixture
def folder(tmp_path, photo):
    """Three small 8-bit images."""
    from PIL import Image

    d = tmp_path / "shots"
    d.mkdir()
    for i, (r, c) in enumerate([(0, 0), (40, 60), (90, 120)]):
        Image.fromarray(photo[r : r + 96, c : c + 128]).save(d / f"img{i + 1}.png")
    return d


def on_disk(folder, name):
    p = folder / "annotations" / f"{name}.csv"
    return read_box_table(p) if p.exists() else None


def setup(widget, ckpt, folder, qtbot):
    """Set a test checkpoint, open the folder, wait for its candidates."""
    widget.checkpoint.value = str(ckpt)
    widget.points_per_side.value = 2
    widget.folder.value = str(folder)
    wait_image(widget, qtbot)


def pick(viewer, widget, k=0):
    """Two clicks inside the ``k``-th smallest candidate, in the picks layer."""
    x0, y0, x1, y1 = widget.session.candidates.boxes[k]
    picks = viewer.layers["shots picks"]
    picks.add([y0 + 0.3 * (y1 - y0), x0 + 0.3 * (x1 - x0)])
    picks.add([y1 - 0.3 * (y1 - y0), x1 - 0.3 * (x1 - x0)])
    return [x0, y0, x1, y1]


def test_hiding_the_dock_saves_at_once_and_pauses_the_look_ahead(
    make_napari_viewer, folder, structured_ckpt, qtbot
):
    viewer = make_napari_viewer(show=True)  # hidden windows get no Hide events
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN)
    again = viewer.window.add_plugin_dock_widget(PLUGIN)
    assert again[1] is widget  # napari gives the docked widget back
    setup(widget, structured_ckpt, folder, qtbot)
    assert widget.folder_mode.looking_ahead
    box = pick(viewer, widget)
    dock.close()  # the dock's hide button
    t = on_disk(folder, "img1")  # no wait: written when the dock hid
    assert t is not None and len(t) == 1
    np.testing.assert_array_equal(t.boxes[0], box)
    assert not widget.folder_mode.looking_ahead
    box2 = pick(viewer, widget, 1)  # picking goes on with the dock hidden
    qtbot.waitUntil(lambda: len(on_disk(folder, "img1")) == 2, timeout=5000)
    np.testing.assert_array_equal(on_disk(folder, "img1").boxes[1], box2)
    dock.show()  # the Plugins menu shows it again
    assert widget.folder_mode.looking_ahead
    qtbot.waitUntil(lambda: widget.folder_mode.background_done >= 1, timeout=TIMEOUT)
    outcomes = []
    widget.run_finished.connect(outcomes.append)
    widget.next_image.changed.emit(True)
    qtbot.waitUntil(lambda: bool(outcomes), timeout=TIMEOUT)
    assert outcomes == ["cached"]


def test_closing_the_dock_then_reopening_gives_one_autosaver(
    make_napari_viewer, folder, structured_ckpt, qtbot
):
    viewer = make_napari_viewer(show=True)
    dock, old = viewer.window.add_plugin_dock_widget(PLUGIN)
    setup(old, structured_ckpt, folder, qtbot)
    box = pick(viewer, old)
    dock.destroyOnClose()  # the dock's close button
    t = on_disk(folder, "img1")  # no wait
    assert t is not None and len(t) == 1
    np.testing.assert_array_equal(t.boxes[0], box)
    assert old.folder_mode is None and old.current_run is None
    _, new = viewer.window.add_plugin_dock_widget(PLUGIN)
    assert new is not old  # napari made a second widget
    # it goes on where the closed one was: folder, image, checkpoint, grid
    assert new.folder_mode is not None and str(new.folder.value) == str(folder)
    assert str(new.checkpoint.value) == str(structured_ckpt)
    assert new.points_per_side.value == 2
    wait_image(new, qtbot, 0)
    assert new.session.boxes.xyxy.tolist() == [box]  # read back from disk
    assert len([ly for ly in viewer.layers if ly.name.startswith("shots")]) == len(
        {ly.name for ly in viewer.layers if ly.name.startswith("shots")}
    )  # the closed panel's layers are taken up, not doubled
    box2 = pick(viewer, new, 1)
    assert len(new.session.boxes) == 2 and len(old.session.boxes) == 1
    qtbot.waitUntil(lambda: len(on_disk(folder, "img1")) == 2, timeout=5000)
    np.testing.assert_array_equal(on_disk(folder, "img1").boxes, [box, box2])
    old.undo.changed.emit(True)  # the closed widget changes nothing
    assert len(viewer.layers["shots boxes"].data) == 2


def test_a_second_widget_on_the_same_folder_closes_the_first(
    make_napari_viewer, folder, structured_ckpt, tmp_path, qtbot
):
    viewer = make_napari_viewer()
    first = make_widget(viewer, structured_ckpt, tmp_path / "c1", pps=2)
    setup(first, structured_ckpt, folder, qtbot)
    box = pick(viewer, first)  # pending: not on disk yet
    second = make_widget(viewer, structured_ckpt, tmp_path / "c2", pps=2)
    setup(second, structured_ckpt, folder, qtbot)
    assert first.folder_mode is None  # flushed and closed before the second
    assert second.session.boxes.xyxy.tolist() == [box]
    box2 = pick(viewer, second, 1)
    qtbot.waitUntil(lambda: len(on_disk(folder, "img1")) == 2, timeout=5000)
    assert len(first.session.boxes) == 1
    np.testing.assert_array_equal(on_disk(folder, "img1").boxes, [box, box2])


def test_closing_the_viewer_saves_pending_boxes(
    make_napari_viewer, folder, structured_ckpt, qtbot
):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN)
    setup(widget, structured_ckpt, folder, qtbot)
    box = pick(viewer, widget)
    assert on_disk(folder, "img1") is None  # still pending
    viewer.close()
    t = on_disk(folder, "img1")
    assert t is not None and len(t) == 1
    np.testing.assert_array_equal(t.boxes[0], box)


def test_quitting_the_application_saves_pending_boxes(
    folder, structured_ckpt, tmp_path
):
    widget = '_, w = viewer.window.add_plugin_dock_widget("napari-samboxes")'
    then = """
        pending = not (w.folder_mode.session.dataset.annotations_dir / "img1.csv").exists()
        QTimer.singleShot(0, app.quit)
        app.exec()
        print("QUIT", pending, x0, y0, x1, y1, flush=True)
        os._exit(0)  # nothing runs after the event loop
        """
    script = child_pick_script(widget, structured_ckpt, folder, then)
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("QUIT"))
    pending, *box = line.split()[1:]
    assert pending == "True"
    t = on_disk(folder, "img1")
    assert t is not None and len(t) == 1
    np.testing.assert_array_equal(t.boxes[0], [float(v) for v in box])


@pytest.fixture
def deep_folder(tmp_path, photo):
    """16-bit grey, floating-point grey and 16-bit RGBA TIFFs (values far
    from 0..255; an opaque alpha far above the colours)."""
    import tifffile

    d = tmp_path / "deep"
    d.mkdir()
    grey = photo[:96, :128].mean(-1)
    tifffile.imwrite(d / "a.tif", (grey * 40 + 1000).astype(np.uint16))
    tifffile.imwrite(d / "b.tif", (grey[::-1] / 300 - 0.2).astype(np.float32))
    rgba = np.full((96, 128, 4), 65535, np.uint16)
    rgba[..., :3] = photo[20:116, 40:168].astype(np.uint16) * 20 + 500
    tifffile.imwrite(d / "c.tif", rgba, photometric="rgb")
    return d


def test_the_look_ahead_serves_16_bit_and_float_images(
    make_napari_viewer, deep_folder, structured_ckpt, tmp_path, qtbot
):
    viewer = make_napari_viewer()
    widget = make_widget(viewer, structured_ckpt, tmp_path / "cache", pps=2)
    widget.folder.value = str(deep_folder)
    wait_image(widget, qtbot)
    qtbot.waitUntil(lambda: widget.folder_mode.background_done >= 2, timeout=TIMEOUT)
    outcomes = []
    widget.run_finished.connect(outcomes.append)
    for n, dtype in [(1, np.float32), (2, np.uint16)]:
        widget.next_image.changed.emit(True)
        qtbot.waitUntil(lambda n=n: len(outcomes) == n, timeout=TIMEOUT)
        assert viewer.layers["deep"].data.dtype == dtype
        assert len(widget.session.candidates) > 0
    assert viewer.layers["deep"].data.shape == (96, 128, 4)
    assert outcomes == ["cached", "cached"]
