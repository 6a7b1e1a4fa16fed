"""Pascal VOC XML in LabelImg's schema, one file per image; no napari or Qt.

Coordinates are 1-based and inclusive: a box of pixel indices
``x_min..x_max`` is written ``xmin = x_min + 1``, ``xmax = x_max + 1``
(likewise for y). Reading subtracts 1 and rounds, so LabelImg files with
float coordinates are read too.

Each object's ``difficult``, ``truncated``, ``occluded`` and ``pose`` are
read into the box table's columns of those names and written back from
them. Where a box has none: ``pose`` is ``Unspecified``, ``truncated`` is
1 for a box touching the image border (as LabelImg writes it),
``difficult`` is 0 and ``occluded`` is left out.

Labels, poses and file names that XML 1.0 cannot hold (control
characters) are refused, never written. Reading refuses DTDs and entity
declarations, and names the file for any error (an unknown encoding, too
deep nesting).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .boxtable import BoxTable
from .columns import BINARY_FLAGS, FLAG_COLUMNS, cell, flag
from .errors import FormatError
from .text import check_label

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
    *,
    filename: str | None = None,
    folder: str | None = None,
) -> str:
    """The XML text of a LabelImg-style VOC file for one image's integer boxes.

    ``filename`` and ``folder`` (default: those of ``image_path``) are what
    the file names (the devkit layout names its ``JPEGImages`` copy).

    Raises
    ------
    FormatError
        For a label, pose or file name that XML cannot hold.
    """
    image_path = Path(image_path)
    filename = image_path.name if filename is None else filename
    check_label(filename, f"{image_path}", "file name")
    root = ET.Element("annotation")
    _sub(root, "folder", image_path.parent.name if folder is None else folder)
    _sub(root, "filename", filename)
    _sub(root, "path", image_path.resolve())
    _sub(_sub(root, "source"), "database", "Unknown")
    size = _sub(root, "size")
    for tag, v in (("width", width), ("height", height), ("depth", depth)):
        _sub(size, tag, v)
    _sub(root, "segmented", 0)
    b = np.asarray(table.boxes, dtype=np.float64).reshape(-1, 4)
    for i, (label, (x0, y0, x1, y1)) in enumerate(zip(table.labels, b, strict=True)):
        where = f"{filename}, box {i}"
        obj = _sub(root, "object")
        _sub(obj, "name", check_label(label, where))
        pose = cell(table.extra, "pose", i) or "Unspecified"
        _sub(obj, "pose", check_label(pose, where, "pose"))
        border = x0 <= 0 or y0 <= 0 or x1 >= width - 1 or y1 >= height - 1
        truncated = cell(table.extra, "truncated", i) or int(border)
        _sub(obj, "truncated", flag(truncated, where, "truncated"))
        difficult = cell(table.extra, "difficult", i) or 0
        _sub(obj, "difficult", flag(difficult, where, "difficult"))
        occluded = cell(table.extra, "occluded", i)
        if occluded:
            _sub(obj, "occluded", flag(occluded, where, "occluded"))
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


def _root(path: Path, data: bytes) -> ET.Element:
    head = data[:4096].lower()
    if b"<!doctype" in head or b"<!entity" in data.lower():
        raise FormatError(f"{path}: holds a DTD or entity declarations; not read")
    try:
        return ET.fromstring(data)
    except ET.ParseError as e:
        raise FormatError(f"{path}: not XML ({e})") from None
    except (LookupError, ValueError) as e:  # encoding="klingon"
        raise FormatError(f"{path}: not readable XML ({e})") from None
    except RecursionError:
        raise FormatError(f"{path}: nested too deeply") from None


def _object(obj: ET.Element, where: str) -> tuple[str, list[float], list[str]]:
    """Label, 1-based edges and flag cells of one ``<object>``."""
    name = obj.findtext("name")
    if name is None:
        raise FormatError(f"{where}: missing <name>")
    label = check_label(name.strip(), f"{where}, <name>", "class name")
    box = obj.find("bndbox")
    if box is None:
        raise FormatError(f"{where}: missing <bndbox>")
    x0, y0, x1, y1 = (_number(box, t, f"{where}, <bndbox>") for t in _COORDS)
    if x0 > x1 or y0 > y1:
        raise FormatError(f"{where}: xmin > xmax or ymin > ymax")
    flags = [flag(obj.findtext(t), where, t) for t in BINARY_FLAGS]
    pose = (obj.findtext("pose") or "").strip()
    flags.append(check_label(pose, f"{where}, <pose>", "pose"))
    return label, [x0, y0, x1, y1], flags


def parse_voc(path: str | Path, text: str | bytes | None = None) -> VocFile:
    """Read a VOC file (LabelImg, X-AnyLabeling, CVAT exports).

    Raises
    ------
    FormatError
        Naming the file and the element (``object 2``) for malformed input,
        a label that is no label, or a box entirely outside the image.
    """
    path = Path(path)
    try:
        data = path.read_bytes() if text is None else text
    except OSError as e:
        raise FormatError(f"{path}: cannot be read ({e.strerror or e})") from None
    root = _root(path, data.encode("utf-8") if isinstance(data, str) else data)
    if root.tag != "annotation":
        raise FormatError(f"{path}: root element is <{root.tag}>, not <annotation>")
    width = height = None
    size = root.find("size")
    if size is not None and size.find("width") is not None:
        width = int(_number(size, "width", f"{path}, <size>"))
        height = int(_number(size, "height", f"{path}, <size>"))
    w, h = width or 0, height or 0
    known = w > 0 and h > 0
    labels: list[str] = []
    edges: list[list[float]] = []
    cells: list[list[str]] = []
    for i, obj in enumerate(root.iter("object"), start=1):
        where = f"{path}, object {i}"
        label, box, flags = _object(obj, where)
        x0, y0, x1, y1 = box
        if known and (x1 < 1 or y1 < 1 or x0 > w or y0 > h):
            raise FormatError(
                f"{where}: the box lies entirely outside the {w} x {h} image"
            )
        labels.append(label)
        edges.append(box)
        cells.append(flags)
    px = np.floor(np.asarray(edges, dtype=np.float64).reshape(-1, 4) + 0.5) - 1
    px = np.maximum(px, 0)
    if known:
        px = np.minimum(px, [w - 1, h - 1, w - 1, h - 1])
    table = BoxTable(
        labels=labels,
        boxes=px,
        scores=np.full(len(labels), np.nan),
        slices=np.zeros((len(labels), 0)),
        extra={k: [c[j] for c in cells] for j, k in enumerate(FLAG_COLUMNS)},
    )
    filename = (root.findtext("filename") or "").strip()
    return VocFile(filename=filename, width=width, height=height, table=table)
