"""YOLO labels: one ``class cx cy w h`` line per box; no napari or Qt.

A box of inclusive pixel indices ``x_min..x_max`` covers the continuous
interval ``[x_min, x_max + 1)``; YOLO stores that interval's centre and
size divided by the image size::

    cx = (x_min + x_max + 1) / 2 / W        w = (x_max - x_min + 1) / W

(the same for y with H). Values are written with 8 decimals, so reading
back and rounding to the nearest pixel edge gives the same box for images
up to 10^6 pixels wide. Reading also takes a confidence as a sixth value
(Ultralytics ``save_conf``) and polygons (``class x1 y1 x2 y2 ...``, as
YOLO segmentation labels), which become their bounding box.

YOLO segmentation labels (:func:`format_yolo_seg`) hold a box's mask as one
polygon (:mod:`~napari_samboxes.formats.polygon`) whose bounding box is the
box; a box without a mask is written as its rectangle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .boxtable import BoxTable
from .columns import MASK_COLUMN, cell
from .errors import FormatError
from .polygon import box_polygon, mask_polygon
from .rle import cell_box, decode_cell
from .text import check_label, text_lines
from .yamlfile import load_yaml

__all__ = [
    "CLASS_FILES",
    "YAML_FILES",
    "edges_to_pixels",
    "format_yolo",
    "format_yolo_seg",
    "parse_yolo",
    "read_yolo_names",
]

#: Class-name files that YOLO tools write (LabelImg, Darknet/CVAT, Ultralytics).
CLASS_FILES = ("classes.txt", "obj.names", "data.yaml", "dataset.yaml")
#: Those of them that are YAML (Ultralytics).
YAML_FILES = ("data.yaml", "dataset.yaml")


def _num(v: float) -> str:
    return f"{v:.8f}".rstrip("0").rstrip(".") or "0"


def format_yolo(
    table: BoxTable, width: int, height: int, class_index: Mapping[str, int]
) -> str:
    """The text of a YOLO label file for integer boxes of one image."""
    lines = []
    b = np.asarray(table.boxes, dtype=np.float64).reshape(-1, 4)
    for label, (x0, y0, x1, y1) in zip(table.labels, b, strict=True):
        cx = (x0 + x1 + 1) / 2 / width
        cy = (y0 + y1 + 1) / 2 / height
        w = (x1 - x0 + 1) / width
        h = (y1 - y0 + 1) / height
        vals = " ".join(_num(v) for v in (cx, cy, w, h))
        lines.append(f"{class_index[label.strip()]} {vals}\n")
    return "".join(lines)


def box_mask(table: BoxTable, row: int) -> tuple[int, int, np.ndarray] | None:
    """``(x0, y0, crop)`` of the row's mask if it has one that fits its box."""
    text = cell(table.extra, MASK_COLUMN, row)
    box = tuple(int(v) for v in np.asarray(table.boxes)[row])
    if not text or cell_box(text) != box:
        return None
    return decode_cell(text)


def format_yolo_seg(
    table: BoxTable, width: int, height: int, class_index: Mapping[str, int]
) -> str:
    """The text of a YOLO segmentation label file for one image's integer
    boxes: a polygon of each box's mask, else of its rectangle."""
    lines = []
    b = np.asarray(table.boxes, dtype=np.float64).reshape(-1, 4)
    for i, label in enumerate(table.labels):
        mask = box_mask(table, i)
        poly = box_polygon(b[i]) if mask is None else mask_polygon(mask[2], *mask[:2])
        xy = poly / np.array([width, height], dtype=np.float64)
        vals = " ".join(_num(v) for v in xy.reshape(-1))
        lines.append(f"{class_index[label.strip()]} {vals}\n")
    return "".join(lines)


def edges_to_pixels(edges: np.ndarray, width: int, height: int) -> np.ndarray:
    """Continuous box edges ``(N, 4)`` -> inclusive pixel indices.

    Each edge is rounded to the nearest pixel boundary; the box keeps at
    least one pixel and stays inside the image.
    """
    e = np.floor(np.asarray(edges, dtype=np.float64).reshape(-1, 4) + 0.5)
    lo = np.clip(e[:, :2], 0, [width - 1, height - 1])
    hi = np.maximum(np.clip(e[:, 2:] - 1, 0, [width - 1, height - 1]), lo)
    return np.column_stack([lo, hi])


def outside(edges: Sequence[float], width: int, height: int) -> bool:
    """Whether continuous box edges lie entirely outside the image."""
    x0, y0, x1, y1 = edges
    return x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height


def _line_box(
    fields: list[str], line: str, where: str, n_names: int | None
) -> tuple[int, list[float], float]:
    """Class, normalised box edges and confidence of one label line."""
    try:
        cls = int(fields[0])
        vals = [float(v) for v in fields[1:]]
    except ValueError:
        raise FormatError(
            f"{where}: expected 'class cx cy w h' numbers, got {line.strip()!r}"
        ) from None
    if cls < 0 or (n_names is not None and cls >= n_names):
        n = "no" if n_names is None else n_names
        raise FormatError(f"{where}: class {cls} is not in the {n} class names")
    if not np.isfinite(vals).all():
        raise FormatError(f"{where}: not a finite number in {line.strip()!r}")
    score = float("nan")
    if len(vals) in (4, 5):
        cx, cy, w, h = vals[:4]
        if w < 0 or h < 0:
            raise FormatError(f"{where}: negative width or height")
        score = vals[4] if len(vals) == 5 else score
        return cls, [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], score
    if len(vals) >= 6 and len(vals) % 2 == 0:
        xs, ys = vals[0::2], vals[1::2]
        return cls, [min(xs), min(ys), max(xs), max(ys)], score
    raise FormatError(
        f"{where}: {len(fields)} values; expected 'class cx cy w h' "
        "(5), with a confidence (6) or a polygon"
    )


def parse_yolo(
    text: str,
    width: int,
    height: int,
    class_names: Sequence[str] | None,
    path: str | Path = "<text>",
) -> BoxTable:
    """Boxes of a YOLO label file; class ids beyond ``class_names`` fail.

    With ``class_names`` None, a box's label is its class id (``"0"``).
    Boxes reaching outside the image are clipped to it.

    Raises
    ------
    FormatError
        Naming ``path`` and the line, for a malformed line or a box that
        lies entirely outside the image.
    """
    labels: list[str] = []
    edges: list[list[float]] = []
    scores: list[float] = []
    n_names = None if class_names is None else len(class_names)
    for lineno, line in enumerate(text_lines(text), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}, line {lineno}"
        cls, box, score = _line_box(fields, line, where, n_names)
        px = [box[0] * width, box[1] * height, box[2] * width, box[3] * height]
        if outside(px, width, height):
            raise FormatError(
                f"{where}: the box lies entirely outside the {width} x {height} image"
            )
        labels.append(str(cls) if class_names is None else class_names[cls])
        edges.append(px)
        scores.append(score)
    return BoxTable(
        labels=labels,
        boxes=edges_to_pixels(np.asarray(edges), width, height),
        scores=np.asarray(scores, dtype=np.float64),
        slices=np.zeros((len(labels), 0)),
    )


def read_yolo_names(path: str | Path) -> list[str]:
    """Class names from ``classes.txt`` / ``obj.names`` or a ``data.yaml``.

    In a text file, line ``i`` names class ``i``: lines are stripped but not
    deduplicated; a blank line inside the list is named by its number. A
    YAML file is read safely (:mod:`~napari_samboxes.formats.yamlfile`).

    Raises
    ------
    FormatError
        Naming the file (and line or entry) for a name that is no label
        (:mod:`~napari_samboxes.formats.text`) or a malformed file.
    """
    path = Path(path)
    if path.suffix.lower() not in (".yaml", ".yml"):
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as e:
            raise FormatError(f"{path}: not UTF-8 text ({e})") from e
        lines = [n.strip() for n in text_lines(text)]
        while lines and not lines[-1]:
            lines.pop()
        for i, n in enumerate(lines, start=1):
            check_label(n, f"{path}, line {i}", "class name")
        return [n or str(i) for i, n in enumerate(lines)]
    doc = load_yaml(path)
    names = doc.get("names") if isinstance(doc, dict) else None
    if isinstance(names, dict):
        try:
            order = sorted(names, key=int)
        except (TypeError, ValueError):
            raise FormatError(f"{path}: 'names' keys must be class ids") from None
        if [int(k) for k in order] != list(range(len(order))):
            raise FormatError(f"{path}: 'names' ids must be 0, 1, 2, ...")
        names = [names[k] for k in order]
    if not isinstance(names, list):
        raise FormatError(f"{path}: no 'names' list of class names")
    for i, n in enumerate(names):
        if not isinstance(n, str | int | float) or isinstance(n, bool):
            raise FormatError(f"{path}: names[{i}] is not a name")
        check_label(str(n), f"{path}, names[{i}]", "class name")
    return [str(n).strip() for n in names]
