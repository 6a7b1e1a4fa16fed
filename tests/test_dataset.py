"""Dataset folders: image order, file keys, annotation files, classes."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from napari_samboxes.dataset import (
    Dataset,
    FormatError,
    file_keys,
    image_header,
    image_size,
    read_classes,
    write_classes,
)
from napari_samboxes.formats.boxtable import BoxTable, read_box_table


def write_image(path, width, height, mode="RGB"):
    Image.new(mode, (width, height), color=0).save(path)
    return path


def table(*rows):
    return BoxTable(
        labels=[r[0] for r in rows],
        boxes=np.array([r[1:5] for r in rows], float).reshape(-1, 4),
        scores=np.array([r[5] for r in rows], float),
        slices=np.zeros((len(rows), 0)),
    )


def test_images_natural_order_filters_and_any_size(tmp_path):
    for name, (w, h) in {
        "img10.png": (5, 4),
        "img2.JPG": (7, 3),
        "Img1.tiff": (4, 9),
        "x.webp": (6, 6),
        "y.bmp": (4, 4),
        "z.gif": (4, 5),
    }.items():
        write_image(tmp_path / name, w, h)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "classes.txt").write_text("cat\n")
    write_image(tmp_path / ".hidden.png", 4, 4)
    (tmp_path / "sub").mkdir()
    write_image(tmp_path / "sub" / "a.png", 4, 4)
    ds = Dataset(tmp_path, recursive=False)
    assert [p.name for p in ds.images] == [
        "Img1.tiff",
        "img2.JPG",
        "img10.png",
        "x.webp",
        "y.bmp",
        "z.gif",
    ]
    # subfolders are part of the folder by default, named by their path
    assert Dataset(tmp_path).names == [
        "Img1.tiff",
        "img2.JPG",
        "img10.png",
        "sub/a.png",
        "x.webp",
        "y.bmp",
        "z.gif",
    ]
    assert image_size(tmp_path / "img2.JPG") == (7, 3)
    assert image_size(tmp_path / "Img1.tiff") == (4, 9)
    assert image_header(write_image(tmp_path / "g.png", 5, 6, "L")) == (5, 6, 1)


def test_image_size_of_a_huge_image_reads_only_the_header(tmp_path, monkeypatch):
    path = write_image(tmp_path / "big.png", 300, 200)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 300 x 200 is "huge"
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    assert image_size(path) == (300, 200)
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_image_header_of_a_non_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(FormatError, match="broken.png"):
        image_size(bad)


def test_stem_collision_gives_two_files(tmp_path):
    write_image(tmp_path / "a.png", 8, 6)
    write_image(tmp_path / "a.jpg", 10, 5)
    write_image(tmp_path / "b.png", 4, 4)
    ds = Dataset(tmp_path)
    assert ds.annotation_path("a.png").name == "a.png.csv"
    assert ds.annotation_path("a.jpg").name == "a.jpg.csv"
    assert ds.annotation_path("b.png").name == "b.csv"
    ds.save_boxes("a.png", table(("cat", 1, 1, 2, 2, 0.5)))
    ds.save_boxes("a.jpg", table(("dog", 3, 3, 4, 4, np.nan)))
    assert sorted(os.listdir(ds.annotations_dir)) == ["a.jpg.csv", "a.png.csv"]
    assert ds.load_boxes("a.png").labels == ["cat"]
    assert ds.load_boxes("a.jpg").labels == ["dog"]


def test_file_keys_never_collide():
    keys = file_keys(["a.png", "A.jpg", "a.png.jpg", "b.png", "c.tif"])
    assert keys == {
        "a.png": "a.png",
        "A.jpg": "A.jpg",
        "a.png.jpg": "a.png.jpg",
        "b.png": "b",
        "c.tif": "c",
    }
    assert len({k.casefold() for k in keys.values()}) == len(keys)


def test_file_written_before_a_same_stem_image_arrived_is_found(tmp_path):
    write_image(tmp_path / "a.png", 8, 6)
    ds = Dataset(tmp_path)
    ds.save_boxes("a.png", table(("cat", 1, 1, 2, 2, 0.9)))
    assert (ds.annotations_dir / "a.csv").is_file()
    csv_time = (ds.annotations_dir / "a.csv").stat().st_mtime_ns
    os.utime(tmp_path / "a.png", ns=(csv_time - 10**9, csv_time - 10**9))
    # a.jpg is copied in later: it is newer than a.csv
    write_image(tmp_path / "a.jpg", 10, 5)
    os.utime(tmp_path / "a.jpg", ns=(csv_time + 10**9, csv_time + 10**9))
    ds.refresh()
    assert ds.annotation_path("a.png").name == "a.png.csv"
    assert ds.load_boxes("a.png").labels == ["cat"]
    assert len(ds.load_boxes("a.jpg")) == 0
    assert ds.problems() == []
    ds.save_boxes("a.jpg", table(("dog", 0, 0, 1, 1, np.nan)))
    assert ds.load_boxes("a.png").labels == ["cat"]  # still found
    # saving moves a.png's boxes to its own file; a.csv goes
    ds.save_boxes("a.png", ds.load_boxes("a.png"))
    assert sorted(os.listdir(ds.annotations_dir)) == ["a.jpg.csv", "a.png.csv"]
    # a.jpg removed again: a.png's key is its stem, its file is still found
    (tmp_path / "a.jpg").unlink()
    ds.refresh()
    assert ds.annotation_path("a.png").name == "a.csv"
    assert ds.load_boxes("a.png").labels == ["cat"]
    ds.save_boxes("a.png", ds.load_boxes("a.png"))
    assert sorted(os.listdir(ds.annotations_dir)) == ["a.csv", "a.jpg.csv"]


def test_file_no_single_image_owns_is_reported_and_untouched(tmp_path):
    write_image(tmp_path / "a.png", 8, 6)
    write_image(tmp_path / "a.jpg", 8, 6)
    (tmp_path / "annotations").mkdir()
    old = tmp_path / "annotations" / "a.csv"
    old.write_text("label,x_min,y_min,x_max,y_max,score\ncat,1,1,2,2,\n")
    t = old.stat().st_mtime_ns
    for name in ("a.png", "a.jpg"):
        os.utime(tmp_path / name, ns=(t - 10**9, t - 10**9))
    ds = Dataset(tmp_path)
    assert len(ds.load_boxes("a.png")) == 0 and len(ds.load_boxes("a.jpg")) == 0
    [problem] = ds.problems()
    assert "a.csv" in problem and "a.png" in problem and "a.jpg" in problem
    ds.save_boxes("a.png", table(("dog", 0, 0, 1, 1, np.nan)))
    assert read_box_table(old).labels == ["cat"]


def test_progress_and_next_unannotated(tmp_path):
    for i in (1, 2, 3, 10):
        write_image(tmp_path / f"im{i}.png", 4 + i, 4)
    ds = Dataset(tmp_path)
    assert ds.progress() == (0, 4)
    assert ds.next_unannotated() == 0
    ds.save_boxes(0, table(("cat", 0, 0, 1, 1, 0.5)))
    ds.save_boxes("im2.png", table())  # checked, but no boxes
    assert ds.is_annotated("im1.png") and not ds.is_annotated(1)
    assert ds.progress() == (1, 4)
    assert ds.next_unannotated(0) == 1
    for i in (1, 2):
        ds.save_boxes(i, table(("dog", 0, 0, 1, 1, np.nan)))
    assert ds.next_unannotated(2) == 3
    assert ds.next_unannotated(3) == 3
    ds.save_boxes(3, table(("dog", 0, 0, 1, 1, np.nan)))
    assert ds.next_unannotated(1) is None
    assert ds.progress() == (4, 4)
    assert len(Dataset(tmp_path).load_boxes("im10.png")) == 1


def test_next_unannotated_wraps_around(tmp_path):
    for i in range(3):
        write_image(tmp_path / f"im{i}.png", 4, 4)
    ds = Dataset(tmp_path)
    ds.save_boxes(2, table(("cat", 0, 0, 1, 1, 0.5)))
    assert ds.next_unannotated(1) == 0
    assert ds.next_unannotated(2) == 0


def test_read_classes_order_dedupe_and_dataset_classes(tmp_path):
    p = tmp_path / "classes.txt"
    p.write_text("\ufeffdog\n  cat \n\ndog\nbird\r\n\n", encoding="utf-8")
    assert read_classes(p) == ["dog", "cat", "bird"]
    write_image(tmp_path / "b.png", 5, 5)
    write_image(tmp_path / "a.png", 5, 5)
    ds = Dataset(tmp_path)
    ds.save_boxes("b.png", table(("fox", 0, 0, 1, 1, 0.5), ("cat", 0, 0, 1, 1, 0.5)))
    ds.save_boxes("a.png", table(("owl", 0, 0, 1, 1, 0.5), ("fox", 0, 0, 1, 1, 0.5)))
    assert ds.classes() == ["dog", "cat", "bird", "owl", "fox"]
    ds.write_classes(["cup", "dog", "cup", " "])
    assert p.read_text(encoding="utf-8") == "cup\ndog\n"
    with pytest.raises(ValueError, match="line break"):
        write_classes(p, ["a\nb"])
    assert read_classes(p) == ["cup", "dog"]


def test_not_a_folder_and_unknown_image(tmp_path):
    with pytest.raises(NotADirectoryError, match="missing"):
        Dataset(tmp_path / "missing")
    ds = Dataset(tmp_path)
    with pytest.raises(KeyError, match="nope.png"):
        ds.annotation_path("nope.png")


def test_done_flags_count_skip_survive_and_export(tmp_path):
    """An image with no boxes marked done counts as annotated, is skipped by
    next_unannotated, is read back by a new Dataset, and is exported in all
    three formats (empty YOLO label file, VOC file with no objects, COCO
    image with no annotations)."""
    import json
    import xml.etree.ElementTree as ET

    from PIL import Image

    from napari_samboxes.export import export_dataset

    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(tmp_path / name)
    ds = Dataset(tmp_path)
    assert ds.progress() == (0, 3) and ds.next_unannotated(-1) == 0
    assert ds.set_done("b.png") and not ds.set_done("b.png")
    again = Dataset(tmp_path)  # a restart
    assert again.is_done("b.png") and not again.is_done("a.png")
    assert again.progress() == (1, 3)
    assert again.next_unannotated(0) == 2
    assert json.loads(again.done_path.read_text()) == {"done": ["b.png"]}
    for fmt in ("yolo", "voc", "coco"):
        summary = export_dataset(tmp_path, fmt, tmp_path / f"out-{fmt}")
        assert summary.images == 1 and summary.skipped == 2, fmt
    assert (tmp_path / "out-yolo" / "labels" / "train" / "b.txt").read_text() == ""
    root = ET.parse(tmp_path / "out-voc" / "b.xml").getroot()
    assert root.find("filename").text == "b.png" and root.find("object") is None
    coco = json.loads((tmp_path / "out-coco" / "annotations.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["b.png"]
    assert coco["annotations"] == []
    assert ds.set_done("b.png", False) and ds.progress() == (0, 3)
    ds.done_path.write_text('{"done": "b.png"}')
    with pytest.raises(FormatError, match="done.json"):
        ds.progress()
