"""Several images, several panels: edits land on the image they were made
in, and a closed panel touches nothing (real viewer, real checkpoint)."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtWidgets import QApplication

from gui_helpers import TIMEOUT, make_widget, photo_run, press_key, run_and_wait
from napari_samboxes.formats.boxtable import read_box_table


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("layer-mode-cache")


def settle():
    """Let napari and the plugin finish what they deferred to the event loop."""
    for _ in range(3):
        QApplication.processEvents()


def pick(viewer, name, box):
    picks = viewer.layers[f"{name} picks"]
    for p in np.asarray(box).reshape(2, 2):
        picks.add(p[::-1])


@pytest.fixture
def two(make_napari_viewer, photo, structured_ckpt, shared_cache, qtbot):
    """Layer mode: two boxes on 'photo', then a run and one box on 'other'."""
    viewer, w = photo_run(
        make_napari_viewer(), photo, structured_ckpt, shared_cache, qtbot
    )
    c = w.session.candidates
    w.box_label.value = "cat"
    pick(viewer, "photo", c.boxes[0])
    pick(viewer, "photo", c.boxes[-1])
    w.image.value = viewer.add_image(photo, name="other", rgb=True)
    assert run_and_wait(w, qtbot) == "cached"
    pick(viewer, "other", c.boxes[0])
    assert len(viewer.layers["photo boxes"].data) == 2
    assert len(viewer.layers["other boxes"].data) == 1
    return viewer, w


def back_to_photo(viewer, w, qtbot):
    w.image.value = viewer.layers["photo"]
    assert run_and_wait(w, qtbot) == "cached"


def test_a_paste_in_another_images_layer_is_kept(two, qtbot):
    viewer, w = two
    first = viewer.layers["photo boxes"]
    first.mode = "select"
    first.selected_data = {0}
    first._copy_data()  # Ctrl+C, Ctrl+V
    first._paste_data()
    settle()
    assert len(w.session.boxes) == 1  # the current image ('other') untouched
    back_to_photo(viewer, w, qtbot)
    assert len(w.session.boxes) == 3
    pick(viewer, "photo", w.session.candidates.boxes[1])
    assert len(first.data) == 4


def test_undo_in_another_images_layer_undoes_that_image(two, qtbot):
    viewer, w = two
    first = viewer.layers["photo boxes"]
    first.selected_data = {0}
    first.remove_selected()
    settle()
    assert len(first.data) == 1
    press_key(first, "Control-Z")
    settle()
    assert len(first.data) == 2
    assert len(w.session.boxes) == len(viewer.layers["other boxes"].data) == 1


def test_a_bad_shape_in_another_images_layer_is_undone(two, qtbot):
    viewer, w = two
    first = viewer.layers["photo boxes"]
    bad = np.asarray(first.data[0]).copy()
    bad[0, 0] = np.nan
    first.add_rectangles(bad)
    settle()
    assert len(first.data) == 2


def test_a_reopened_panel_keeps_the_boxes_in_the_layer(
    two, structured_ckpt, shared_cache, qtbot
):
    viewer, w = two
    w.shutdown("dock closed")
    w2 = make_widget(viewer, structured_ckpt, shared_cache)
    back_to_photo(viewer, w2, qtbot)
    pick(viewer, "photo", w2.session.candidates.boxes[1])
    assert len(viewer.layers["photo boxes"].data) == 3


def test_a_closed_panel_touches_no_layer(two, structured_ckpt, shared_cache, qtbot):
    viewer, w = two
    w.shutdown("dock closed")
    w2 = make_widget(viewer, structured_ckpt, shared_cache)
    w2.image.value = viewer.layers["other"]
    assert run_and_wait(w2, qtbot) == "cached"
    c = w2.session.candidates
    pick(viewer, "other", c.boxes[2])
    other = viewer.layers["other boxes"]
    n_other = len(other.data)
    first = viewer.layers["photo boxes"]
    first.selected_data = {0}
    first.remove_selected()
    settle()
    assert len(other.data) == n_other
    assert len(w2.session.boxes) == n_other
    # the closed panel no longer follows the mouse nor binds keys
    assert w.mode._on_move not in viewer.mouse_move_callbacks
    assert w.mode._on_drag not in viewer.mouse_drag_callbacks
    assert not w.mode.active


def test_a_folder_edit_after_a_run_on_another_image_is_saved(
    make_napari_viewer, tmp_path, photo, structured_ckpt, shared_cache, qtbot
):
    from PIL import Image

    folder = tmp_path / "shots"
    folder.mkdir()
    for i, (r, c) in enumerate([(0, 0), (40, 60)]):
        Image.fromarray(photo[r : r + 96, c : c + 128]).save(folder / f"img{i + 1}.png")
    viewer = make_napari_viewer()
    w = make_widget(viewer, structured_ckpt, shared_cache, pps=2)
    w.folder.value = str(folder)
    qtbot.waitUntil(
        lambda: w.current_run is None and len(w.session.candidates) > 0,
        timeout=TIMEOUT,
    )
    c = w.session.candidates
    pick(viewer, "shots", c.boxes[0])
    pick(viewer, "shots", c.boxes[-1])
    csv = folder / "annotations" / "img1.csv"
    qtbot.waitUntil(lambda: csv.exists() and len(read_box_table(csv)) == 2)
    w.image.value = viewer.add_image(photo, name="photo", rgb=True)
    assert run_and_wait(w, qtbot) in ("done", "cached")
    shots = viewer.layers["shots boxes"]
    shots.selected_data = {0}
    shots.remove_selected()
    qtbot.waitUntil(lambda: len(read_box_table(csv)) == 1, timeout=5000)


def test_delete_and_digits_act_on_the_layer_the_key_is_pressed_in(two, qtbot):
    viewer, w = two
    first = viewer.layers["photo boxes"]
    other = viewer.layers["other boxes"]
    other.selected_data = {0}  # a box left selected in the shown image
    first.selected_data = {1}
    press_key(first, "Delete")
    settle()
    assert len(first.data) == 1 and len(other.data) == 1
    first.selected_data = {0}
    w.box_label.value = "dog"
    press_key(first, "2")  # the second class ("dog") for the selected box
    settle()
    assert list(first.features["label"]) == ["dog"]
    assert list(other.features["label"]) == ["cat"]
    press_key(first, "Control-Z")
    press_key(first, "Control-Z")
    settle()
    assert len(first.data) == 2 and len(other.data) == 1
