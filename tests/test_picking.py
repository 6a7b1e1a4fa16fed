"""Picking that corrects itself, in a real viewer: undo/redo of every edit,
stepping through nested candidates, display modes, prompt fallback, tighten.

Outcomes are checked on layer data and on the session's boxes; the model is
the real vit_t with the test checkpoints.
"""

from __future__ import annotations

import numpy as np
import pytest

from gui_helpers import (
    TIMEOUT,
    layer_boxes,
    make_widget,
    notes,
    photo_run,
    press_key,
    run_and_wait,
)
from napari_samboxes import engine, select_box
from napari_samboxes.geometry import boxes_from_shapes, shapes_from_boxes
from napari_samboxes.select import containing


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One candidate cache for the module: the structured run is made once."""
    return tmp_path_factory.mktemp("picking-cache")


@pytest.fixture
def ran(make_napari_viewer, photo, structured_ckpt, shared_cache, qtbot):
    return photo_run(make_napari_viewer(), photo, structured_ckpt, shared_cache, qtbot)


def nested(c):
    """Two points inside a candidate nested in larger ones (x, y)."""
    chains = [
        containing(c.boxes, c.boxes[i].reshape(2, 2)).sum() for i in range(len(c))
    ]
    i = int(np.argmax(chains))
    x0, y0, x1, y1 = c.boxes[i]
    return np.array(
        [
            [x0 + 0.3 * (x1 - x0), y0 + 0.3 * (y1 - y0)],
            [x1 - 0.3 * (x1 - x0), y1 - 0.3 * (y1 - y0)],
        ]
    )


def click_pick(viewer, pts_xy, name="photo"):
    picks = viewer.layers[f"{name} picks"]
    for p in pts_xy:
        picks.add(p[::-1])


def state(layer):
    return layer_boxes(layer).tolist(), list(layer.features["label"])


def test_undo_redo_pick_delete_relabel_move(ran, qtbot):
    viewer, widget = ran
    emitted = []
    widget.boxes_changed.connect(emitted.append)
    c = widget.session.candidates
    states = [([], [])]
    widget.box_label.value = "cat"
    click_pick(viewer, nested(c))
    boxes = viewer.layers["photo boxes"]
    states.append(state(boxes))
    click_pick(viewer, c.boxes[-1].reshape(2, 2))  # a second box
    states.append(state(boxes))
    assert len(states[-1][0]) == 2
    boxes.selected_data = {0}
    boxes.remove_selected()  # the napari way
    qtbot.waitUntil(lambda: len(widget.session.boxes) == 1, timeout=TIMEOUT)
    states.append(state(boxes))
    boxes.selected_data = {0}
    widget.box_label.value = "dog"
    widget.relabel.native.click()
    states.append(state(boxes))
    assert states[-1][1] == ["dog"]
    moved = [np.asarray(d) + [3.0, 5.0] for d in boxes.data]
    boxes.data = moved  # emits the data event with action "changed"
    qtbot.waitUntil(
        lambda: widget.session.boxes.xyxy.tolist() != states[-1][0], timeout=TIMEOUT
    )
    qtbot.wait(10)  # the redraw after a napari edit is queued
    states.append(state(boxes))
    assert states[-1][0][0] == [
        v + d for v, d in zip(states[-2][0][0], (5, 3, 5, 3), strict=True)
    ]
    assert states[-1][1] == ["dog"]
    for want in reversed(states[:-1]):
        widget.undo.native.click()
        assert state(boxes) == want
        assert emitted[-1].xyxy.tolist() == want[0]  # the table follows
    for want in states[1:3]:
        press_key(boxes, "Control-Shift-Z")  # redo by key on the boxes layer
        assert state(boxes) == want
    press_key(viewer.layers["photo picks"], "Control-Z")  # undo on the picks layer
    assert state(boxes) == states[1]
    widget.redo.native.click()
    assert state(boxes) == states[2] and list(emitted[-1].labels) == states[2][1]


def test_smaller_and_larger_walk_the_nested_chain(ran):
    viewer, widget = ran
    c = widget.session.candidates
    pts = nested(c)
    chain = c.boxes[containing(c.boxes, pts)]
    assert len(chain) >= 3
    widget.box_label.value = "cup"
    click_pick(viewer, pts)
    boxes = viewer.layers["photo boxes"]
    seen = [layer_boxes(boxes)[0].tolist()]
    for _ in range(len(chain) - 1):
        widget.larger.native.click()
        seen.append(layer_boxes(boxes)[0].tolist())
    assert seen == chain.tolist()
    widget.larger.native.click()
    assert "largest" in widget.status.value and len(boxes.data) == 1
    press_key(viewer.layers["photo picks"], "[")
    widget.smaller.native.click()
    assert layer_boxes(boxes)[0].tolist() == chain[-3].tolist()
    assert list(boxes.features["label"]) == ["cup"]


def test_display_modes(ran):
    viewer, widget = ran
    c = widget.session.candidates
    cand = None  # drawn only while "all" candidates are shown
    x0, y0, x1, y1 = c.boxes[0]
    cursor = np.array([(y0 + y1) / 2, (x0 + x1) / 2])  # row, column
    under = c.boxes[select_box(c, cursor[None, ::-1])]
    for mode, visible, shown in [
        ("under cursor", False, under),
        ("all", True, None),
        ("none", False, None),
    ]:
        widget.show_candidates.value = mode
        cand = viewer.layers["photo candidates"] if mode == "all" else cand
        assert (cand is not None and cand.visible) is visible
        got = widget.annotator.preview(cursor)
        preview = viewer.layers["photo preview"]
        if shown is None:
            assert got is None and len(preview.data) == 0
        else:
            np.testing.assert_array_equal(layer_boxes(preview), [shown])
        assert len(viewer.layers["photo boxes"].data) == 0  # never a box
    pts = nested(c)
    viewer.layers["photo picks"].add(pts[0, ::-1])  # one pick: follow the cursor
    got = widget.annotator.preview(pts[1, ::-1])
    np.testing.assert_array_equal(got, c.boxes[select_box(c, pts)])
    np.testing.assert_array_equal(layer_boxes(viewer.layers["photo preview"]), [got])


def test_prompt_fallback_reuses_the_embedding(
    make_napari_viewer, photo, random_ckpt, tmp_path, qtbot, monkeypatch
):
    viewer = make_napari_viewer()
    viewer.add_image(photo, name="photo", rgb=True)
    widget = make_widget(viewer, random_ckpt, tmp_path / "cache", pps=2)
    encodes = []
    real = engine.encode_image
    monkeypatch.setattr(
        engine, "encode_image", lambda *a, **k: encodes.append(1) or real(*a, **k)
    )
    said = notes(monkeypatch)
    assert run_and_wait(widget, qtbot) == "done" and len(encodes) == 1
    assert len(widget.session.candidates) == 0  # random weights: none pass
    emitted = []
    widget.boxes_changed.connect(emitted.append)
    pts = np.array([[40.0, 30.0], [120.0, 100.0]])
    click_pick(viewer, pts)
    qtbot.waitUntil(lambda: bool(emitted), timeout=TIMEOUT)
    from napari_samboxes.pipeline import get_model

    model = get_model(str(random_ckpt), "auto")
    want, iou = engine.prompt_boxes(
        model, widget.session.embedding, [[40, 30, 120, 100]]
    )
    boxes = viewer.layers["photo boxes"]
    np.testing.assert_array_equal(layer_boxes(boxes), want)
    assert list(boxes.features["source"]) == ["prompt"]
    assert boxes.features["score"][0] == pytest.approx(float(iou[0]))
    assert "box from SAM" in said["info"][-1]
    assert len(encodes) == 1  # no re-encode
    # a cached run loads the embedding stored next to the candidates
    assert run_and_wait(widget, qtbot) == "cached" and len(encodes) == 1
    for n in (2, 3):
        click_pick(viewer, pts)
        qtbot.waitUntil(lambda n=n: len(widget.session.boxes) == n, timeout=TIMEOUT)
    assert len(encodes) == 1 and len(boxes.data) == 3  # never re-encoded


def test_tighten_moves_a_hand_drawn_box_onto_the_candidate(ran, qtbot, monkeypatch):
    viewer, widget = ran
    said = notes(monkeypatch)
    c = widget.session.candidates
    click_pick(viewer, c.boxes[0].reshape(2, 2))
    boxes = viewer.layers["photo boxes"]
    target = c.boxes[len(c) // 2]
    near = target + [2, -1, -1, 2]
    boxes.add_rectangles(shapes_from_boxes(near[None])[0])
    qtbot.waitUntil(lambda: len(widget.session.boxes) == 2, timeout=TIMEOUT)
    qtbot.wait(10)
    before = layer_boxes(boxes).tolist()
    assert widget.session.boxes.sources == ("candidate", "hand")
    widget.tighten.native.click()
    np.testing.assert_array_equal(layer_boxes(boxes), [c.boxes[0], target])
    assert list(boxes.features["source"]) == ["candidate", "candidate"]
    assert "tightened 1 box(es), by at most 2 px" in said["info"][-1]
    widget.undo.native.click()
    assert layer_boxes(boxes).tolist() == before


def labels_of(widget, layer):
    return list(widget.session.boxes.labels), [str(v) for v in layer.features["label"]]


def test_label_edits_made_in_napari_are_undoable_relabels(ran, qtbot):
    """``layer.features = df``, an in-place edit announced with
    ``events.features()``, ``current_properties`` on a selection and napari's
    features table widget all reach the session; undo walks them back."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication

    viewer, widget = ran
    emitted = []
    widget.boxes_changed.connect(emitted.append)
    c = widget.session.candidates
    widget.box_label.value = "cat"
    click_pick(viewer, c.boxes[0].reshape(2, 2))
    click_pick(viewer, c.boxes[-1].reshape(2, 2))
    boxes = viewer.layers["photo boxes"]
    scores = list(widget.session.boxes.scores)
    seen = [labels_of(widget, boxes)]
    assert seen[0] == (["cat", "cat"], ["cat", "cat"])

    df = boxes.features.copy()
    df.loc[0, "label"] = "zebra"  # a class nobody has named yet
    boxes.features = df
    seen.append(labels_of(widget, boxes))
    assert seen[-1] == (["zebra", "cat"], ["zebra", "cat"])
    assert "zebra" in widget.box_label.choices
    assert list(emitted[-1].labels) == ["zebra", "cat"]  # autosave follows

    boxes.features.loc[1, "label"] = "dog"
    boxes.events.features()
    seen.append(labels_of(widget, boxes))
    assert seen[-1] == (["zebra", "dog"], ["zebra", "dog"])

    boxes.mode = "select"
    boxes.selected_data = {0, 1}
    boxes.current_properties = {
        "label": np.array(["owl"]),
        "score": np.array([0.0]),
        "source": np.array(["hand"]),
    }
    seen.append(labels_of(widget, boxes))
    assert seen[-1] == (["owl", "owl"], ["owl", "owl"])
    # only the label is taken: score and source come back from the session
    assert list(boxes.features["score"]) == pytest.approx(scores)
    assert list(boxes.features["source"]) == ["candidate", "candidate"]

    # napari's features table writes the cell into layer.features in place
    # and emits no layer event: the plugin listens to the table's model
    # the annotator selects the box on the canvas first, then opens the table
    # (no selection change follows: the table is found when it takes the
    # focus, as a click into a cell gives it; a hidden test window gets no
    # focus, so Qt's signal is sent as Qt would)
    viewer.layers.selection.active = boxes
    boxes.selected_data = {1}
    dock, table = viewer.window.add_plugin_dock_widget(
        "napari", "Features table widget"
    )
    table.toggle.setChecked(True)  # "editable"
    QApplication.instance().focusChanged.emit(None, table.table)
    view = table.table
    horizontal = Qt.Orientation.Horizontal
    col = [view.model().headerData(i, horizontal) for i in range(4)]
    cell = view.model().index(1, col.index("label"))
    view.selectionModel().select(cell, view.selectionModel().SelectionFlag.Select)
    assert boxes.selected_data == {1}
    assert view.model().setData(cell, "heron")  # as the cell editor does
    qtbot.waitUntil(lambda: widget.session.boxes.labels[1] == "heron", timeout=TIMEOUT)
    seen.append(labels_of(widget, boxes))
    assert seen[-1] == (["owl", "heron"], ["owl", "heron"])
    assert "heron" in widget.box_label.choices
    labels = viewer.layers["photo labels"]  # the text drawn on the canvas
    assert list(labels.features["label"]) == ["owl", "heron"]

    for want in reversed(seen[:-1]):
        widget.undo.native.click()
        assert labels_of(widget, boxes) == want
        assert list(emitted[-1].labels) == want[0]
    widget.redo.native.click()
    assert labels_of(widget, boxes) == seen[1]


def test_pasted_boxes_reach_the_session(ran, qtbot):
    """napari's copy and paste announce the new shapes with ``features``
    alone (no data event): they still become one undoable change, and a
    later pick keeps them."""
    viewer, widget = ran
    c = widget.session.candidates
    widget.box_label.value = "cat"
    click_pick(viewer, c.boxes[0].reshape(2, 2))
    boxes = viewer.layers["photo boxes"]
    boxes.mode = "select"
    boxes.selected_data = {0}
    boxes._copy_data()  # what Ctrl+C / Ctrl+V call
    boxes._paste_data()
    qtbot.waitUntil(lambda: len(widget.session.boxes) == 2, timeout=TIMEOUT)
    np.testing.assert_array_equal(
        widget.session.boxes.xyxy[1], widget.session.boxes.xyxy[0]
    )
    click_pick(viewer, c.boxes[-1].reshape(2, 2))
    assert len(boxes.data) == len(widget.session.boxes) == 3
    widget.undo.native.click()
    widget.undo.native.click()
    assert len(boxes.data) == len(widget.session.boxes) == 1


def test_a_reopened_widget_gets_the_label_edits(
    ran, structured_ckpt, shared_cache, qtbot
):
    """After the dock's close button, a new widget owns the boxes layer:
    napari's label edits reach it, not the closed one."""
    viewer, first = ran
    c = first.session.candidates
    click_pick(viewer, c.boxes[0].reshape(2, 2))
    first.shutdown("closed by the test")
    second = make_widget(viewer, structured_ckpt, shared_cache)
    assert run_and_wait(second, qtbot) == "cached"
    second.box_label.value = "cat"
    click_pick(viewer, c.boxes[0].reshape(2, 2))
    boxes = viewer.layers["photo boxes"]
    df = boxes.features.copy()
    df.loc[0, "label"] = "zebra"
    boxes.features = df
    assert second.session.boxes.labels[0] == "zebra"
    assert "zebra" in second.box_label.choices


def test_edits_in_another_images_boxes_layer_are_kept(ran, qtbot):
    """Layer mode: after a run on a second image, a delete and a relabel in
    the first image's boxes layer go to the first image's boxes; showing
    that image again keeps them."""
    viewer, widget = ran
    c = widget.session.candidates
    widget.box_label.value = "cat"
    click_pick(viewer, c.boxes[0].reshape(2, 2))
    click_pick(viewer, c.boxes[-1].reshape(2, 2))
    first = viewer.layers["photo boxes"]
    second_image = viewer.add_image(viewer.layers["photo"].data, name="other", rgb=True)
    widget.image.value = second_image
    assert run_and_wait(widget, qtbot) == "cached"
    click_pick(viewer, c.boxes[0].reshape(2, 2), "other")
    assert len(viewer.layers["other boxes"].data) == 1

    df = first.features.copy()
    df.loc[1, "label"] = "dog"
    first.features = df
    first.selected_data = {0}
    first.remove_selected()
    assert list(first.features["label"]) == ["dog"]
    assert widget.session.boxes.labels == ("cat",)  # the current image's

    widget.image.value = viewer.layers["photo"]
    assert run_and_wait(widget, qtbot) == "cached"
    assert widget.session.boxes.labels == ("dog",)
    assert list(viewer.layers["photo boxes"].features["label"]) == ["dog"]
    widget.undo.native.click()  # the delete, then the relabel, undone
    widget.undo.native.click()
    assert widget.session.boxes.labels == ("cat", "cat")


def test_label_edit_in_napari_reaches_the_folder_csv(
    make_napari_viewer, tmp_path, photo, structured_ckpt, shared_cache, qtbot
):
    from PIL import Image

    from napari_samboxes.formats.boxtable import (
        BoxTable,
        read_box_table,
        write_box_table,
    )

    d = tmp_path / "shots"
    (d / "annotations").mkdir(parents=True)
    Image.fromarray(photo).save(d / "img1.png")
    (d / "classes.txt").write_text("cup\n")
    csv = d / "annotations" / "img1.csv"
    write_box_table(
        csv,
        BoxTable(["cup"], np.array([[10.0, 20.0, 60.0, 90.0]]), np.array([0.9])),
    )
    viewer = make_napari_viewer()
    widget = make_widget(viewer, structured_ckpt, shared_cache)
    widget.folder.value = str(d)
    qtbot.waitUntil(lambda: widget.session.boxes.labels == ("cup",), timeout=TIMEOUT)
    boxes = widget.annotator.view.layer("boxes")
    df = boxes.features.copy()
    df.loc[0, "label"] = "mug"
    boxes.features = df
    qtbot.waitUntil(lambda: read_box_table(csv).labels == ["mug"], timeout=TIMEOUT)
    np.testing.assert_array_equal(read_box_table(csv).boxes, [[10, 20, 60, 90]])
    qtbot.waitUntil(
        lambda: (d / "classes.txt").read_text().split() == ["cup", "mug"],
        timeout=TIMEOUT,
    )
    widget.undo.native.click()
    qtbot.waitUntil(lambda: read_box_table(csv).labels == ["cup"], timeout=TIMEOUT)
    qtbot.waitUntil(lambda: widget.current_run is None, timeout=TIMEOUT)


def test_napari_tool_edits_become_boxes_as_an_annotator_means_them(
    ran, qtbot, monkeypatch
):
    """A click in the rectangle tool (a 2 x 2 dot) is no box; an ellipse is
    redrawn as its box; a box moved by hand becomes a hand box."""
    from qtpy.QtWidgets import QApplication

    viewer, widget = ran
    said = notes(monkeypatch)
    c = widget.session.candidates
    widget.box_label.value = "cat"
    click_pick(viewer, c.boxes[0].reshape(2, 2))
    boxes = viewer.layers["photo boxes"]
    boxes.add_rectangles(
        np.array([[50.0, 50.0], [50.0, 51.0], [51.0, 51.0], [51.0, 50.0]])
    )
    qtbot.waitUntil(lambda: len(boxes.data) == 1, timeout=TIMEOUT)
    assert len(widget.session.boxes) == 1
    assert "drag" in said["warning"][-1]
    corners = np.array([[20.0, 30.0], [20.0, 90.0], [60.0, 90.0], [60.0, 30.0]])
    boxes.add_ellipses(corners)
    qtbot.waitUntil(lambda: len(widget.session.boxes) == 2, timeout=TIMEOUT)
    for _ in range(3):
        QApplication.processEvents()
    assert list(boxes.shape_type) == ["rectangle", "rectangle"]
    want = np.round(boxes_from_shapes([corners])[0][0])
    np.testing.assert_array_equal(widget.session.boxes.xyxy[1], want)
    np.testing.assert_array_equal(layer_boxes(boxes)[1], want)
    assert widget.session.boxes.sources == ("candidate", "hand")
    boxes.data = [np.asarray(boxes.data[0]) + 4.0, boxes.data[1]]  # moved
    qtbot.waitUntil(
        lambda: widget.session.boxes.sources == ("hand", "hand"), timeout=TIMEOUT
    )
    assert np.isnan(widget.session.boxes.scores[0])
    np.testing.assert_array_equal(
        widget.session.boxes.xyxy[0], c.boxes[0] + [4, 4, 4, 4]
    )
