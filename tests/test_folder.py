"""Folder mode in a real viewer: open, candidates without Run, pick with
classes, navigate, autosave on disk, export and read back; and a SIGKILL
right after a pick loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from gui_helpers import child_pick_script, wait_image
from napari_samboxes._napari.widget import SamBoxesWidget
from napari_samboxes.cache import CandidateCache
from napari_samboxes.dataset import Dataset
from napari_samboxes.export import export_dataset
from napari_samboxes.formats.boxtable import read_box_table
from napari_samboxes.geometry import boxes_from_shapes
from napari_samboxes.importing import import_dataset

TIMEOUT = 120_000


@pytest.fixture
def folder(tmp_path, photo):
    """Three images of different sizes and formats."""
    from PIL import Image

    d = tmp_path / "shots"
    d.mkdir()
    Image.fromarray(photo).save(d / "img1.png")
    Image.fromarray(photo[:160, :200]).save(d / "img2.jpg", quality=95)
    Image.fromarray(photo[20:140, 30:250, 0]).save(d / "img10.png")
    (d / "classes.txt").write_text("cup\nplate\n")
    return d


def pick_first(widget, picks, offset=0):
    """Pick the ``offset``-th smallest candidate by two inner points."""
    c = widget.session.candidates
    x0, y0, x1, y1 = c.boxes[offset]
    pts = np.array(
        [
            [y0 + 0.3 * (y1 - y0), x0 + 0.3 * (x1 - x0)],
            [y1 - 0.3 * (y1 - y0), x1 - 0.3 * (x1 - x0)],
        ]
    )
    picks.add(pts[0])
    picks.add(pts[1])


def same_boxes(a, b):
    """The same boxes and labels (a mask may have been added meanwhile)."""
    return a.labels == b.labels and np.array_equal(a.xyxy, b.xyxy)


def on_disk(folder, name):
    p = folder / "annotations" / f"{name}.csv"
    return read_box_table(p) if p.exists() else None


def test_folder_session_end_to_end(
    make_napari_viewer, folder, structured_ckpt, tmp_path, qtbot
):
    viewer = make_napari_viewer()
    widget = SamBoxesWidget(
        viewer, cache=CandidateCache(tmp_path / "cache"), points_per_batch=16
    )
    viewer.window.add_dock_widget(widget)
    widget.checkpoint.value = str(structured_ckpt)
    widget.points_per_side.value = 4
    widget.folder.value = str(folder)  # opens the folder; no Run pressed
    assert list(widget.box_label.choices)[:2] == ["cup", "plate"]
    wait_image(widget, qtbot)
    assert "image 1 of 3, 0 annotated" in widget.folder_progress.value
    picks = viewer.layers.selection.active
    widget.box_label.value = "cup"
    pick_first(widget, picks, 0)
    n_layers = len(viewer.layers)
    widget.box_label.value = "plate"
    pick_first(widget, picks, 1)
    first = widget.session.boxes
    assert first.labels == ("cup", "plate")
    qtbot.waitUntil(lambda: on_disk(folder, "img1") is not None, timeout=5000)
    qtbot.waitUntil(lambda: len(on_disk(folder, "img1")) == 2, timeout=5000)
    t = on_disk(folder, "img1")
    assert t.labels == ["cup", "plate"]
    np.testing.assert_array_equal(t.boxes, first.xyxy)
    # undo and redo reach the disk too
    widget.undo.changed.emit(True)
    qtbot.waitUntil(lambda: len(on_disk(folder, "img1")) == 1, timeout=5000)
    assert on_disk(folder, "img1").labels == ["cup"]
    widget.redo.changed.emit(True)
    qtbot.waitUntil(lambda: len(on_disk(folder, "img1")) == 2, timeout=5000)
    assert same_boxes(widget.session.boxes, first)

    # image 2: its candidates were precomputed in the background
    qtbot.waitUntil(lambda: widget.folder_mode.background_done >= 1, timeout=TIMEOUT)
    outcomes = []
    widget.run_finished.connect(outcomes.append)
    widget.next_image.changed.emit(True)
    qtbot.waitUntil(lambda: bool(outcomes), timeout=TIMEOUT)
    assert outcomes[0] == "cached"
    assert "image 2 of 3, 1 annotated" in widget.folder_progress.value
    assert len(widget.session.boxes) == 0
    pick_first(widget, viewer.layers.selection.active, 0)
    widget.prev_image.changed.emit(True)  # at once: the pick still goes to img2
    wait_image(widget, qtbot)
    assert len(viewer.layers) == n_layers  # layers are reused, none pile up
    # img1 (192 x 256) after img2 (160 x 200): the view fits img1 alone
    # (the preview and boxes of img2 are not counted)
    np.testing.assert_allclose(viewer.camera.center[-2:], [95.5, 127.5], atol=0.5)
    assert len(on_disk(folder, "img2")) == 1 and len(on_disk(folder, "img1")) == 2
    assert same_boxes(widget.session.boxes, first)
    boxes_layer = widget.annotator.view.layer("boxes")
    np.testing.assert_array_equal(boxes_from_shapes(boxes_layer.data)[0], first.xyxy)
    assert list(boxes_layer.features["label"]) == ["cup", "plate"]

    # exports, read back to identical boxes
    ds = Dataset(folder)
    want = {p.name: ds.load_boxes(p) for p in ds.images if ds.is_annotated(p)}
    assert set(want) == {"img1.png", "img2.jpg"}
    for fmt in ("coco", "yolo", "voc"):
        out = tmp_path / f"out-{fmt}"
        export_dataset(folder, fmt, out)
        back = tmp_path / f"back-{fmt}"
        back.mkdir()
        for p in ds.images:
            (back / p.name).write_bytes(p.read_bytes())
        import_dataset(out, fmt, back)
        got = Dataset(back)
        for name, table in want.items():
            b = got.load_boxes(name)
            assert b.labels == table.labels, fmt
            np.testing.assert_array_equal(b.boxes, table.boxes)
    from pycocotools.coco import COCO

    coco = COCO(str(tmp_path / "out-coco" / "annotations.json"))
    assert len(coco.getAnnIds()) == 3
    doc = json.loads((tmp_path / "out-coco" / "annotations.json").read_text())
    x0, y0, x1, y1 = want["img1.png"].boxes[0]
    assert doc["annotations"][0]["bbox"] == [x0, y0, x1 - x0 + 1, y1 - y0 + 1]
    root = ET.parse(tmp_path / "out-voc" / "img1.xml").getroot()
    assert root.find("size/width").text == "256"
    assert int(root.find("object/bndbox/xmin").text) == int(x0) + 1


def test_sigkill_right_after_a_pick_loses_nothing(folder, structured_ckpt, tmp_path):
    widget = (
        "from napari_samboxes._napari.widget import SamBoxesWidget; "
        "from napari_samboxes.cache import CandidateCache; "
        f"w = SamBoxesWidget(viewer, cache=CandidateCache({str(tmp_path / 'c')!r}))"
    )
    then = """
        t = time.time()
        while time.time() - t < 1.0:
            app.processEvents(); time.sleep(0.01)
        print("PICKED", x0, y0, x1, y1, flush=True)
        time.sleep(60)
        """
    script = child_pick_script(widget, structured_ckpt, folder, then)
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        line = ""
        while not line.startswith("PICKED"):
            line = proc.stdout.readline()
            assert line, "the child ended before picking"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    box = [float(v) for v in line.split()[1:]]
    t = on_disk(folder, "img1")
    assert t is not None and len(t) == 1
    np.testing.assert_array_equal(t.boxes[0], box)


def test_a_broken_box_table_is_never_overwritten(
    make_napari_viewer, folder, structured_ckpt, tmp_path, qtbot, monkeypatch
):
    import napari.utils.notifications as nt

    errors = []
    monkeypatch.setattr(nt, "show_error", errors.append)
    (folder / "annotations").mkdir()
    broken = folder / "annotations" / "img2.csv"
    broken.write_text("label,x_min,y_min,x_max,y_max\ncup,1,2,oops,4\n")
    viewer = make_napari_viewer()
    widget = SamBoxesWidget(viewer, cache=CandidateCache(tmp_path / "cache"))
    widget.checkpoint.value = str(structured_ckpt)
    widget.points_per_side.value = 4
    widget.folder.value = str(folder)
    wait_image(widget, qtbot)
    widget.next_image.changed.emit(True)
    assert "img2.jpg: not shown" in errors[-1] and "line 2" in errors[-1]
    # stepped past it: on to img10, and back past it to img1
    wait_image(widget, qtbot, 2)
    assert "image 3 of 3" in widget.folder_progress.value
    widget.prev_image.changed.emit(True)
    wait_image(widget, qtbot, 0)
    assert "image 1 of 3" in widget.folder_progress.value
    pick_first(widget, viewer.layers["shots picks"], 0)
    widget.folder_mode.flush()
    assert len(on_disk(folder, "img1")) == 1
    assert broken.read_text().endswith("oops,4\n")  # untouched


def test_typing_a_folder_opens_it_once_typed(
    make_napari_viewer, tmp_path, photo, structured_ckpt, qtbot
):
    """Typing a path into the folder field opens nothing on the way (not
    the folder "ab" on the way to "abc"); Enter opens the folder typed."""
    from PIL import Image
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    for name in ("ab", "abc"):
        (tmp_path / name).mkdir()
        Image.fromarray(photo).save(tmp_path / name / "img1.png")
    viewer = make_napari_viewer(show=True)
    widget = SamBoxesWidget(viewer, cache=CandidateCache(tmp_path / "cache"))
    viewer.window.add_dock_widget(widget)
    widget.checkpoint.value = str(structured_ckpt)
    widget.points_per_side.value = 2
    from gui_helpers import activate

    activate(viewer, qtbot)
    line = widget.folder.line_edit.native
    line.setFocus()
    qtbot.waitUntil(line.hasFocus, timeout=5000)
    QTest.keyClicks(line, str(tmp_path / "abc"))
    assert widget.folder_mode is None
    QTest.keyClick(line, Qt.Key.Key_Return)
    assert widget.folder_mode is not None
    assert widget.folder_mode.session.dataset.folder == tmp_path / "abc"
    wait_image(widget, qtbot, 0)


def test_a_move_onto_an_unreadable_image_keeps_the_shown_one_working(
    make_napari_viewer, tmp_path, photo, structured_ckpt, qtbot, monkeypatch
):
    from PIL import Image

    from gui_helpers import blocking_engine, make_widget, notes

    d = tmp_path / "shots"
    d.mkdir()
    Image.fromarray(photo).save(d / "img1.png")
    (d / "img2.png").write_bytes(b"not an image at all")
    said = notes(monkeypatch)
    go = blocking_engine(monkeypatch)
    viewer = make_napari_viewer()
    # 16 prompts in batches of 4: the run stops after its first batch
    widget = make_widget(viewer, structured_ckpt, tmp_path / "cache", pps=4)
    widget.folder.value = str(d)
    qtbot.waitUntil(  # the first batch is in, the run waits for the next
        lambda: widget.current_run is not None and len(widget.session.candidates) > 0,
        timeout=TIMEOUT,
    )
    widget.next_image.native.click()  # onto the broken file, mid-run
    go.set()
    qtbot.waitUntil(lambda: bool(said["error"]), timeout=TIMEOUT)
    assert "img2.png: not shown" in said["error"][-1]
    wait_image(widget, qtbot, 0)  # img1's run went on: its candidates are there
    assert "image 1 of 2" in widget.folder_progress.value
