"""Folders shared with other tools and people (issue 18): nothing written by
another process is overwritten, names and links never stop a folder, a
broken table is "broken", subfolders belong to the folder, and the
progress never re-reads every table. No viewer: the core only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from napari_samboxes.boxes import Boxes
from napari_samboxes.dataset import (
    BOXES,
    BROKEN,
    EMPTY,
    Dataset,
    list_images,
    read_classes,
)
from napari_samboxes.export import export_dataset
from napari_samboxes.folder import FolderSession
from napari_samboxes.formats.boxtable import read_box_table, write_box_table
from napari_samboxes.importing import import_dataset
from napari_samboxes.merge import merge_boxes


def image(path, w=40, h=30):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(path)
    return path


def boxes(*rows, source="hand"):
    return Boxes(
        np.array([r[1:] for r in rows], float).reshape(-1, 4),
        tuple(r[0] for r in rows),
        np.full(len(rows), np.nan),
        (source,) * len(rows),
    )


def on_disk(ds, name):
    t = read_box_table(ds.find_annotation(name))
    return sorted((lab, *map(int, b)) for lab, b in zip(t.labels, t.boxes, strict=True))


# -- never overwrite what was not loaded -------------------------------------


def test_a_pick_after_an_import_keeps_the_imported_boxes(tmp_path):
    """Reproduced: after ``import --overwrite`` wrote dog and bird, one more
    pick saved ``cat,cat`` and the imported boxes were gone."""
    image(tmp_path / "a.png")
    s = FolderSession(tmp_path)
    key = s.key(0)
    first = boxes(("cat", 1, 1, 5, 5))
    s.record(key, first)
    assert s.flush() == []
    s.read_boxes(0)  # the annotator is on the image, its table loaded
    # another tool replaces the table: dog and bird
    voc = tmp_path / "voc"
    voc.mkdir()
    (voc / "a.xml").write_text(
        "<annotation><filename>a.png</filename><size><width>40</width>"
        "<height>30</height><depth>3</depth></size>"
        + "".join(
            f"<object><name>{n}</name><bndbox><xmin>{x}</xmin><ymin>2</ymin>"
            f"<xmax>{x + 5}</xmax><ymax>9</ymax></bndbox></object>"
            for n, x in (("dog", 10), ("bird", 20))
        )
        + "</annotation>"
    )
    summary = import_dataset(voc, "voc", tmp_path, overwrite=True)
    assert summary.boxes == 2
    ds = s.dataset
    assert [lab for lab, *_ in on_disk(ds, "a.png")] == ["bird", "dog"]
    # one more pick in the session, saved
    s.record(key, first.added([1, 10, 5, 20], "cat", np.nan, "hand"))
    assert s.flush() == []
    labels = [lab for lab, *_ in on_disk(ds, "a.png")]
    assert sorted(labels) == ["bird", "cat", "dog"], labels
    notes = s.take_notes()
    assert len(notes) == 1 and "changed on disk" in notes[0], notes
    assert key in s.reloaded  # the view is given the merged boxes


def test_both_changing_one_box_keeps_both_versions_and_a_copy(tmp_path):
    image(tmp_path / "a.png")
    ds = Dataset(tmp_path)
    ds.save_boxes("a.png", boxes(("cat", 1, 1, 5, 5), ("dog", 9, 9, 20, 20)).to_table())
    s = FolderSession(tmp_path)
    base = s.read_boxes(0)
    # the other side moves the cat box; this session moves it elsewhere
    other = boxes(("cat", 2, 2, 6, 6), ("dog", 9, 9, 20, 20))
    write_box_table(ds.annotation_path("a.png"), other.to_table())
    ours = base.without([0]).added([3, 3, 8, 8], "cat", np.nan, "hand")
    s.record(s.key(0), ours)
    assert s.flush() == []
    assert on_disk(ds, "a.png") == [
        ("cat", 2, 2, 6, 6),
        ("cat", 3, 3, 8, 8),
        ("dog", 9, 9, 20, 20),
    ]
    copies = sorted(ds.annotations_dir.glob("a.conflict-*.csv"))
    assert len(copies) == 1
    assert Boxes.from_table(read_box_table(copies[0])) == other
    (note,) = s.take_notes()
    assert "both versions are kept" in note and copies[0].name in note


def test_merge_rules():
    base = boxes(("a", 0, 0, 1, 1), ("b", 0, 0, 2, 2))
    ours = boxes(("a", 0, 0, 1, 1), ("c", 0, 0, 3, 3))  # removed b, added c
    theirs = boxes(("b", 0, 0, 2, 2), ("d", 0, 0, 4, 4))  # removed a, added d
    m = merge_boxes(base, ours, theirs)
    assert m.boxes.labels == ("d", "c") and not m.conflict
    assert (m.theirs_added, m.theirs_removed) == (1, 1)
    # the same edit on both sides is made once
    same = merge_boxes(base, ours, ours)
    assert same.boxes == ours and not same.conflict
    # no base: the union, nothing doubled
    u = merge_boxes(None, boxes(("a", 0, 0, 1, 1), ("x", 1, 1, 2, 2)), base)
    assert u.boxes.labels == ("a", "b", "x")


def test_a_second_process_changes_the_table_and_classes_while_open(tmp_path):
    """Two processes on one folder: both processes' boxes and classes end on
    disk (done when of issue 18)."""
    image(tmp_path / "a.png")
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    first = FolderSession(tmp_path)
    shown = first.read_boxes(0)  # process 1 has the image open
    script = textwrap.dedent(
        f"""
        import numpy as np
        from napari_samboxes.folder import FolderSession
        s = FolderSession({str(tmp_path)!r})
        b = s.read_boxes(0).added([20, 2, 30, 12], "zebra", np.nan, "hand")
        s.record(s.key(0), b)
        assert s.flush() == []
        s.classes.add(["zebra", "horse"])
        s.classes.save()
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    # process 1 picks a box and adds a class, unaware of the other's
    first.record(first.key(0), shown.added([1, 1, 9, 9], "cup", np.nan, "hand"))
    assert first.flush() == []
    first.classes.add(["cup"])
    first.classes.save()
    ds = Dataset(tmp_path)
    assert on_disk(ds, "a.png") == [("cup", 1, 1, 9, 9), ("zebra", 20, 2, 30, 12)]
    assert read_classes(tmp_path / "classes.txt") == [
        "cat",
        "dog",
        "zebra",
        "horse",
        "cup",
    ]


def test_returning_to_an_image_changed_on_disk_reads_it_again(tmp_path):
    image(tmp_path / "a.png")
    s = FolderSession(tmp_path)
    s.read_boxes(0)
    assert not s.changed_on_disk(0)
    Dataset(tmp_path).save_boxes("a.png", boxes(("dog", 1, 1, 4, 4)).to_table())
    assert s.changed_on_disk(0)
    assert s.read_boxes(0).labels == ("dog",)
    assert not s.changed_on_disk(0)


# -- names, links, broken tables ----------------------------------------------


def test_a_long_stem_is_saved(tmp_path):
    """Reproduced: a stem of 234+ characters could never be saved (the
    temporary file name passed 255 bytes)."""
    name = "x" * 240 + ".png"
    image(tmp_path / name)
    s = FolderSession(tmp_path)
    s.record(s.key(0), boxes(("cat", 1, 1, 5, 5)))
    assert s.flush() == []
    assert on_disk(s.dataset, name) == [("cat", 1, 1, 5, 5)]
    assert not [p for p in s.dataset.annotations_dir.iterdir() if p.suffix == ".tmp"]


def test_looping_and_dangling_links_are_reported_and_skipped(tmp_path):
    """Reproduced: one looping link made view, export, import, tighten and
    propose refuse the whole folder."""
    image(tmp_path / "a.png")
    os.symlink("loop.png", tmp_path / "loop.png")
    os.symlink("missing.png", tmp_path / "gone.png")
    (tmp_path / "sub").mkdir()
    os.symlink("..", tmp_path / "sub" / "up")  # a folder loop
    problems: list[str] = []
    assert [p.name for p in list_images(tmp_path, problems=problems)] == ["a.png"]
    text = " ".join(problems)
    assert "loop.png" in text and "gone.png" in text and "sub/up" in text
    s = FolderSession(tmp_path)
    assert len(s) == 1 and any("gone.png" in p for p in s.problems)
    s.record(s.key(0), boxes(("cat", 1, 1, 5, 5)))
    assert s.flush() == []
    summary = export_dataset(tmp_path, "yolo", tmp_path.parent / "out")
    assert summary.images == 1 and summary.boxes == 1


def test_a_broken_table_is_broken_not_annotated(tmp_path):
    """Reproduced: a corrupt table counted as annotated, and Next
    unannotated could not get past it."""
    for n in "abc":
        image(tmp_path / f"{n}.png")
    ds = Dataset(tmp_path)
    ds.annotations_dir.mkdir()
    (ds.annotations_dir / "a.csv").write_bytes(b"\xff\xfe not a table")
    ds.save_boxes("c.png", boxes(("cat", 1, 1, 5, 5)).to_table())
    s = FolderSession(tmp_path)
    assert s.progress() == (1, 3)
    assert s.is_broken(0) and not s.is_annotated(0)
    assert s.next_unannotated(2) == 1  # past the broken a.png
    s.index = 0
    assert s.progress_text().endswith("a.png (broken table)")
    assert any("a.csv" in p and "broken" in p for p in s.problems)
    with pytest.raises(ValueError):
        s.read_boxes(0)


# -- subfolders ----------------------------------------------------------------


def test_subfolders_keep_their_path_in_tables_and_exports(tmp_path):
    image(tmp_path / "train" / "a.png")
    image(tmp_path / "val" / "a.png")
    image(tmp_path / "b.png")
    s = FolderSession(tmp_path)
    assert s.dataset.names == ["b.png", "train/a.png", "val/a.png"]
    for i, lab in enumerate(["x", "y", "z"]):
        s.record(s.key(i), boxes((lab, 1, 1, 5 + i, 5)))
    assert s.flush() == []
    ann = tmp_path / "annotations"
    assert (ann / "train" / "a.csv").is_file() and (ann / "val" / "a.csv").is_file()
    assert FolderSession(tmp_path).progress() == (3, 3)
    assert FolderSession(tmp_path, recursive=False).dataset.names == ["b.png"]
    out = tmp_path / "yolo"  # an export inside the folder is not its images
    summary = export_dataset(tmp_path, "yolo", out)
    assert summary.images == 3
    assert (out / "labels" / "train" / "train" / "a.txt").is_file()
    assert (out / "labels" / "train" / "val" / "a.txt").is_file()
    assert FolderSession(tmp_path).dataset.names == [
        "b.png",
        "train/a.png",
        "val/a.png",
    ]
    coco = export_dataset(tmp_path, "coco", tmp_path / "coco")
    assert coco.images == 3
    doc = json.loads(next((tmp_path / "coco").rglob("*.json")).read_text())
    assert sorted(im["file_name"] for im in doc["images"]) == [
        "b.png",
        "train/a.png",
        "val/a.png",
    ]
    # and back: the same boxes into a copy of the folder's images
    for p in (ann / "train" / "a.csv", ann / "val" / "a.csv", ann / "b.csv"):
        p.unlink()
    back = import_dataset(
        next((tmp_path / "coco").rglob("*.json")), "coco", tmp_path, overwrite=True
    )
    assert back.boxes == 3
    assert on_disk(Dataset(tmp_path), "val/a.png") == [("z", 1, 1, 7, 5)]


# -- progress without re-reading every table ----------------------------------


def test_the_progress_index_reads_only_changed_tables(tmp_path, monkeypatch):
    for i in range(6):
        image(tmp_path / f"{i}.png", 8, 8)
    ds = Dataset(tmp_path)
    for i in range(4):
        rows = [("cat", 1, 1, 5, 5)] if i else []
        ds.save_boxes(f"{i}.png", boxes(*rows).to_table())
    reads: list[str] = []
    real = Dataset.table_info

    def counting(path):
        reads.append(os.path.basename(str(path)))
        return real(path)

    monkeypatch.setattr(Dataset, "table_info", staticmethod(counting))
    assert ds.table_states() == {
        "0.png": EMPTY,
        **{f"{i}.png": BOXES for i in (1, 2, 3)},
    }
    assert len(reads) == 4 and ds.index_path.is_file()
    reads.clear()
    assert FolderSession(tmp_path).progress() == (3, 6)
    assert reads == []  # nothing changed: no table read
    (ds.annotations_dir / "2.csv").write_text("garbage\n")
    ds.save_boxes("0.png", boxes(("dog", 1, 1, 5, 5)).to_table())
    states = ds.table_states()
    assert sorted(reads) == ["0.csv", "2.csv"]
    assert states["2.png"] == BROKEN and states["0.png"] == BOXES


RACER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from napari_samboxes.folder import FolderSession
    folder, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    s = FolderSession(folder, count=False)
    key, cur = s.key(0), s.read_boxes(0)
    for i in range(n):  # a box, then its autosave, as the panel does
        cur = cur.added([i % 30, i % 20, i % 30 + 3, i % 20 + 3], f"{who}{i}",
                        np.nan, "hand")
        s.record(key, cur)
        s.flush()
        cur = s.reloaded.pop(key, cur)  # the view takes the merged boxes
    for _ in range(100):
        if not s.pending:
            break
        time.sleep(0.05)
        s.flush()
    assert not s.pending
    """
)


def test_two_processes_saving_one_table_lose_no_box(tmp_path):
    """Two annotators add boxes to one image at once, each save merged with
    the other's: every box of both ends on disk (a retry merged against the
    wrong base, or a stamp taken after the lock, lost 77-109 of 300)."""
    image(tmp_path / "a.png")
    n = 60
    procs = [
        subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), who, str(n)])
        for who in "AB"
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    labels = read_box_table(tmp_path / "annotations" / "a.csv").labels
    want = {f"{w}{i}" for w in "AB" for i in range(n)}
    assert want - set(labels) == set()
    assert len(labels) == 2 * n


@pytest.mark.parametrize("fmt", ["yolo", "voc", "coco"])
def test_same_names_in_subfolders_round_trip_through_every_format(tmp_path, fmt):
    """Reproduced: YOLO and VOC import matched label files by file stem only,
    so train/a.png's boxes landed on a.png (or were skipped)."""
    src = tmp_path / "src"
    names = ["a.png", "train/a.png", "train/sub/a.png", "val/a.png"]
    for n in names:
        image(src / n)
    s = FolderSession(src)
    for i, n in enumerate(s.dataset.names):
        s.record(s.key(i), boxes((n.replace("/", "_"), 1, 1, 5 + i, 5)))
    assert s.flush() == []
    summary = export_dataset(src, fmt, tmp_path / "out")
    assert summary.images == 4
    dst = tmp_path / "dst"
    for n in names:
        image(dst / n)
    label_src = tmp_path / "out"
    if fmt == "coco":
        label_src = next(label_src.rglob("*.json"))
    back = import_dataset(label_src, fmt, dst)
    assert back.images == 4, back.messages
    ds = Dataset(dst)
    for i, n in enumerate(ds.names):
        assert on_disk(ds, n) == [(n.replace("/", "_"), 1, 1, 5 + i, 5)], n


def test_a_class_removed_from_the_file_is_not_written_back(tmp_path):
    image(tmp_path / "a.png")
    (tmp_path / "classes.txt").write_text("cup\nplate\ntypo_clas\n")
    s = FolderSession(tmp_path)
    (tmp_path / "classes.txt").write_text("cup\nplate\nbowl\n")  # a colleague
    s.classes.add(["spoon"])
    s.classes.save()
    assert read_classes(tmp_path / "classes.txt") == ["cup", "plate", "bowl", "spoon"]
    assert s.classes.names == ("cup", "plate", "bowl", "spoon")
