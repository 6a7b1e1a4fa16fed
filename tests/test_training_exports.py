"""Exports read by the tools people train with, box for box.

Ultralytics (``check_det_dataset``, ``YOLODataset``), torchvision
(``VOCDetection``, ``CocoDetection``) and pycocotools read the files as
they are written; COCO ids stay when images are added.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from napari_samboxes.dataset import Dataset
from napari_samboxes.export import export_dataset
from napari_samboxes.formats.boxtable import BoxTable
from napari_samboxes.importing import import_dataset

# name: (width, height, [(label, x_min, y_min, x_max, y_max)])
IMAGES = {
    "a.png": (64, 48, [("cat", 10, 5, 19, 14), ("dog", 0, 0, 63, 47)]),
    "a.jpg": (40, 70, [("dog", 3, 60, 3, 69)]),
    "b.jpg": (33, 21, [("bird", 1, 2, 31, 19), ("cat", 30, 0, 32, 20)]),
    "c.png": (50, 40, [("cat", 5, 5, 44, 34)]),
    "d.jpg": (48, 48, [("dog", 7, 8, 9, 10)]),
    "e.png": (30, 20, []),  # marked done, no boxes
}


def table(rows):
    return BoxTable(
        labels=[r[0] for r in rows],
        boxes=np.array([r[1:5] for r in rows], float).reshape(-1, 4),
        scores=np.full(len(rows), np.nan),
        slices=np.zeros((len(rows), 0)),
    )


def make_folder(path, images=IMAGES):
    path.mkdir()
    for name, (w, h, rows) in images.items():
        rng = np.random.default_rng(len(name) + w)
        pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path / name)
        if rows:
            Dataset(path).save_boxes(name, table(rows))
    ds = Dataset(path)
    ds.write_classes(["dog", "cat", "bird"])
    if "e.png" in images:
        ds.set_done("e.png")
    return path


def pixel_boxes(xywh_norm, w, h):
    """Ultralytics' normalised xywh -> inclusive pixel boxes."""
    b = np.asarray(xywh_norm, dtype=np.float64).reshape(-1, 4)
    x0, x1 = (b[:, 0] - b[:, 2] / 2) * w, (b[:, 0] + b[:, 2] / 2) * w
    y0, y1 = (b[:, 1] - b[:, 3] / 2) * h, (b[:, 1] + b[:, 3] / 2) * h
    return np.column_stack([x0, y0, x1 - 1, y1 - 1]).round().astype(int)


@pytest.fixture(scope="module")
def ultralytics(tmp_path_factory):
    """Ultralytics offline, its settings in a temporary folder (one import).

    Its import changes process-wide settings (numpy's print options,
    warning filters); they are put back for the tests that follow.
    """
    import warnings

    env = {"YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(tmp_path_factory.mktemp("yolo"))}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    printing = np.get_printoptions()
    with warnings.catch_warnings():
        from ultralytics.cfg import DEFAULT_CFG
        from ultralytics.data.dataset import YOLODataset
        from ultralytics.data.utils import check_det_dataset
    np.set_printoptions(**printing)
    yield check_det_dataset, YOLODataset, DEFAULT_CFG
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_ultralytics_reads_the_split_yolo_export_box_for_box(ultralytics, tmp_path):
    check_det_dataset, YOLODataset, cfg = ultralytics
    d = make_folder(tmp_path / "data")
    out = tmp_path / "out"
    summary = export_dataset(d, "yolo", out, split="0.5,0.5", seed=3)
    assert (summary.images, summary.boxes, summary.failed) == (6, 7, 0)
    data = check_det_dataset(str(out / "data.yaml"))
    assert data["names"] == {0: "dog", 1: "cat", 2: "bird"}
    classes = ["dog", "cat", "bird"]
    seen = {}
    for subset in ("train", "val"):
        ds = YOLODataset(
            img_path=data[subset], data=data, task="detect", augment=False, hyp=cfg
        )
        for lab in ds.labels:
            h, w = lab["shape"]
            got = [
                (classes[int(c)], *b)
                for c, b in zip(
                    lab["cls"].ravel(), pixel_boxes(lab["bboxes"], w, h), strict=True
                )
            ]
            seen[os.path.realpath(lab["im_file"])] = (subset, (w, h), got)
    assert {os.path.basename(p) for p in seen} == set(IMAGES)  # done image too
    assert {s for s, _, _ in seen.values()} == {"train", "val"}
    for name, (w, h, rows) in IMAGES.items():
        subset, size, got = seen[str((d / name).resolve())]
        assert size == (w, h)
        assert got == [tuple(r) for r in rows], name
    # the same seed gives the same split; another seed may not
    again = tmp_path / "again"
    export_dataset(d, "yolo", again, split="0.5,0.5", seed=3)
    for subset in ("train", "val"):
        assert sorted(p.name for p in (again / "labels" / subset).iterdir()) == sorted(
            p.name for p in (out / "labels" / subset).iterdir() if p.suffix == ".txt"
        )


def test_yolo_export_imports_back_and_copies_images(tmp_path):
    d = make_folder(tmp_path / "data")
    out = tmp_path / "out"
    export_dataset(d, "yolo", out, split="0.6,0.2,0.2", seed=1, copy_images=True)
    copied = list((out / "images").rglob("*.*"))
    assert len(copied) == 6 and not any(p.is_symlink() for p in copied)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for name in IMAGES:
        shutil.copy(d / name, fresh / name)
    s = import_dataset(out, "yolo", fresh)
    assert (s.images, s.boxes) == (6, 7), s.messages
    for name, (_, _, rows) in IMAGES.items():
        t = Dataset(fresh).load_boxes(name)
        assert t.labels == [r[0] for r in rows]
        np.testing.assert_array_equal(t.boxes, table(rows).boxes)
    # a new split moves images between subsets: no stale copy is left behind
    export_dataset(d, "yolo", out, split="0.2,0.8", seed=5, copy_images=True)
    assert len(list((out / "images").rglob("*.*"))) == 6
    assert len(list((out / "labels").rglob("*.txt"))) == 6


def test_torchvision_reads_the_devkit_voc_export(tmp_path):
    from torchvision.datasets import VOCDetection

    jpegs = {k: v for k, v in IMAGES.items() if k.endswith(".jpg")}
    d = make_folder(tmp_path / "data", jpegs)
    flagged = table(jpegs["b.jpg"][2])
    flagged.extra = {"difficult": ["1", ""], "pose": ["Left", ""]}
    Dataset(d).save_boxes("b.jpg", flagged)
    root = tmp_path / "voc"
    out = root / "VOCdevkit" / "VOC2012"
    export_dataset(d, "voc", out, layout="devkit", split="0.67,0.33", seed=2)
    assert (out / "labelmap.txt").read_text().splitlines()[2].startswith("dog:")
    got = {}
    for subset in ("train", "val"):
        for image, target in VOCDetection(str(root), "2012", subset):
            ann = target["annotation"]
            objs = ann.get("object", [])
            got[ann["filename"]] = (
                image.size,
                [
                    (
                        o["name"],
                        *(
                            int(o["bndbox"][k]) - 1
                            for k in ("xmin", "ymin", "xmax", "ymax")
                        ),
                    )
                    for o in objs
                ],
                [(o["difficult"], o["pose"]) for o in objs],
            )
    assert set(got) == {"a.jpg", "b.jpg", "d.jpg"}
    for name, (w, h, rows) in jpegs.items():
        size, boxes, _ = got[name]
        assert size == (w, h) and boxes == [tuple(r) for r in rows]
    assert got["b.jpg"][2] == [("1", "Left"), ("0", "Unspecified")]


def test_coco_subsets_read_by_coco_detection_box_for_box(tmp_path):
    from torchvision.datasets import CocoDetection

    d = make_folder(tmp_path / "data")
    out = tmp_path / "coco"
    export_dataset(d, "coco", out, layout="subsets", split="0.5,0.5", seed=0)
    seen = {}
    for subset in ("train", "val"):
        ann = out / "annotations" / f"instances_{subset}.json"
        cd = CocoDetection(str(out / "images" / subset), str(ann))
        cats = {c["id"]: c["name"] for c in cd.coco.loadCats(cd.coco.getCatIds())}
        for i in range(len(cd)):
            image, anns = cd[i]
            name = cd.coco.loadImgs(cd.ids[i])[0]["file_name"]
            rows = [
                (cats[a["category_id"]], x, y, x + w - 1, y + h - 1)
                for a in anns
                for x, y, w, h in [a["bbox"]]
            ]
            seen[name] = (image.size, rows)
    for name, (w, h, rows) in IMAGES.items():
        assert seen[name] == ((w, h), [tuple(r) for r in rows]), name


def coco_ids(path):
    doc = json.loads(path.read_text())
    files = {im["id"]: im["file_name"] for im in doc["images"]}
    images = {im["file_name"]: im["id"] for im in doc["images"]}
    anns = {(files[a["image_id"]], *a["bbox"]): a["id"] for a in doc["annotations"]}
    return images, anns


def test_adding_an_image_keeps_every_coco_id(tmp_path):
    d = make_folder(tmp_path / "data")
    export_dataset(d, "coco", tmp_path / "one")
    images, anns = coco_ids(tmp_path / "one" / "annotations.json")
    assert len(images) == 6 and len(anns) == 7
    assert (d / "annotations" / "coco_ids.json").is_file()
    # a new image sorting first, and a new box in an old image
    Image.new("RGB", (20, 20)).save(d / "0new.png")
    Dataset(d).save_boxes("0new.png", table([("cat", 1, 1, 5, 5)]))
    Dataset(d).save_boxes("c.png", table([*IMAGES["c.png"][2], ("dog", 0, 0, 3, 3)]))
    export_dataset(d, "coco", tmp_path / "two")
    images2, anns2 = coco_ids(tmp_path / "two" / "annotations.json")
    assert {k: images2[k] for k in images} == images
    assert {k: anns2[k] for k in anns} == anns
    assert images2["0new.png"] not in images.values()
    new = set(anns2.values()) - set(anns.values())
    assert len(new) == 2 and len(set(anns2.values())) == 9
    # an import of that file into a fresh folder, exported again: same ids
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for p in Dataset(d).images:
        shutil.copy(p, fresh / p.name)
    import_dataset(tmp_path / "two" / "annotations.json", "coco", fresh)
    export_dataset(fresh, "coco", tmp_path / "three")
    assert coco_ids(tmp_path / "three" / "annotations.json") == (images2, anns2)


def test_ultralytics_reads_yolo_seg_polygons_whose_boxes_are_the_boxes(
    ultralytics, tmp_path
):
    from skimage.draw import polygon as fill

    from napari_samboxes.formats.rle import encode_cell

    check_det_dataset, YOLODataset, cfg = ultralytics
    d = tmp_path / "data"
    d.mkdir()
    Image.new("RGB", (80, 60)).save(d / "m.png")
    yy, xx = np.mgrid[:60, :80]
    disc = (yy - 30) ** 2 + (xx - 25) ** 2 < 15**2
    two = ((yy - 10) ** 2 + (xx - 60) ** 2 < 6**2) | ((yy > 40) & (xx > 65))
    masks = [disc, two]
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max(), ys.max()])
    t = table([("cat", *boxes[0]), ("dog", *boxes[1]), ("dog", 2, 3, 9, 7)])
    t.extra = {"mask": [encode_cell(m) for m in masks] + [""]}
    Dataset(d).save_boxes("m.png", t)
    export_dataset(d, "yolo-seg", tmp_path / "out")
    data = check_det_dataset(str(tmp_path / "out" / "data.yaml"))
    ds = YOLODataset(
        img_path=data["train"], data=data, task="segment", augment=False, hyp=cfg
    )
    [lab] = ds.labels
    np.testing.assert_array_equal(
        pixel_boxes(lab["bboxes"], 80, 60), [*boxes, [2, 3, 9, 7]]
    )
    for m, seg in zip(masks, lab["segments"][:2], strict=True):
        xy = seg * [80, 60] - 0.5  # continuous -> pixel centres
        r, c = fill(xy[:, 1], xy[:, 0], m.shape)
        drawn = np.zeros_like(m)
        drawn[r, c] = True
        assert (drawn & m).sum() / (drawn | m).sum() > 0.9
