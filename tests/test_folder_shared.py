"""Folder mode in a real viewer on folders shared with other tools (issue
18): a large folder opens through workers, Next steps past an image that
cannot be shown, a table changed by another tool is read again on return
and merged on save, never overwritten."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from gui_helpers import TIMEOUT, make_widget, notes, wait_image
from napari_samboxes._napari import widget as widget_module
from napari_samboxes.boxes import Boxes
from napari_samboxes.dataset import Dataset
from napari_samboxes.formats.boxtable import read_box_table, write_box_table


@pytest.fixture
def folder(tmp_path, photo):
    d = tmp_path / "shots"
    d.mkdir()
    Image.fromarray(photo[:120, :160]).save(d / "a.png")
    (d / "b.png").write_bytes(b"not an image at all")  # cannot be shown
    Image.fromarray(photo[40:160, 60:220]).save(d / "c.png")
    Image.fromarray(photo[:120, 100:260]).save(d / "d.png")
    return d


def hand(*rows):
    return Boxes(
        np.array([r[1:] for r in rows], float).reshape(-1, 4),
        tuple(r[0] for r in rows),
        np.full(len(rows), np.nan),
        ("hand",) * len(rows),
    )


def test_next_steps_past_images_that_cannot_be_shown(
    make_napari_viewer, folder, structured_ckpt, tmp_path, qtbot, monkeypatch
):
    """Reproduced: Next could not get past a deleted or unreadable image or
    a corrupt table."""
    ds = Dataset(folder)
    ds.annotations_dir.mkdir()
    (ds.annotations_dir / "c.csv").write_text("this is, not a box table\n")
    said = notes(monkeypatch)
    viewer = make_napari_viewer()
    widget = make_widget(viewer, structured_ckpt, tmp_path / "cache")
    widget.folder.value = str(folder)
    wait_image(widget, qtbot, 0)
    fm = widget.folder_mode
    assert fm.session.is_broken(2)
    assert "1 broken" in widget.folder_progress.value
    widget.mode.do("next_image")  # b.png unreadable, c.png broken: on to d
    qtbot.waitUntil(lambda: fm.index == 3, timeout=TIMEOUT)
    assert any("b.png: not shown" in n for n in said["error"]), said
    assert any("c.png: not shown" in n for n in said["error"]), said
    assert widget.folder_progress.value.startswith("image 4 of 4")
    # Next unannotated from d: a (0) is the only other one that can be shown
    widget.next_unannotated.changed.emit(True)
    qtbot.waitUntil(lambda: fm.index == 0, timeout=TIMEOUT)


def test_a_large_folder_opens_in_workers_and_counts_later(
    make_napari_viewer, folder, structured_ckpt, tmp_path, qtbot, monkeypatch
):
    monkeypatch.setattr(widget_module, "SYNC_OPEN_LIMIT", 1)
    (folder / "b.png").unlink()
    Dataset(folder).save_boxes("d.png", hand(("cat", 1, 1, 9, 9)).to_table())
    viewer = make_napari_viewer()
    widget = make_widget(viewer, structured_ckpt, tmp_path / "cache")
    widget.folder.value = str(folder)
    assert widget.folder_mode is None  # listed in a worker
    qtbot.waitUntil(lambda: widget.folder_mode is not None, timeout=TIMEOUT)
    wait_image(widget, qtbot, 0)
    qtbot.waitUntil(lambda: widget.folder_mode.session.counted, timeout=TIMEOUT)
    qtbot.waitUntil(
        lambda: "image 1 of 3, 1 annotated" in widget.folder_progress.value,
        timeout=TIMEOUT,
    )
    assert "cat" in widget.classes.names


def test_changes_by_another_tool_are_read_again_and_merged(
    make_napari_viewer, folder, structured_ckpt, tmp_path, qtbot
):
    (folder / "b.png").unlink()
    viewer = make_napari_viewer()
    widget = make_widget(viewer, structured_ckpt, tmp_path / "cache")
    widget.folder.value = str(folder)
    wait_image(widget, qtbot, 0)
    fm = widget.folder_mode
    ds = fm.session.dataset
    mine = hand(("cup", 2, 2, 20, 20))
    widget.annotator.apply(widget.session.replace_all(mine, "mine"))
    fm.flush()
    widget.mode.do("next_image")
    wait_image(widget, qtbot, 1)
    # another tool adds a box to a.png while c.png is shown
    write_box_table(
        ds.annotation_path("a.png"),
        hand(("cup", 2, 2, 20, 20), ("dog", 30, 30, 50, 50)).to_table(),
    )
    widget.mode.do("prev_image")
    wait_image(widget, qtbot, 0)
    assert widget.session.boxes.labels == ("cup", "dog")  # read again
    # and while a.png is shown, the tool changes it once more
    write_box_table(
        ds.annotation_path("a.png"),
        hand(
            ("cup", 2, 2, 20, 20), ("dog", 30, 30, 50, 50), ("owl", 5, 60, 15, 70)
        ).to_table(),
    )
    new = widget.session.boxes.added([60, 5, 80, 25], "cup", np.nan, "hand")
    widget.annotator.apply(widget.session.replace_all(new, "one more"))
    fm.flush()
    t = read_box_table(ds.annotation_path("a.png"))
    assert sorted(t.labels) == ["cup", "cup", "dog", "owl"]
    qtbot.waitUntil(lambda: len(widget.session.boxes) == 4, timeout=5000)
    assert sorted(widget.session.boxes.labels) == ["cup", "cup", "dog", "owl"]


def test_a_class_typed_in_the_panel_keeps_classes_added_in_an_editor(
    make_napari_viewer, folder, structured_ckpt, tmp_path, qtbot
):
    """Reproduced: adding zebra and horse in an editor during a session, then
    typing a new class "cup", left ``cat, dog, cup``."""
    (folder / "b.png").unlink()
    (folder / "classes.txt").write_text("cat\ndog\n")
    viewer = make_napari_viewer()
    widget = make_widget(viewer, structured_ckpt, tmp_path / "cache")
    widget.folder.value = str(folder)
    wait_image(widget, qtbot, 0)
    with open(folder / "classes.txt", "a") as f:  # the editor
        f.write("zebra\nhorse\n")
    widget.new_class.value = "cup"
    widget.new_class.native.returnPressed.emit()
    want = ["cat", "dog", "zebra", "horse", "cup"]
    on_file = (folder / "classes.txt").read_text().split()
    assert on_file == want, on_file
    assert list(widget.box_label.choices) == want, list(widget.box_label.choices)
    assert widget.box_label.value == "cup"
