"""The annotation mode in a real, shown viewer, driven by real Qt mouse and
key events on the canvas (``QTest``), as an annotator would: keys go to
whatever widget has the keyboard focus, clicks land on canvas pixels."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from qtpy.QtCore import QPoint, Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication, QComboBox

from gui_helpers import TIMEOUT, make_widget, shown_folder, wait_image
from napari_samboxes import select_box
from napari_samboxes._napari.input import canvas_widget


@pytest.fixture
def mixed(tmp_path, photo):
    """A colour PNG, a greyscale PNG, a 16-bit greyscale TIFF, a colour JPEG."""
    import tifffile
    from PIL import Image

    d = tmp_path / "mixed"
    d.mkdir()
    Image.fromarray(photo).save(d / "1-colour.png")
    Image.fromarray(photo[::-1, :, 1]).save(d / "2-grey.png")
    grey16 = (photo[:, ::-1].mean(-1) * 200 + 500).astype(np.uint16)
    tifffile.imwrite(d / "3-grey16.tif", grey16)
    Image.fromarray(photo[::-1, ::-1]).save(d / "4-colour.jpg", quality=95)
    (d / "classes.txt").write_text("cup\nplate\nspoon\n")
    return d


def settle(ms=30):
    t = time.perf_counter()
    while time.perf_counter() - t < ms / 1000:
        QApplication.processEvents()


def canvas_point(viewer, row, col):
    """The canvas pixel showing world position (row, col) (2D view)."""
    canvas = canvas_widget(viewer)
    cy, cx = viewer.camera.center[-2:]
    z = viewer.camera.zoom
    return QPoint(
        int(round((col - cx) * z + canvas.width() / 2)),
        int(round((row - cy) * z + canvas.height() / 2)),
    )


def click(viewer, row, col):
    """A real left click on the canvas."""
    QTest.mouseClick(
        canvas_widget(viewer),
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
        canvas_point(viewer, row, col),
    )
    settle()


def press(key, modifier=Qt.KeyboardModifier.NoModifier):
    """A real key press, sent where Qt sends it: to the focused widget."""
    target = QApplication.focusWidget()
    assert target is not None, "nothing has the keyboard focus"
    QTest.keyClick(target, key, modifier)
    settle()


def click_pick(viewer, widget, k=0):
    """Two real clicks inside the k-th smallest candidate; returns the box
    the pick must give."""
    c = widget.session.candidates
    x0, y0, x1, y1 = c.boxes[k]
    pts = np.array(
        [
            [x0 + 0.3 * (x1 - x0), y0 + 0.3 * (y1 - y0)],
            [x1 - 0.3 * (x1 - x0), y1 - 0.3 * (y1 - y0)],
        ]
    )
    want = c.boxes[select_box(c, pts)]
    n = len(widget.session.boxes)
    for x, y in pts:
        click(viewer, y, x)
    assert len(widget.session.boxes) == n + 1
    return want


def test_keys_and_clicks_through_a_mixed_folder(
    make_napari_viewer, mixed, structured_ckpt, tmp_path, qtbot
):
    viewer, widget = shown_folder(
        make_napari_viewer, mixed, structured_ckpt, tmp_path / "cache", qtbot, pps=4
    )
    fm = widget.folder_mode
    picked = {}
    for i in range(4):
        want = click_pick(viewer, widget)
        assert widget.session.boxes.labels[-1] == "cup"
        np.testing.assert_array_equal(widget.session.boxes.xyxy[-1], want)
        press(Qt.Key.Key_2)  # a digit chooses the class
        assert widget.box_label.value == "plate"
        click_pick(viewer, widget, 1)
        assert widget.session.boxes.labels[-1] == "plate"
        press(Qt.Key.Key_1)
        picked[i] = widget.session.boxes
        if i < 3:
            press(Qt.Key.Key_D)
            wait_image(widget, qtbot, i + 1)
            assert viewer.layers.selection.active is widget.annotator.view.layer(
                "picks"
            )
    # every image (colour, grey, 16-bit grey) in the one RGB image layer
    assert fm.image.rgb and fm.image.data.shape[-1] == 3
    assert [ly for ly in viewer.layers if ly._type_string == "image"] == [fm.image]
    for i in (2, 1, 0):
        press(Qt.Key.Key_A)
        wait_image(widget, qtbot, i)
        boxes = widget.session.boxes  # each image kept its boxes (masks added)
        assert boxes.labels == picked[i].labels == ("cup", "plate")
        np.testing.assert_array_equal(boxes.xyxy, picked[i].xyxy)
    csv = mixed / "annotations" / "3-grey16.csv"
    qtbot.waitUntil(csv.exists, timeout=TIMEOUT)

    # choose a class with the mouse, then press d: the image changes and
    # the drop-down took no key ("cupd" is no class)
    before = (mixed / "classes.txt").read_text()
    combo = widget.box_label.native
    QTest.mouseClick(combo, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: combo.view().isVisible(), timeout=10_000)
    settle(600)  # a release right after the popup opens is ignored by Qt
    view = combo.view()
    rect = view.visualRect(view.model().index(2, 0))  # "spoon"
    QTest.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.waitUntil(lambda: not view.isVisible(), timeout=10_000)
    assert widget.box_label.value == "spoon"
    press(Qt.Key.Key_D)
    wait_image(widget, qtbot, 1)
    assert widget.box_label.value == "spoon"
    assert (mixed / "classes.txt").read_text() == before

    # a notification about one image does not outlive it
    widget.notify("about this image", "warning")
    qtbot.waitUntil(lambda: bool(toasts(viewer)), timeout=10_000)
    shown = time.perf_counter()
    press(Qt.Key.Key_D)
    wait_image(widget, qtbot, 2)
    qtbot.waitUntil(lambda: not toasts(viewer), timeout=1_500)
    assert time.perf_counter() - shown < 3.5  # napari's own dismissal: 4 s


def toasts(viewer):
    """The plugin's napari notifications on screen."""
    from qtpy.QtWidgets import QWidget

    return [
        w
        for w in canvas_widget(viewer).findChildren(QWidget)
        if type(w).__name__ == "NapariQtNotification"
        and w.isVisible()
        and w.message.text().startswith("SAM boxes:")
    ]


def test_keys_work_whichever_layer_is_active(
    make_napari_viewer, mixed, structured_ckpt, tmp_path, qtbot
):
    viewer, widget = shown_folder(
        make_napari_viewer, mixed, structured_ckpt, tmp_path / "cache", qtbot, pps=4
    )
    click_pick(viewer, widget)
    click_pick(viewer, widget, 1)
    view = widget.annotator.view
    boxes = view.layer("boxes")
    image = viewer.layers[widget.folder_mode.session.name]

    # the boxes layer active in napari's select mode: 3 is a class, never
    # napari's "delete selected"; d moves on instead of switching modes
    viewer.layers.selection.active = boxes
    boxes.mode = "select"
    boxes.selected_data = {0}
    press(Qt.Key.Key_3)
    assert len(widget.session.boxes) == 2
    assert widget.session.boxes.labels == ("spoon", "cup")  # relabelled
    press(Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # one undo step
    assert widget.session.boxes.labels == ("cup", "cup")
    boxes.selected_data = {1}
    press(Qt.Key.Key_Delete)
    assert len(widget.session.boxes) == 1
    press(Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert len(widget.session.boxes) == 2
    # with the image layer active, clicks still pick and keys still work
    viewer.layers.selection.active = image
    click_pick(viewer, widget, 2)
    assert len(widget.session.boxes) == 3
    press(Qt.Key.Key_D)
    wait_image(widget, qtbot, 1)
    # Tab selects the next box and centres the view on it
    press(Qt.Key.Key_A)
    wait_image(widget, qtbot, 0)
    press(Qt.Key.Key_Tab)
    assert widget.annotator.selected() == [0]
    x0, y0, x1, y1 = widget.session.boxes.xyxy[0]
    np.testing.assert_allclose(
        viewer.camera.center[-2:], [(y0 + y1) / 2, (x0 + x1) / 2], atol=1
    )
    press(Qt.Key.Key_Tab)
    assert widget.annotator.selected() == [1]
    assert widget.box_list.selected_rows() == [1]
    # a renamed layer still works: it is kept by reference
    boxes.name = "renamed by the user"
    press(Qt.Key.Key_Delete)
    assert len(widget.session.boxes) == 2 and len(boxes.data) == 2


def test_the_box_list_selects_centres_relabels_and_deletes(
    make_napari_viewer, mixed, structured_ckpt, tmp_path, qtbot
):
    viewer, widget = shown_folder(
        make_napari_viewer, mixed, structured_ckpt, tmp_path / "cache", qtbot, pps=4
    )
    for k in range(3):
        click_pick(viewer, widget, k)
    table = widget.box_list
    assert table.model().rowCount() == 3
    assert table.model().index(1, 0).data() == "cup"
    rect = table.visualRect(table.model().index(1, 1))
    QTest.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    settle()
    assert widget.annotator.selected() == [1]
    x0, y0, x1, y1 = widget.session.boxes.xyxy[1]
    np.testing.assert_allclose(
        viewer.camera.center[-2:], [(y0 + y1) / 2, (x0 + x1) / 2], atol=1
    )
    assert QApplication.focusWidget() is not table  # keys stay free
    press(Qt.Key.Key_2)  # a digit with a box selected: one undoable relabel
    assert widget.session.boxes.labels == ("cup", "plate", "cup")
    assert table.model().index(1, 0).data() == "plate"
    # the class cell: a double-click offers the classes; choosing one is a
    # relabel, and the keyboard goes straight back to the annotation
    cell = table.visualRect(table.model().index(0, 0)).center()
    QTest.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=cell)
    QTest.mouseDClick(table.viewport(), Qt.MouseButton.LeftButton, pos=cell)
    qtbot.waitUntil(lambda: table.findChild(QComboBox) is not None, timeout=5000)
    combo = table.findChild(QComboBox)
    qtbot.waitUntil(lambda: combo.view().isVisible(), timeout=5000)
    settle(600)
    view = combo.view()
    rect = view.visualRect(view.model().index(2, 0))  # "spoon"
    QTest.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.waitUntil(lambda: widget.session.boxes.labels[0] == "spoon", timeout=5000)
    assert widget.session.boxes.labels == ("spoon", "plate", "cup")
    assert widget.box_label.value == "cup"  # the current class is unchanged
    assert QApplication.focusWidget() is canvas_widget(viewer)
    press(Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert widget.session.boxes.labels == ("cup", "plate", "cup")
    rect = table.visualRect(table.model().index(2, 1))
    QTest.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    settle()
    press(Qt.Key.Key_Backspace)
    assert widget.session.boxes.labels == ("cup", "plate")
    assert table.model().rowCount() == 2


def test_an_image_with_no_boxes_marked_done_counts_and_exports(
    make_napari_viewer, mixed, structured_ckpt, tmp_path, qtbot
):
    from napari_samboxes.cli import main

    viewer, widget = shown_folder(
        make_napari_viewer, mixed, structured_ckpt, tmp_path / "cache", qtbot, pps=2
    )
    press(Qt.Key.Key_D)
    wait_image(widget, qtbot, 1)
    assert "image 2 of 4, 0 annotated" in widget.folder_progress.value
    assert QApplication.focusWidget() is canvas_widget(viewer)  # given back
    press(Qt.Key.Key_Space)  # done, with no boxes
    assert "image 2 of 4, 1 annotated: 2-grey.png (done)" in (
        widget.folder_progress.value
    )
    assert "image done: press d" in widget.status.value
    widget.shutdown("restart")

    # a restart: the flag is read back from disk and counted
    viewer2 = make_napari_viewer(show=True)
    again = make_widget(viewer2, structured_ckpt, tmp_path / "cache", pps=2)
    again.folder.value = str(mixed)
    wait_image(again, qtbot, 0)
    assert "image 1 of 4, 1 annotated" in again.folder_progress.value
    again.next_unannotated.native.click()  # skips the done image
    wait_image(again, qtbot, 2)
    assert json.loads((mixed / "annotations" / "done.json").read_text()) == {
        "done": ["2-grey.png"]
    }
    for fmt in ("yolo", "voc", "coco"):
        out = tmp_path / f"out-{fmt}"
        assert main(["export", str(mixed), "--format", fmt, "--out", str(out)]) == 0
    (label,) = (tmp_path / "out-yolo").rglob("2-grey.txt")
    assert label.read_text() == ""
    (xml,) = (tmp_path / "out-voc").rglob("2-grey.xml")
    assert "<object>" not in xml.read_text()
    (coco,) = (tmp_path / "out-coco").rglob("*.json")
    doc = json.loads(coco.read_text())
    (im,) = [i for i in doc["images"] if i["file_name"].endswith("2-grey.png")]
    assert not [a for a in doc["annotations"] if a["image_id"] == im["id"]]


def test_a_users_layer_being_edited_keeps_napari_keys(
    make_napari_viewer, mixed, structured_ckpt, tmp_path, qtbot
):
    """The plugin's keys act on a user's layer only while it is not being
    edited: a Labels brush keeps napari's `]` and Ctrl+Z."""
    viewer, widget = shown_folder(
        make_napari_viewer, mixed, structured_ckpt, tmp_path / "cache", qtbot
    )
    labels = viewer.add_labels(np.zeros((192, 256), np.uint8), name="mine")
    viewer.layers.selection.active = labels
    labels.mode = "paint"
    labels.brush_size = 5
    press(Qt.Key.Key_BracketRight)  # napari: a larger brush
    assert labels.brush_size > 5
    labels.paint((10, 10), 3)
    assert labels.data[10, 10] == 3
    press(Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # napari's undo
    assert labels.data[10, 10] == 0
    press(Qt.Key.Key_D)  # not the plugin's while painting
    assert widget.folder_mode.target == 0
    labels.mode = "pan_zoom"  # not being edited: the plugin's keys
    press(Qt.Key.Key_D)
    wait_image(widget, qtbot, 1)


def test_two_panels_keep_their_keys_and_give_them_back(
    make_napari_viewer, mixed, structured_ckpt, tmp_path, qtbot
):
    from napari.utils.key_bindings import KeyBinding

    viewer, first = shown_folder(
        make_napari_viewer, mixed, structured_ckpt, tmp_path / "cache", qtbot
    )
    d = KeyBinding.from_str("d")
    assert getattr(viewer.keymap.get(d), "samboxes", False)
    second = make_widget(viewer, structured_ckpt, tmp_path / "cache2")
    first.shutdown("closed")  # the first panel goes: the second keeps its keys
    handler = viewer.keymap[d]
    assert getattr(handler, "samboxes", False)
    said = []
    second.notify = lambda text, level="info": said.append(text)
    settle()
    assert QApplication.focusWidget() is canvas_widget(viewer)  # not the dock's
    press(Qt.Key.Key_D)  # the second panel's d: it has no folder open
    assert said and "open a folder first" in said[-1]
    second.shutdown("closed")
    assert viewer.keymap.get(d) is None  # as napari had it
