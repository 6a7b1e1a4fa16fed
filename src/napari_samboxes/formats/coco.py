"""COCO detection JSON: one file for a whole dataset; no napari or Qt.

A box of inclusive pixel indices is ``bbox = [x_min, y_min, x_max - x_min + 1,
y_max - y_min + 1]`` (left, top, width, height of the pixels it covers).
A box with a mask (:mod:`~napari_samboxes.formats.rle`) that fits it gets
``segmentation`` as compressed RLE over the whole image and ``area`` its
pixel count; any other box has ``segmentation: []`` and ``area`` width
times height. ``score`` is written where known, ``iscrowd`` from the
table's column (0 where empty). Image, annotation and category ids are
given by the caller (the id map keeps them stable across exports).

Reading rounds the box edges to the nearest pixel boundary, so files from
other tools (float boxes) are read too, keeps ``iscrowd`` and the ids, and
refuses with the file and entry named: NaN, Infinity or out-of-range
numbers, duplicate image, category or annotation ids, names that are no
labels, empty file names, boxes entirely outside their image.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .boxtable import BoxTable
from .columns import CROWD_COLUMN, MASK_COLUMN, cell, flag
from .errors import FormatError
from .rle import cell_box, cell_to_image_rle, string_to_counts
from .text import check_label
from .yolo import edges_to_pixels

__all__ = ["CocoFile", "CocoImage", "build_coco", "format_coco", "parse_coco"]


@dataclass
class CocoImage:
    """One image of a COCO file: its name, size, boxes and ids.

    ``id`` and ``ann_ids`` (one per box) are the COCO ids; None where not
    known (reading a file without annotation ids).
    """

    file_name: str
    width: int
    height: int
    table: BoxTable
    id: int | str | None = None
    ann_ids: list[int | None] = field(default_factory=list)


@dataclass
class CocoFile:
    """What a COCO file holds: images (with boxes), class names in category
    id order, each name's category id, and how many boxes are crowds."""

    images: list[CocoImage]
    classes: list[str]
    category_ids: dict[str, int]
    crowd: int = 0


def _annotation(
    table: BoxTable, i: int, width: int, height: int, where: str
) -> dict[str, Any]:
    x0, y0, x1, y1 = (int(v) for v in np.asarray(table.boxes)[i])
    w, h = x1 - x0 + 1, y1 - y0 + 1
    ann: dict[str, Any] = {"bbox": [x0, y0, w, h], "area": w * h}
    mask = cell(table.extra, MASK_COLUMN, i)
    ann["segmentation"] = []
    if mask and cell_box(mask) == (x0, y0, x1, y1):
        rle = cell_to_image_rle(mask, width, height)
        ann["segmentation"] = rle
        ann["area"] = sum(string_to_counts(rle["counts"])[1::2])
    ann["iscrowd"] = int(
        flag(cell(table.extra, CROWD_COLUMN, i) or 0, where, "iscrowd")
    )
    score = float(np.asarray(table.scores, dtype=np.float64).reshape(-1)[i])
    if np.isfinite(score):
        ann["score"] = score
    return ann


def build_coco(
    images: Sequence[CocoImage],
    classes: Sequence[str],
    category_ids: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The COCO dictionary for ``images`` (integer boxes) and ``classes``.

    Images without ``id`` are numbered from 1 in order, boxes without an
    annotation id likewise; categories without an id in ``category_ids``
    follow the largest one given.
    """
    cat = dict(category_ids or {})
    for name in classes:
        cat.setdefault(name, max(cat.values(), default=0) + 1)
    out_images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for pos, im in enumerate(images, start=1):
        image_id = pos if im.id is None else im.id
        out_images.append(
            {
                "id": image_id,
                "file_name": im.file_name,
                "width": int(im.width),
                "height": int(im.height),
            }
        )
        for i, label in enumerate(im.table.labels):
            ids = im.ann_ids
            ann_id = ids[i] if i < len(ids) and ids[i] is not None else None
            ann = {
                "id": len(annotations) + 1 if ann_id is None else ann_id,
                "image_id": image_id,
                "category_id": cat[label.strip()],
            }
            where = f"{im.file_name}, box {i}"
            ann.update(_annotation(im.table, i, im.width, im.height, where))
            annotations.append(ann)
    categories = [
        {"id": cat[name], "name": name, "supercategory": ""} for name in classes
    ]
    return {
        "info": {"description": "napari-samboxes export"},
        "licenses": [],
        "images": out_images,
        "categories": categories,
        "annotations": annotations,
    }


def format_coco(
    images: Sequence[CocoImage],
    classes: Sequence[str],
    category_ids: Mapping[str, int] | None = None,
) -> str:
    """:func:`build_coco` as JSON text."""
    doc = build_coco(images, classes, category_ids)
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


# -- reading -----------------------------------------------------------------
_NUM = (int, float)


def _field(d: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise FormatError(f"{where}: missing '{key}'")
    v = d[key]
    if not isinstance(v, kind) or isinstance(v, bool):
        raise FormatError(f"{where}: '{key}' has the wrong type ({type(v).__name__})")
    return v


def _load(path: Path) -> Any:
    def constant(name: str) -> Any:
        raise FormatError(f"{path}: {name} is not a number (JSON has no {name})")

    def number(text: str) -> float:
        v = float(text)
        if not np.isfinite(v):
            raise FormatError(f"{path}: the number {text} is out of range")
        return v

    try:
        text = path.read_text(encoding="utf-8-sig")
        return json.loads(text, parse_constant=constant, parse_float=number)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: not JSON ({e})") from None
    except RecursionError:
        raise FormatError(f"{path}: not JSON (nested too deeply)") from None
    except OSError as e:
        raise FormatError(f"{path}: cannot be read ({e.strerror or e})") from None


def _list(doc: Any, key: str, path: Path, required: bool = True) -> list[Any]:
    if not isinstance(doc, dict):
        raise FormatError(f"{path}: not a COCO file (a JSON object)")
    if key not in doc and not required:
        return []
    v = _field(doc, key, list, str(path)) if key in doc else None
    if v is None:
        raise FormatError(f"{path}: missing '{key}'")
    return v


def _unique(seen: dict[Any, int], key: Any, i: int, where: str, what: str) -> None:
    if key in seen:
        raise FormatError(f"{where}: {what} {key!r} is used twice (also [{seen[key]}])")
    seen[key] = i


def _categories(doc: Any, path: Path) -> dict[int, str]:
    cats: dict[int, str] = {}
    seen: dict[Any, int] = {}
    for i, c in enumerate(_list(doc, "categories", path)):
        where = f"{path}, categories[{i}]"
        cid = _field(c, "id", int, where)
        _unique(seen, cid, i, where, "category id")
        name = str(_field(c, "name", str, where)).strip()
        cats[cid] = check_label(name, where, "class name")
    return cats


def _size(im: Any, key: str, where: str) -> int:
    v = _field(im, key, _NUM, where)
    if v < 1 or v != int(v):
        raise FormatError(f"{where}: '{key}' must be a positive whole number, not {v}")
    return int(v)


def _images(doc: Any, path: Path) -> dict[Any, CocoImage]:
    images: dict[Any, CocoImage] = {}
    seen: dict[Any, int] = {}
    for i, im in enumerate(_list(doc, "images", path)):
        where = f"{path}, images[{i}]"
        name = str(_field(im, "file_name", str, where))
        if not name.strip():
            raise FormatError(f"{where}: 'file_name' is empty")
        image_id = _field(im, "id", (int, str), where)
        _unique(seen, image_id, i, where, "image id")
        w, h = _size(im, "width", where), _size(im, "height", where)
        images[image_id] = CocoImage(name, w, h, BoxTable(), image_id)
    return images


def _bbox(a: Any, im: CocoImage, where: str) -> list[float]:
    bbox = _field(a, "bbox", list, where)
    if len(bbox) != 4 or not all(
        isinstance(v, _NUM) and not isinstance(v, bool) for v in bbox
    ):
        raise FormatError(f"{where}: bbox must be 4 numbers [x, y, w, h]")
    x, y, w, h = (float(v) for v in bbox)
    if w < 0 or h < 0:
        raise FormatError(f"{where}: bbox {bbox} has a negative size")
    if x + w <= 0 or y + h <= 0 or x >= im.width or y >= im.height:
        raise FormatError(
            f"{where}: bbox {bbox} lies entirely outside the "
            f"{im.width} x {im.height} image"
        )
    return [x, y, x + w, y + h]


def parse_coco(path: str | Path) -> CocoFile:
    """Read a COCO file: its images with boxes, class names, ids, crowds.

    Crowd annotations (``iscrowd: 1``) are kept as boxes with ``iscrowd``
    1. ``file_name`` is kept as written (the caller matches it).

    Raises
    ------
    FormatError
        Naming the file and the entry (``annotations[3]``).
    """
    path = Path(path)
    doc = _load(path)
    cats = _categories(doc, path)
    images = _images(doc, path)
    rows: dict[Any, list[tuple[str, list[float], float, str, int | None]]] = {
        k: [] for k in images
    }
    seen: dict[Any, int] = {}
    crowd = 0
    for i, a in enumerate(_list(doc, "annotations", path, required=False)):
        where = f"{path}, annotations[{i}]"
        image_id = _field(a, "image_id", (int, str), where)
        if image_id not in images:
            raise FormatError(f"{where}: image_id {image_id!r} is not in 'images'")
        category = _field(a, "category_id", int, where)
        if category not in cats:
            raise FormatError(f"{where}: category_id {category} is not in 'categories'")
        ann_id = _field(a, "id", int, where) if "id" in a else None
        if ann_id is not None:
            _unique(seen, ann_id, i, where, "annotation id")
        is_crowd = a.get("iscrowd", 0)
        if is_crowd not in (0, 1) or isinstance(is_crowd, float):
            raise FormatError(f"{where}: iscrowd is {is_crowd!r}; expected 0 or 1")
        crowd += int(is_crowd)
        edges = _bbox(a, images[image_id], where)
        score = a.get("score")
        score = float(score) if isinstance(score, _NUM) else float("nan")
        rows[image_id].append(
            (cats[category], edges, score, str(int(is_crowd)), ann_id)
        )
    for image_id, im in images.items():
        r = rows[image_id]
        arr = np.asarray([e for _, e, _, _, _ in r], dtype=np.float64).reshape(-1, 4)
        im.table = BoxTable(
            labels=[row[0] for row in r],
            boxes=edges_to_pixels(arr, im.width, im.height),
            scores=np.asarray([row[2] for row in r], dtype=np.float64),
            slices=np.zeros((len(r), 0)),
            extra={CROWD_COLUMN: [row[3] for row in r]},
        )
        im.ann_ids = [row[4] for row in r]
    ids = {name: cid for cid, name in sorted(cats.items(), reverse=True)}
    classes = [cats[k] for k in sorted(cats)]
    return CocoFile(list(images.values()), classes, ids, crowd)
