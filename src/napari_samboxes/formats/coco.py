"""COCO detection JSON: one file for a whole dataset; no napari or Qt.

A box of inclusive pixel indices is ``bbox = [x_min, y_min, x_max - x_min + 1,
y_max - y_min + 1]`` (left, top, width, height of the pixels it covers);
``area`` is width times height. Categories are numbered from 1 in class
order. ``score`` is written where known. Reading rounds the box edges to the
nearest pixel boundary, so files from other tools (float boxes) are read too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..dataset import FormatError
from .boxtable import BoxTable
from .yolo import edges_to_pixels

__all__ = ["CocoImage", "build_coco", "format_coco", "parse_coco"]


@dataclass
class CocoImage:
    """One image of a COCO file: its name, size and boxes."""

    file_name: str
    width: int
    height: int
    table: BoxTable


def build_coco(images: Sequence[CocoImage], classes: Sequence[str]) -> dict[str, Any]:
    """The COCO dictionary for ``images`` (integer boxes) and ``classes``."""
    cat = {name: i for i, name in enumerate(classes, start=1)}
    out_images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, im in enumerate(images, start=1):
        out_images.append(
            {
                "id": image_id,
                "file_name": im.file_name,
                "width": int(im.width),
                "height": int(im.height),
            }
        )
        boxes = np.asarray(im.table.boxes, dtype=np.float64).reshape(-1, 4)
        for label, (x0, y0, x1, y1), score in zip(
            im.table.labels, boxes, im.table.scores, strict=True
        ):
            w, h = int(x1 - x0 + 1), int(y1 - y0 + 1)
            ann: dict[str, Any] = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": cat[label.strip()],
                "bbox": [int(x0), int(y0), w, h],
                "area": w * h,
                "iscrowd": 0,
                "segmentation": [],
            }
            if np.isfinite(score):
                ann["score"] = float(score)
            annotations.append(ann)
    categories = [
        {"id": i, "name": name, "supercategory": ""} for name, i in cat.items()
    ]
    return {
        "info": {"description": "napari-samboxes export"},
        "licenses": [],
        "images": out_images,
        "categories": categories,
        "annotations": annotations,
    }


def format_coco(images: Sequence[CocoImage], classes: Sequence[str]) -> str:
    """:func:`build_coco` as JSON text."""
    return json.dumps(build_coco(images, classes), indent=1, ensure_ascii=False) + "\n"


def _field(d: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise FormatError(f"{where}: missing '{key}'")
    v = d[key]
    if not isinstance(v, kind) or isinstance(v, bool):
        raise FormatError(f"{where}: '{key}' has the wrong type ({type(v).__name__})")
    return v


def parse_coco(path: str | Path) -> tuple[list[CocoImage], list[str], int]:
    """Read a COCO file: its images with boxes, class names, crowd count.

    Crowd annotations (``iscrowd: 1``) mark regions, not objects: they are
    left out and counted. ``file_name`` is reduced to its last part.

    Raises
    ------
    FormatError
        Naming the file and the entry (``annotations[3]``).
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: not JSON ({e})") from None
    num = (int, float)
    cats: dict[Any, str] = {}
    for i, c in enumerate(_field(doc, "categories", list, str(path))):
        where = f"{path}, categories[{i}]"
        cats[_field(c, "id", int, where)] = str(_field(c, "name", str, where)).strip()
    images: dict[Any, CocoImage] = {}
    for i, im in enumerate(_field(doc, "images", list, str(path))):
        where = f"{path}, images[{i}]"
        name = PurePosixPath(
            str(_field(im, "file_name", str, where)).replace("\\", "/")
        ).name
        width = int(_field(im, "width", num, where))
        height = int(_field(im, "height", num, where))
        if width < 1 or height < 1:
            raise FormatError(f"{where}: width and height must be positive")
        images[_field(im, "id", (int, str), where)] = CocoImage(
            name, width, height, BoxTable()
        )
    rows: dict[Any, list[tuple[str, list[float], float]]] = {k: [] for k in images}
    crowd = 0
    for i, a in enumerate(doc.get("annotations", [])):
        where = f"{path}, annotations[{i}]"
        image_id = _field(a, "image_id", (int, str), where)
        if image_id not in images:
            raise FormatError(f"{where}: image_id {image_id!r} is not in 'images'")
        category = _field(a, "category_id", int, where)
        if category not in cats:
            raise FormatError(f"{where}: category_id {category} is not in 'categories'")
        if a.get("iscrowd", 0):
            crowd += 1
            continue
        bbox = _field(a, "bbox", list, where)
        if len(bbox) != 4 or not all(
            isinstance(v, num) and not isinstance(v, bool) for v in bbox
        ):
            raise FormatError(f"{where}: bbox must be 4 numbers [x, y, w, h]")
        x, y, w, h = (float(v) for v in bbox)
        if not np.isfinite([x, y, w, h]).all() or w < 0 or h < 0:
            raise FormatError(f"{where}: bbox {bbox} has a negative or bad size")
        score = a.get("score")
        score = float(score) if isinstance(score, num) else float("nan")
        rows[image_id].append((cats[category], [x, y, x + w, y + h], score))
    out = []
    for image_id, im in images.items():
        r = rows[image_id]
        edges = np.asarray([e for _, e, _ in r], dtype=np.float64).reshape(-1, 4)
        im.table = BoxTable(
            labels=[lab for lab, _, _ in r],
            boxes=edges_to_pixels(edges, im.width, im.height),
            scores=np.asarray([s for _, _, s in r], dtype=np.float64),
            slices=np.zeros((len(r), 0)),
        )
        out.append(im)
    ordered = [cats[k] for k in sorted(cats)]
    return out, ordered, crowd
