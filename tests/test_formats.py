"""YOLO, Pascal VOC and COCO: exact round trips and their conventions."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from napari_samboxes.dataset import Dataset, FormatError
from napari_samboxes.export import export_dataset
from napari_samboxes.formats.boxtable import BoxTable
from napari_samboxes.formats.voc import parse_voc
from napari_samboxes.formats.yolo import format_yolo, parse_yolo
from napari_samboxes.importing import import_dataset

SIZES = {"img1.png": (64, 48), "img2.jpg": (40, 70), "img10.tif": (33, 21)}
BOXES = {
    "img1.png": [("cat", 10, 5, 19, 14, 0.93), ("dog", 0, 0, 63, 47, np.nan)],
    "img2.jpg": [("dog", 3, 60, 3, 69, 0.5), ("cat", 39, 0, 39, 0, np.nan)],
    "img10.tif": [("bird", 1, 2, 31, 19, np.nan)],
}


def table(rows):
    return BoxTable(
        labels=[r[0] for r in rows],
        boxes=np.array([r[1:5] for r in rows], float).reshape(-1, 4),
        scores=np.array([r[5] for r in rows], float),
        slices=np.zeros((len(rows), 0)),
    )


def images_only(src, dst):
    dst.mkdir()
    for p in Dataset(src).images:
        shutil.copy2(p, dst / p.name)
    return dst


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    for name, (w, h) in SIZES.items():
        Image.new("RGB", (w, h), color=(20, 40, 60)).save(d / name)
    Image.new("RGB", (12, 12)).save(d / "unlabelled.png")
    ds = Dataset(d)
    ds.write_classes(["dog", "cat"])
    for name, rows in BOXES.items():
        ds.save_boxes(name, table(rows))
    return d


@pytest.mark.parametrize("fmt", ["yolo", "yolo-seg", "voc", "coco"])
def test_round_trip_is_exact(folder, tmp_path, fmt):
    out = tmp_path / "out"
    summary = export_dataset(folder, fmt, out)
    assert (summary.images, summary.boxes, summary.skipped) == (3, 5, 1)
    fresh = images_only(folder, tmp_path / "fresh")
    back = import_dataset(out, fmt, fresh)
    assert (back.images, back.boxes, back.skipped) == (3, 5, 0), back.messages
    ds = Dataset(fresh)
    for name, rows in BOXES.items():
        t = ds.load_boxes(name)
        assert t.labels == [r[0] for r in rows]
        np.testing.assert_array_equal(t.boxes, table(rows).boxes)
        if fmt == "coco":  # the only format of the three that keeps scores
            np.testing.assert_array_equal(t.scores, table(rows).scores)
    assert not ds.is_annotated("unlabelled.png")
    # VOC has no class list: classes come in order of appearance
    order = ["cat", "dog", "bird"] if fmt == "voc" else ["dog", "cat", "bird"]
    assert ds.classes() == order
    assert (fresh / "classes.txt").read_text() == "".join(f"{c}\n" for c in order)


def test_coco_loads_in_pycocotools_with_the_bbox_convention(folder, tmp_path):
    from pycocotools.coco import COCO

    export_dataset(folder, "coco", tmp_path / "out")
    coco = COCO(str(tmp_path / "out" / "annotations.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == [
        "dog",
        "cat",
        "bird",
    ]
    [img] = [i for i in coco.loadImgs(coco.getImgIds()) if i["file_name"] == "img1.png"]
    assert (img["width"], img["height"]) == (64, 48)
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
    cat, dog = anns
    # box (10, 5)..(19, 14) inclusive: 10 x 10 pixels
    assert cat["bbox"] == [10, 5, 10, 10] and cat["area"] == 100
    assert cat["category_id"] == coco.getCatIds(catNms=["cat"])[0]
    assert cat["iscrowd"] == 0 and cat["score"] == 0.93
    assert dog["bbox"] == [0, 0, 64, 48] and "score" not in dog
    single = coco.loadAnns(coco.getAnnIds(catIds=coco.getCatIds(catNms=["cat"])))[1]
    assert single["bbox"] == [39, 0, 1, 1] and single["area"] == 1


def test_voc_has_labelimg_elements_and_one_based_values(folder, tmp_path):
    export_dataset(folder, "voc", tmp_path / "out")
    root = ET.parse(tmp_path / "out" / "img1.xml").getroot()
    assert root.tag == "annotation"
    assert root.findtext("filename") == "img1.png"
    for tag in ("folder", "path", "source/database", "size/depth", "segmented"):
        assert root.find(tag) is not None, tag
    assert (root.findtext("size/width"), root.findtext("size/height")) == ("64", "48")
    objects = root.findall("object")
    assert [o.findtext("name") for o in objects] == ["cat", "dog"]
    box = objects[0].find("bndbox")
    values = [box.findtext(t) for t in ("xmin", "ymin", "xmax", "ymax")]
    assert values == ["11", "6", "20", "15"]
    assert objects[0].findtext("truncated") == "0"
    assert objects[1].findtext("truncated") == "1"  # touches the border
    assert objects[1].findtext("difficult") == "0"
    assert objects[1].findtext("pose") == "Unspecified"


def test_yolo_values_by_hand(folder, tmp_path):
    import yaml

    export_dataset(folder, "yolo", tmp_path / "out")
    doc = yaml.safe_load((tmp_path / "out" / "data.yaml").read_text())
    assert doc["names"] == {0: "dog", 1: "cat", 2: "bird"}
    assert (doc["train"], doc["val"]) == ("images/train", "images/train")
    labels = tmp_path / "out" / "labels" / "train"
    lines = (labels / "img1.txt").read_text().splitlines()
    # box 10..19 x 5..14 in 64 x 48: cx = 15/64, cy = 10/48, w = 10/64, h = 10/48
    assert lines[0] == "1 0.234375 0.20833333 0.15625 0.20833333"
    assert lines[1] == "0 0.5 0.5 1 1"
    assert sorted(p.name for p in labels.iterdir()) == [
        "img1.txt",
        "img10.txt",
        "img2.txt",
    ]
    images = tmp_path / "out" / "images" / "train"
    assert sorted(p.name for p in images.iterdir()) == [
        "img1.png",
        "img10.tif",
        "img2.jpg",
    ]
    assert (images / "img1.png").resolve() == (folder / "img1.png").resolve()


def test_yolo_round_trip_exact_up_to_20000_pixels():
    rng = np.random.default_rng(0)
    w, h = 20000, 19999
    x = np.sort(rng.integers(0, w, (500, 2)), axis=1)
    y = np.sort(rng.integers(0, h, (500, 2)), axis=1)
    boxes = np.column_stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]]).astype(float)
    t = BoxTable(
        labels=["a"] * 500,
        boxes=boxes,
        scores=np.full(500, np.nan),
        slices=np.zeros((500, 0)),
    )
    back = parse_yolo(format_yolo(t, w, h, {"a": 0}), w, h, ["a"])
    np.testing.assert_array_equal(back.boxes, boxes)


def test_stem_collision_gives_two_export_files_and_imports_back(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    Image.new("RGB", (20, 10)).save(d / "a.png")
    Image.new("RGB", (10, 20)).save(d / "a.jpg")
    ds = Dataset(d)
    ds.save_boxes("a.png", table([("cat", 1, 2, 3, 4, np.nan)]))
    ds.save_boxes("a.jpg", table([("dog", 5, 6, 7, 8, np.nan)]))
    export_dataset(d, "yolo", tmp_path / "y")
    export_dataset(d, "voc", tmp_path / "v")
    assert sorted(p.name for p in (tmp_path / "y" / "labels" / "train").iterdir()) == [
        "a.jpg.txt",
        "a.png.txt",
    ]
    # unique stems: Ultralytics pairs images/train/a.png.png with a.png.txt
    assert sorted(p.name for p in (tmp_path / "y" / "images" / "train").iterdir()) == [
        "a.jpg.jpg",
        "a.png.png",
    ]
    assert sorted(p.name for p in (tmp_path / "v").iterdir() if p.name[0] != ".") == [
        "a.jpg.xml",
        "a.png.xml",
    ]
    for fmt, out in (("yolo", "y"), ("voc", "v")):
        fresh = images_only(d, tmp_path / f"fresh_{fmt}")
        import_dataset(tmp_path / out, fmt, fresh)
        back = Dataset(fresh)
        assert back.load_boxes("a.png").labels == ["cat"]
        np.testing.assert_array_equal(back.load_boxes("a.jpg").boxes, [[5, 6, 7, 8]])


def test_import_of_other_tools_files(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    Image.new("RGB", (50, 40)).save(d / "photo.jpg")
    Image.new("RGB", (30, 30)).save(d / "other.png")
    # LabelImg VOC with float coordinates, beside a file for an unknown image
    voc = tmp_path / "voc"
    voc.mkdir()
    (voc / "photo.xml").write_text(
        "<annotation><filename>photo.jpg</filename><size><width>50</width>"
        "<height>40</height><depth>3</depth></size><object><name> cup </name>"
        "<bndbox><xmin>1.2</xmin><ymin>3.6</ymin><xmax>20.4</xmax><ymax>40</ymax>"
        "</bndbox></object></annotation>"
    )
    (voc / "ghost.xml").write_text(
        "<annotation><filename>ghost.jpg</filename></annotation>"
    )
    s = import_dataset(voc, "voc", d)
    assert (s.images, s.boxes, s.skipped) == (1, 1, 1)
    assert any("ghost" in m for m in s.messages)
    t = Dataset(d).load_boxes("photo.jpg")
    assert t.labels == ["cup"]
    np.testing.assert_array_equal(t.boxes, [[0, 3, 19, 39]])
    # existing boxes are kept unless overwrite
    s = import_dataset(voc, "voc", d)
    assert s.images == 0 and any("already has boxes" in m for m in s.messages)
    # a CVAT-style COCO file: subfolder in file_name, float bbox
    coco = tmp_path / "coco.json"
    coco.write_text(
        json.dumps(
            {
                "images": [
                    {
                        "id": 7,
                        "file_name": "images/other.png",
                        "width": 30,
                        "height": 30,
                    }
                ],
                "categories": [{"id": 3, "name": "cup"}],
                "annotations": [
                    {
                        "id": 1,
                        "image_id": 7,
                        "category_id": 3,
                        "bbox": [2.4, 3.5, 10.2, 4.0],
                    },
                    {
                        "id": 2,
                        "image_id": 7,
                        "category_id": 3,
                        "bbox": [0, 0, 5, 5],
                        "iscrowd": 1,
                    },
                ],
            }
        )
    )
    s = import_dataset(coco, "coco", d)
    assert s.images == 1 and any("crowd" in m for m in s.messages)
    t = Dataset(d).load_boxes("other.png")
    np.testing.assert_array_equal(t.boxes, [[2, 4, 12, 7], [0, 0, 4, 4]])
    assert t.extra["iscrowd"] == ["0", "1"]  # the crowd region is kept
    # YOLO without a class file, with a confidence column and a polygon
    yolo = tmp_path / "yolo"
    (yolo / "labels").mkdir(parents=True)
    (yolo / "labels" / "photo.txt").write_text(
        "2 0.5 0.5 0.2 0.25 0.75\n0 0.1 0.1 0.3 0.1 0.2 0.5\n"
    )
    (yolo / "labels" / "other.txt").write_bytes(b"\xff\xfe0 0.5")
    with pytest.raises(FormatError, match="other.txt: not UTF-8"):
        import_dataset(yolo, "yolo", d, overwrite=True)
    s = import_dataset(yolo / "labels" / "photo.txt", "yolo", d, overwrite=True)
    assert (s.images, s.boxes) == (1, 2)
    t = Dataset(d).load_boxes("photo.jpg")
    assert t.labels == ["2", "0"]
    np.testing.assert_array_equal(t.boxes, [[20, 15, 29, 24], [5, 4, 14, 19]])
    assert t.scores[0] == 0.75 and np.isnan(t.scores[1])


@pytest.mark.parametrize(
    ("fmt", "name", "text", "where"),
    [
        ("yolo", "labels/photo.txt", "0 0.5 0.5 0.1 0.1\n0 0.5 x 0.1 0.1\n", "line 2"),
        ("yolo", "labels/photo.txt", "5 0.5 0.5 0.1 0.1\n", "line 1: class 5"),
        ("yolo", "labels/photo.txt", "0 0.5 0.5 0.1\n", "line 1"),
        ("voc", "photo.xml", "<annotation><object>", "not XML"),
        (
            "voc",
            "photo.xml",
            "<annotation><object><name>a</name></object></annotation>",
            "object 1: missing <bndbox>",
        ),
        (
            "voc",
            "photo.xml",
            "<annotation><object><name>a</name><bndbox><xmin>1</xmin><ymin>q</ymin></bndbox></object></annotation>",
            "<ymin> is not a number",
        ),
        ("coco", "annotations.json", "{", "not JSON"),
        (
            "coco",
            "annotations.json",
            '{"images": [], "categories": [{"id": 1}]}',
            "categories[0]: missing 'name'",
        ),
        (
            "coco",
            "annotations.json",
            '{"images": [{"id": 1, "file_name": "photo.jpg", "width": 5, "height": 5}], "categories": [], "annotations": [{"image_id": 1, "category_id": 2, "bbox": [0, 0, 1, 1]}]}',
            "annotations[0]: category_id 2",
        ),
    ],
)
def test_malformed_input_names_the_file(tmp_path, fmt, name, text, where):
    d = tmp_path / "data"
    d.mkdir()
    Image.new("RGB", (50, 40)).save(d / "photo.jpg")
    src = tmp_path / "src"
    (src / "labels").mkdir(parents=True)
    (src / "classes.txt").write_text("cup\n")
    (src / name).write_text(text)
    with pytest.raises(FormatError, match=name.split("/")[-1]) as err:
        import_dataset(src, fmt, d)
    assert where in str(err.value) and "\n" not in str(err.value)
    assert not (d / "annotations").exists()


def test_parse_voc_reads_labelimg_output_back(tmp_path):
    p = tmp_path / "x.xml"
    p.write_text(
        "<annotation><filename>x.png</filename><size><width>0</width>"
        "<height>0</height><depth>3</depth></size></annotation>"
    )
    v = parse_voc(p)
    assert v.filename == "x.png" and len(v.table) == 0


def test_unknown_format_is_a_value_error(folder, tmp_path):
    with pytest.raises(ValueError, match="yolo, yolo-seg, voc, coco"):
        export_dataset(folder, "pascal", tmp_path / "o")


@pytest.mark.parametrize("fmt", ["yolo", "yolo-seg", "voc", "coco"])
def test_export_refuses_a_label_with_a_line_break_naming_file_and_line(tmp_path, fmt):
    d = tmp_path / "data"
    d.mkdir()
    Image.new("RGB", (8, 8)).save(d / "a.png")
    rows = [("ok", 1, 1, 2, 2, np.nan), ("two\nlines", 1, 1, 2, 2, np.nan)]
    Dataset(d).save_boxes("a.png", table(rows))
    with pytest.raises(FormatError, match=r"a\.csv, line 3: label 'two\\nlines'"):
        export_dataset(d, fmt, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_voc_flags_survive_import_and_export(tmp_path):
    """LabelImg's difficult=1 (and truncated, occluded, pose) come back out."""
    d = tmp_path / "data"
    d.mkdir()
    Image.new("RGB", (50, 40)).save(d / "photo.jpg")
    src = tmp_path / "voc"
    src.mkdir()
    obj = (
        "<object><name>cup</name><pose>Left</pose><truncated>0</truncated>"
        "<difficult>1</difficult><occluded>1</occluded><bndbox><xmin>1</xmin>"
        "<ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>"
    )
    (src / "photo.xml").write_text(
        f"<annotation><filename>photo.jpg</filename>{obj}</annotation>"
    )
    import_dataset(src, "voc", d)
    t = Dataset(d).load_boxes("photo.jpg")
    assert {k: t.extra[k] for k in ("difficult", "truncated", "occluded", "pose")} == {
        "difficult": ["1"],
        "truncated": ["0"],  # at the border: LabelImg would say 1; kept as read
        "occluded": ["1"],
        "pose": ["Left"],
    }
    export_dataset(d, "voc", tmp_path / "out")
    o = ET.parse(tmp_path / "out" / "photo.xml").getroot().find("object")
    got = {k: o.findtext(k) for k in ("difficult", "truncated", "occluded", "pose")}
    assert got == {"difficult": "1", "truncated": "0", "occluded": "1", "pose": "Left"}
    bad = (src / "photo.xml").read_text().replace("<difficult>1", "<difficult>maybe")
    (src / "photo.xml").write_text(bad)
    with pytest.raises(FormatError, match="photo.xml, object 1: difficult is 'maybe'"):
        import_dataset(src, "voc", d, overwrite=True)


@pytest.mark.parametrize(
    "split, match",
    [("1", None), ("0.8", "add up to 1"), ("0.5,0.6", "add up to 1"), ("a,b", "fractions"),
     ("0.2,0.2,0.2,0.4", "1 to 3"), ("-0.5,1.5", ">= 0")],
)  # fmt: skip
def test_split_fractions_are_checked(split, match):
    from napari_samboxes.splits import parse_split

    if match is None:
        assert parse_split(split) == (1.0,)
        return
    with pytest.raises(ValueError, match=match):
        parse_split(split)


def test_splits_are_reproducible_and_every_subset_gets_an_image():
    from napari_samboxes.splits import assign_subsets

    names = [f"img{i}.png" for i in range(10)]
    a = assign_subsets(names, (0.8, 0.2), seed=4)
    assert a == assign_subsets(list(reversed(names)), (0.8, 0.2), seed=4)
    assert sorted(a.values()).count("val") == 2
    small = assign_subsets(names[:3], (0.9, 0.05, 0.05), seed=0)
    assert sorted(small.values()) == ["test", "train", "val"]
    assert set(assign_subsets(names, None).values()) == {"train"}


def test_layouts_and_their_files(folder, tmp_path):
    out = tmp_path / "devkit"
    export_dataset(folder, "voc", out, layout="devkit")
    assert (out / "ImageSets" / "Main" / "train.txt").read_text() == (
        "img1\nimg2\nimg10\n"
    )
    assert sorted(p.name for p in (out / "JPEGImages").iterdir()) == [
        "img1.png",
        "img10.tif",
        "img2.jpg",
    ]
    root = ET.parse(out / "Annotations" / "img2.xml").getroot()
    assert (root.findtext("folder"), root.findtext("filename")) == (
        "JPEGImages",
        "img2.jpg",
    )
    out = tmp_path / "subsets"
    export_dataset(folder, "coco", out, layout="subsets", split="0.67,0.33")
    names = sorted(p.name for p in (out / "annotations").iterdir())
    assert names == ["instances_train.json", "instances_val.json"]
    train = json.loads((out / "annotations" / "instances_train.json").read_text())
    val = json.loads((out / "annotations" / "instances_val.json").read_text())
    assert len(train["images"]) == 2 and len(val["images"]) == 1
    assert train["categories"] == val["categories"]
    for bad in ({"layout": "devkit"}, {"split": "0.5,0.5"}):
        with pytest.raises(ValueError, match="layout"):
            export_dataset(folder, "coco", tmp_path / "x", **bad)
    assert not (tmp_path / "x").exists()


def test_yolo_import_reads_labelimg_and_flat_layouts(folder, tmp_path):
    """LabelImg: label files beside classes.txt; flat: labels/ + classes.txt."""
    export_dataset(folder, "yolo", tmp_path / "u")
    for layout in ("labelimg", "flat"):
        src = tmp_path / layout
        labels = src if layout == "labelimg" else src / "labels"
        labels.mkdir(parents=True)
        for f in (tmp_path / "u" / "labels" / "train").glob("*.txt"):
            shutil.copy(f, labels / f.name)
        (labels / "classes.txt").write_text("dog\ncat\nbird\n")
        fresh = images_only(folder, tmp_path / f"fresh-{layout}")
        s = import_dataset(src, "yolo", fresh)
        assert (s.images, s.boxes) == (3, 5), s.messages
        for name, rows in BOXES.items():
            t = Dataset(fresh).load_boxes(name)
            assert t.labels == [r[0] for r in rows]
            np.testing.assert_array_equal(t.boxes, table(rows).boxes)
