"""The Audit mode in a real, shown viewer, driven by real Qt key events
(``QTest``): Tab walks the flagged boxes largest problem first, each
selected with its suggestion in the preview layer; Enter takes the
suggestion (one undo step), Ctrl+Z brings the box back, Escape keeps."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt

from gui_helpers import activate, layer_boxes, make_widget, run_and_wait
from napari_samboxes._napari.audit import AuditMode
from napari_samboxes.boxes import Boxes
from napari_samboxes.tighten import iou_matrix
from test_annotation_mode import press


def audit_of(widget):
    """The panel's audit (made here if the panel does not make one)."""
    audit = getattr(widget, "audit_mode", None)
    if audit is None:
        audit = AuditMode(widget.annotator, widget.mode)
        widget["audit"].changed.connect(audit.toggle)
    return audit


def shifted_candidates(c, shifts, image_width):
    """Candidates that stay each one's nearest candidate when shifted right
    by each of ``shifts`` pixels (largest candidates first)."""
    chosen = []
    for j in np.argsort(-c.areas, kind="stable"):
        box = c.boxes[j]
        if any(np.array_equal(box, c.boxes[k]) for k in chosen):
            continue
        moved = box + [[s, 0, s, 0] for s in shifts]
        if moved[:, 2].max() >= image_width:
            continue
        iou = iou_matrix(moved, c.boxes)
        same = np.all(c.boxes == box, axis=1)
        if np.all(iou[:, same].max(axis=1) > iou[:, ~same].max(axis=1, initial=0)):
            chosen.append(int(j))
        if len(chosen) == 3:
            return [c.boxes[k].copy() for k in chosen]
    raise AssertionError("not enough candidates to audit")


def test_tab_walks_the_flagged_boxes_enter_accepts_ctrl_z_undoes(
    make_napari_viewer, photo, structured_ckpt, tmp_path, qtbot
):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(photo, name="photo", rgb=True)
    widget = make_widget(viewer, structured_ckpt, tmp_path / "cache")
    assert run_and_wait(widget, qtbot) in ("done", "cached")
    activate(viewer, qtbot)
    audit = audit_of(widget)
    a, s = widget.annotator, widget.session
    big, mid, exact = shifted_candidates(s.candidates, [3, 6], photo.shape[1])
    boxes = (
        Boxes()
        .added(big + [3, 0, 3, 0], "cup", source="hand")  # 3 px off
        .added(exact, "plate", source="hand")  # on its candidate
        .added(mid + [6, 0, 6, 0], "spoon", source="hand")  # 6 px off
    )
    a.apply(s.replace_all(boxes, "three boxes"))
    view = a.view

    def shown():
        """The selected rows and the box in the preview layer."""
        layer = view.layer("boxes")
        return sorted(layer.selected_data), layer_boxes(view.layer("preview"))

    press(Qt.Key.Key_Return)  # no audit: Enter does nothing
    assert not audit.active
    np.testing.assert_array_equal(s.boxes.xyxy, boxes.xyxy)
    widget["audit"].native.click()
    assert audit.active and len(audit.items) == 2  # the exact box is not flagged
    rows, preview = shown()  # the largest problem first: 6 px
    assert rows == [2] and "6 px" in widget.status.value
    np.testing.assert_array_equal(preview, [mid])
    press(Qt.Key.Key_Tab)
    rows, preview = shown()
    assert rows == [0] and "3 px" in widget.status.value
    np.testing.assert_array_equal(preview, [big])
    press(Qt.Key.Key_Tab)  # around again
    assert shown()[0] == [2]
    press(Qt.Key.Key_Backtab, Qt.KeyboardModifier.ShiftModifier)
    assert shown()[0] == [0]
    press(Qt.Key.Key_Return)  # take the suggestion for box 0
    np.testing.assert_array_equal(s.boxes.xyxy, [big, exact, mid + [6, 0, 6, 0]])
    assert s.boxes.sources == ("candidate", "hand", "hand")
    rows, preview = shown()  # on to the one left
    assert rows == [2] and len(audit.items) == 1
    np.testing.assert_array_equal(preview, [mid])
    press(Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # one undo step
    np.testing.assert_array_equal(
        s.boxes.xyxy, [big + [3, 0, 3, 0], exact, mid + [6, 0, 6, 0]]
    )
    np.testing.assert_array_equal(layer_boxes(view.layer("boxes")), s.boxes.xyxy)
    assert audit.active and len(audit.items) == 2
    assert shown()[0] == [0]  # the box whose change was undone is shown again
    press(Qt.Key.Key_Escape)  # keep box 0 as it is
    assert shown()[0] == [2] and len(audit.items) == 1
    press(Qt.Key.Key_Return)  # take box 2's: the last one, the audit ends
    np.testing.assert_array_equal(s.boxes.xyxy, [big + [3, 0, 3, 0], exact, mid])
    assert not audit.active and "audit done: 1 box(es) changed, 1 kept" in (
        widget.status.value
    )
    assert len(view.layer("preview").data) == 0
    # the keys are the annotation's again
    press(Qt.Key.Key_Tab)
    assert shown()[0] == [0] and "box 1 of 3" in widget.status.value
    press(Qt.Key.Key_Return)
    np.testing.assert_array_equal(s.boxes.xyxy, [big + [3, 0, 3, 0], exact, mid])
    assert not audit.active


def test_the_audit_needs_candidates_and_ends_with_another_image(
    make_napari_viewer, photo, structured_ckpt, tmp_path, qtbot
):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(photo, name="photo", rgb=True)
    widget = make_widget(viewer, structured_ckpt, tmp_path / "cache")
    audit = audit_of(widget)
    assert audit.start() == 0 and "press Run first" in widget.status.value
    assert run_and_wait(widget, qtbot) in ("done", "cached")
    assert audit.start() == 0 and "none of the 0 boxes" in widget.status.value
    a, s = widget.annotator, widget.session
    box = s.candidates.boxes[-1]
    a.apply(s.replace_all(Boxes().added(box + [0, 0, 0, -2], "cup"), "one box"))
    assert audit.start() == 1 and audit.active
    viewer.add_image(photo[::-1], name="other", rgb=True)
    assert run_and_wait(widget, qtbot, lambda: widget.start_run()) in (
        "done",
        "cached",
    )
    assert not audit.active and widget.mode.action("accept") is None
