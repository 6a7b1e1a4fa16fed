"""The Qt-free class list and folder session (no viewer)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from napari_samboxes.boxes import Boxes
from napari_samboxes.classes import DEFAULT_CLASS, PALETTE, ClassList, check_class_name
from napari_samboxes.folder import FolderSession
from napari_samboxes.formats.boxtable import read_box_table


def test_a_class_keeps_its_colour_across_sessions(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("cat\ndog\ncup\n")
    first, second = ClassList(), ClassList()
    first.load(path)
    second.add(["zebra"])  # another session, other classes added first
    second.load(path)
    assert first.colour("cup") == PALETTE[2]
    assert ClassList(["cat", "dog", "cup"]).colour("cup") == PALETTE[2]
    # a label outside the list: a colour from its name, the same every time
    assert ClassList().colour("heron") == ClassList(["x"]).colour("heron")


def test_placeholder_is_replaced_and_bad_names_refused():
    c = ClassList()
    assert c.names == (DEFAULT_CLASS,) and c.placeholder
    assert c.add(["cup", " cup ", "", "big\ncat", "bell\x07"]) == ["cup"]
    assert c.names == ("cup",) and c.nth(1) == "cup" and c.nth(2) is None
    for bad in ("", "a\nb", "a\u2028b", "x\x00"):
        with pytest.raises(ValueError):
            check_class_name(bad)


def test_saving_keeps_classes_another_tool_added(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("cat\ndog\n")
    c = ClassList()
    c.load(path)
    path.write_text("cat\ndog\nzebra\nhorse\n")  # an editor, meanwhile
    c.add(["cup"])
    c.save()
    assert path.read_text().split() == ["cat", "dog", "zebra", "horse", "cup"]
    assert c.names == ("cat", "dog", "zebra", "horse", "cup")


@pytest.fixture
def folder(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / name)
    (tmp_path / "classes.txt").write_text("cup\n")
    return tmp_path


def test_folder_session_counts_saves_and_done_flags(folder):
    s = FolderSession(folder)
    assert s.progress() == (0, 3) and s.classes.names == ("cup",)
    s.index = 0
    assert s.progress_text() == "image 1 of 3, 0 annotated: a.png"
    one = Boxes().added([1, 2, 3, 4], "cup")
    assert s.record(s.key(0), one) and not s.record(str(folder / "x.png"), one)
    assert s.pending and s.progress() == (1, 3)  # counted at once
    assert s.flush() == [] and not s.pending
    assert s.progress() == (1, 3)
    assert read_box_table(folder / "annotations" / "a.csv").labels == ["cup"]
    s.set_done(1)
    assert s.progress() == (2, 3) and s.next_unannotated(0) == 2
    s.index = 1
    assert s.progress_text() == "image 2 of 3, 2 annotated: b.png (done)"
    again = FolderSession(folder)  # a restart: counted from disk
    assert again.progress() == (2, 3) and again.is_done(1)
    s.record(s.key(0), Boxes())  # every box deleted: not annotated any more
    s.flush()
    assert s.progress() == (1, 3)
    s.set_done(1, False)
    assert s.progress() == (0, 3) and s.next_unannotated(2) == 0


def test_a_failed_save_stays_pending(folder):
    s = FolderSession(folder)
    (folder / "annotations").mkdir()
    (folder / "annotations" / "a.csv").mkdir()  # a folder where the file goes
    s.record(s.key(0), Boxes().added([1, 2, 3, 4], "cup"))
    errors = s.flush()
    assert len(errors) == 1 and "a.png" in errors[0] and s.pending
