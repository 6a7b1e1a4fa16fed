"""Hostile inputs to export, import and propose (issue 17), one test each.

Each is one line on stderr naming the file and what is wrong, exit code 1,
and nothing written (existing tables, classes.txt and files outside the
folder untouched), or, where the input is legitimate, boxes that survive.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image

from napari_samboxes.cli import main
from napari_samboxes.dataset import Dataset
from napari_samboxes.formats.boxtable import BoxTable


def table(rows):
    return BoxTable(
        labels=[r[0] for r in rows],
        boxes=np.array([r[1:5] for r in rows], float).reshape(-1, 4),
        scores=np.full(len(rows), np.nan),
        slices=np.zeros((len(rows), 0)),
    )


@pytest.fixture
def folder(tmp_path):
    """a.png (with a box) and b.png (none); classes.txt lists cat."""
    d = tmp_path / "data"
    d.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (40, 30)).save(d / name)
    ds = Dataset(d)
    ds.save_boxes("a.png", table([("cat", 1, 2, 10, 12)]))
    ds.write_classes(["cat"])
    return d


def snapshot(d):
    return {
        p.relative_to(d): p.read_bytes()
        for p in sorted(d.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def refused(capsys, rc, *names):
    """Exit 1, one line on stderr naming ``names``, no traceback."""
    err = capsys.readouterr().err
    assert rc == 1, err
    assert err.count("\n") == 1 and "unexpected error" not in err, err
    for n in names:
        assert n in err, err
    return err


def run_import(src, fmt, folder, *extra):
    return main(["import", str(src), "--format", fmt, str(folder), *extra])


COCO_IMAGE = {"id": 1, "file_name": "a.png", "width": 40, "height": 30}
COCO_CAT = {"id": 1, "name": "cat"}
COCO_ANN = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 5, 5]}


def coco(**change):
    doc = {"images": [COCO_IMAGE], "categories": [COCO_CAT], "annotations": [COCO_ANN]}
    doc.update(change)
    return doc


def voc(name="cat", box=(2, 3, 9, 9), head=""):
    x0, y0, x1, y1 = box
    return (
        f"{head}<annotation><filename>a.png</filename><size><width>40</width>"
        f"<height>30</height><depth>3</depth></size><object><name>{name}</name>"
        f"<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
        f"<ymax>{y1}</ymax></bndbox></object></annotation>"
    )


def yolo_src(tmp_path, names_yaml=None, classes=None, label="0 0.5 0.5 0.2 0.2\n"):
    src = tmp_path / "yolo"
    (src / "labels").mkdir(parents=True)
    (src / "labels" / "a.txt").write_text(label)
    (src / "labels" / "b.txt").write_text(label)
    if names_yaml is not None:
        (src / "data.yaml").write_text(names_yaml)
    if classes is not None:
        (src / "classes.txt").write_text(classes, encoding="utf-8")
    return src


# -- class names that are no labels: refused before anything is written ------
@pytest.mark.parametrize(
    "fmt, make, where",
    [
        ("voc", lambda t: ("a.xml", voc("big&#10;cat")), "object 1"),
        ("coco", lambda t: ("c.json", json.dumps(coco(categories=[
            {"id": 1, "name": "big\ncat"}]))), "categories[0]"),
        ("coco", lambda t: ("c.json", json.dumps(coco(categories=[
            {"id": 1, "name": "\ud800"}]))), "lone surrogate"),
    ],
)  # fmt: skip
def test_a_class_name_with_a_line_break_or_surrogate_writes_nothing(
    folder, tmp_path, capsys, fmt, make, where
):
    name, text = make(tmp_path)
    src = tmp_path / name
    src.write_text(text)
    before = snapshot(folder)
    rc = run_import(src, fmt, folder, "--overwrite")
    refused(capsys, rc, name, where)
    assert snapshot(folder) == before


def test_a_data_yaml_name_with_a_line_break_writes_nothing(folder, tmp_path, capsys):
    src = yolo_src(tmp_path, names_yaml='names:\n  0: "big\\ncat"\n')
    before = snapshot(folder)
    refused(capsys, run_import(src, "yolo", folder, "--overwrite"), "data.yaml")
    assert snapshot(folder) == before


def test_u2028_in_classes_txt_is_refused_naming_the_line(folder, tmp_path, capsys):
    src = yolo_src(tmp_path, classes="dog\nbig\u2028cat\n")
    before = snapshot(folder)
    err = refused(capsys, run_import(src, "yolo", folder), "classes.txt, line 2")
    assert "U+2028" in err and snapshot(folder) == before
    # the folder's own classes.txt, at export
    (folder / "classes.txt").write_text("cat\nbig\u2028cat\n", encoding="utf-8")
    rc = main(["export", str(folder), "--format", "coco", "--out", str(tmp_path / "o")])
    refused(capsys, rc, "classes.txt, line 2")
    assert not (tmp_path / "o").exists()


# -- ids -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, what",
    [
        ({"images": [COCO_IMAGE, {**COCO_IMAGE, "file_name": "b.png"}]}, "image id 1"),
        ({"categories": [COCO_CAT, {"id": 1, "name": "dog"}]}, "category id 1"),
    ],
)
def test_duplicate_coco_ids_are_an_error(folder, tmp_path, capsys, change, what):
    src = tmp_path / "dup.json"
    src.write_text(json.dumps(coco(**change)))
    before = snapshot(folder)
    refused(capsys, run_import(src, "coco", folder, "--overwrite"), "dup.json", what)
    assert snapshot(folder) == before


# -- YAML ----------------------------------------------------------------------
def test_a_yaml_alias_bomb_is_refused_at_once(folder, tmp_path, capsys):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    src = yolo_src(tmp_path, names_yaml=bomb + "names: *i\n")
    assert len(bomb) < 600
    start = time.perf_counter()
    err = refused(capsys, run_import(src, "yolo", folder), "data.yaml")
    assert time.perf_counter() - start < 5 and "anchors" in err


# -- symbolic links ------------------------------------------------------------
def test_import_never_writes_through_a_link_out_of_the_folder(folder, tmp_path, capsys):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")  # one line: counts as "not annotated"
    link = folder / "annotations" / "b.csv"
    link.symlink_to(outside)
    src = tmp_path / "b.xml"
    src.write_text(voc().replace("a.png", "b.png"))
    for extra in ([], ["--overwrite"]):
        refused(capsys, run_import(src, "voc", folder, *extra), "b.csv", "outside")
        assert outside.read_text() == "precious\n" and link.is_symlink()
    # a link inside the folder is written through only with --overwrite
    inside = folder / "kept.csv"
    inside.write_text("label,x_min,y_min,x_max,y_max\n")
    link.unlink()
    link.symlink_to(inside)
    assert run_import(src, "voc", folder) == 0
    assert "symbolic link; not replaced" in capsys.readouterr().out
    assert inside.read_text() == "label,x_min,y_min,x_max,y_max\n"
    assert run_import(src, "voc", folder, "--overwrite") == 0
    assert link.is_symlink() and "cat" in inside.read_text()


def test_propose_never_writes_through_a_link_out_of_out(
    tmp_path, structured_ckpt, capsys
):
    img = tmp_path / "img.png"
    Image.new("RGB", (32, 24), (200, 30, 30)).save(img)
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "outside.csv"
    outside.write_text("precious")
    (out / "img.csv").symlink_to(outside)
    rc = main(
        ["propose", str(img), "--out", str(out), "--checkpoint", str(structured_ckpt),
         "--device", "cpu", "--points-per-side", "1"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1 and "outside" in err and "img.csv" in err
    assert outside.read_text() == "precious"


# -- VOC export of what XML cannot hold ---------------------------------------
@pytest.mark.parametrize(
    "label, image, what",
    [("ca\x0bt", "a.png", "a.csv, line 2"), ("cat", "a\x01.png", "file name")],
)
def test_voc_export_refuses_control_characters(tmp_path, capsys, label, image, what):
    d = tmp_path / "data"
    d.mkdir()
    Image.new("RGB", (20, 20)).save(d / image)
    Dataset(d).save_boxes(image, table([(label, 1, 1, 5, 5)]))
    out = tmp_path / "out"
    rc = main(["export", str(d), "--format", "voc", "--out", str(out)])
    err = refused(capsys, rc, what)
    assert ("U+000B" if "\x0b" in label else "U+0001") in err
    assert not out.exists()


# -- malformed files name the file --------------------------------------------
@pytest.mark.parametrize(
    "text, what",
    [
        (json.dumps(coco(annotations=None)), "'annotations'"),
        (json.dumps(coco(images=[{**COCO_IMAGE, "width": float("inf")}])), "Infinity"),
        (json.dumps(coco(images=[{**COCO_IMAGE, "width": float("nan")}])), "NaN"),
        (json.dumps(coco()).replace("[1, 2, 5, 5]", "[1e400, 2, 5, 5]"), "1e400"),
        (json.dumps(coco(images=[{**COCO_IMAGE, "file_name": ""}])), "file_name"),
        ("[" * 100_000, "nested too deeply"),
        (json.dumps(coco(annotations=[{**COCO_ANN, "iscrowd": "0"}])), "iscrowd"),
        (json.dumps(coco(annotations=[{**COCO_ANN, "bbox": [50, 2, 5, 5]}])),
         "entirely outside"),
    ],
)  # fmt: skip
def test_malformed_coco_is_one_line_naming_the_file(
    folder, tmp_path, capsys, text, what
):
    src = tmp_path / "bad.json"
    src.write_text(text)
    before = snapshot(folder)
    refused(capsys, run_import(src, "coco", folder, "--overwrite"), "bad.json", what)
    assert snapshot(folder) == before


@pytest.mark.parametrize(
    "text, what",
    [
        (voc(head='<?xml version="1.0" encoding="klingon"?>'), "klingon"),
        (voc(box=(45, 3, 50, 9)), "entirely outside"),
    ],
)
def test_malformed_voc_is_one_line_naming_the_file(
    folder, tmp_path, capsys, text, what
):
    src = tmp_path / "bad.xml"
    src.write_text(text)
    before = snapshot(folder)
    refused(capsys, run_import(src, "voc", folder, "--overwrite"), "bad.xml", what)
    assert snapshot(folder) == before


def test_a_yolo_box_entirely_outside_is_an_error(folder, tmp_path, capsys):
    src = yolo_src(tmp_path, classes="cat\n", label="0 1.5 0.5 0.2 0.2\n")
    before = snapshot(folder)
    refused(capsys, run_import(src, "yolo", folder), "a.txt, line 1", "outside")
    assert snapshot(folder) == before


# -- names that lost their boxes ------------------------------------------------
@pytest.mark.parametrize(
    "fmt, name", [("yolo", "classes.png"), ("coco", "back\\slash.png")]
)
def test_odd_image_names_keep_their_boxes(tmp_path, capsys, fmt, name):
    d = tmp_path / "data"
    d.mkdir()
    for n in (name, "other.png"):
        Image.new("RGB", (20, 20)).save(d / n)
        Dataset(d).save_boxes(n, table([("cat", 2, 3, 9, 9)]))
    out = tmp_path / "out"
    assert main(["export", str(d), "--format", fmt, "--out", str(out)]) == 0
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for n in (name, "other.png"):
        (fresh / n).write_bytes((d / n).read_bytes())
    assert run_import(out, fmt, fresh) == 0, capsys.readouterr()
    assert "2 images, 2 boxes" in capsys.readouterr().out
    assert Dataset(fresh).load_boxes(name).labels == ["cat"]


# -- export goes on ------------------------------------------------------------
def test_export_skips_an_unreadable_image_and_exports_the_rest(
    folder, tmp_path, capsys
):
    (folder / "c.png").write_bytes(b"not a png")
    Dataset(folder).save_boxes("c.png", table([("cat", 1, 1, 2, 2)]))
    Dataset(folder).set_done("b.png")
    out = tmp_path / "out"
    rc = main(["export", str(folder), "--format", "yolo", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 1 and "2 images, 1 boxes, 0 skipped, 1 failed" in captured.out
    assert "c.png: not a readable image" in captured.out
    assert sorted(p.name for p in (out / "labels" / "train").iterdir()) == [
        "a.txt",
        "b.txt",
    ]
