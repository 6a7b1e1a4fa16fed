"""Pascal VOC XML in LabelImg's schema, one file per image; no napari or Qt.

Coordinates are 1-based and inclusive: a box of pixel indices
``x_min..x_max`` is written ``xmin = x_min + 1``, ``xmax = x_max + 1``
(likewise for y). Reading subtracts 1 and rounds, so LabelImg files with
float coordinates are read too. ``truncated`` is 1 for a box touching the
image border, as LabelImg writes it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..dataset import FormatError
from .boxtable import BoxTable

__all__ = ["VocFile", "format_voc", "parse_voc"]

_COORDS = ("xmin", "ymin", "xmax", "ymax")


@dataclass
class VocFile:
    """What a VOC file says: the image's name and size, and its boxes."""

    filename: str
    width: int | None
    height: int | None
    table: BoxTable


def _sub(parent: ET.Element, tag: str, text: object = None) -> ET.Element:
    el = ET.SubElement(parent, tag)
    if text is not None:
        el.text = str(text)
    return el


def format_voc(
    table: BoxTable,
    image_path: str | Path,
    width: int,
    height: int,
    depth: int = 3,
) -> str:
    """The XML text of a LabelImg-style VOC file for one image's integer boxes."""
    image_path = Path(image_path)
    root = ET.Element("annotation")
    _sub(root, "folder", image_path.parent.name)
    _sub(root, "filename", image_path.name)
    _sub(root, "path", image_path.resolve())
    _sub(_sub(root, "source"), "database", "Unknown")
    size = _sub(root, "size")
    for tag, v in (("width", width), ("height", height), ("depth", depth)):
        _sub(size, tag, v)
    _sub(root, "segmented", 0)
    b = np.asarray(table.boxes, dtype=np.float64).reshape(-1, 4)
    for label, (x0, y0, x1, y1) in zip(table.labels, b, strict=True):
        obj = _sub(root, "object")
        _sub(obj, "name", label)
        _sub(obj, "pose", "Unspecified")
        border = x0 <= 0 or y0 <= 0 or x1 >= width - 1 or y1 >= height - 1
        _sub(obj, "truncated", int(border))
        _sub(obj, "difficult", 0)
        box = _sub(obj, "bndbox")
        for tag, v in zip(_COORDS, (x0, y0, x1, y1), strict=True):
            _sub(box, tag, int(v) + 1)
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="unicode") + "\n"


def _number(el: ET.Element, tag: str, where: str) -> float:
    child = el.find(tag)
    if child is None or child.text is None:
        raise FormatError(f"{where}: missing <{tag}>")
    try:
        v = float(child.text)
    except ValueError:
        raise FormatError(f"{where}: <{tag}> is not a number: {child.text!r}") from None
    if not np.isfinite(v):
        raise FormatError(f"{where}: <{tag}> is {child.text!r}")
    return v


def parse_voc(path: str | Path, text: str | bytes | None = None) -> VocFile:
    """Read a VOC file (LabelImg, X-AnyLabeling, CVAT exports).

    Raises
    ------
    FormatError
        Naming the file and the element (``object 2``) for malformed input.
    """
    path = Path(path)
    try:
        root = ET.fromstring(path.read_bytes() if text is None else text)
    except ET.ParseError as e:
        raise FormatError(f"{path}: not XML ({e})") from None
    if root.tag != "annotation":
        raise FormatError(f"{path}: root element is <{root.tag}>, not <annotation>")
    width = height = None
    size = root.find("size")
    if size is not None and size.find("width") is not None:
        width = int(_number(size, "width", f"{path}, <size>"))
        height = int(_number(size, "height", f"{path}, <size>"))
    labels: list[str] = []
    edges: list[list[float]] = []
    for i, obj in enumerate(root.iter("object"), start=1):
        where = f"{path}, object {i}"
        name = obj.findtext("name")
        if name is None:
            raise FormatError(f"{where}: missing <name>")
        box = obj.find("bndbox")
        if box is None:
            raise FormatError(f"{where}: missing <bndbox>")
        x0, y0, x1, y1 = (_number(box, t, f"{where}, <bndbox>") for t in _COORDS)
        if x0 > x1 or y0 > y1:
            raise FormatError(f"{where}: xmin > xmax or ymin > ymax")
        labels.append(name.strip())
        edges.append([x0, y0, x1, y1])
    px = np.floor(np.asarray(edges, dtype=np.float64).reshape(-1, 4) + 0.5) - 1
    px = np.maximum(px, 0)
    if width is not None and height is not None and width > 0 and height > 0:
        px = np.minimum(px, [width - 1, height - 1, width - 1, height - 1])
    table = BoxTable(
        labels=labels,
        boxes=px,
        scores=np.full(len(labels), np.nan),
        slices=np.zeros((len(labels), 0)),
    )
    filename = (root.findtext("filename") or "").strip()
    return VocFile(filename=filename, width=width, height=height, table=table)
