"""Export a dataset folder to YOLO, VOC or COCO, and import them back.

No napari or Qt. Exported file names use the dataset's file keys (the stem,
or the whole name where two images share a stem; see
:mod:`napari_samboxes.dataset`), so they never collide:

- ``yolo``: ``OUT/labels/<key>.txt`` and ``OUT/classes.txt``;
- ``voc``: ``OUT/<key>.xml``;
- ``coco``: ``OUT/annotations.json``.

Images with an annotation file (an empty table is an image checked and found
empty) and images marked done (:meth:`Dataset.set_done`; with no file, an
image with no boxes) are exported; the others are counted as skipped. Import matches
label files to the folder's images by key, then by stem (by ``file_name``
for COCO and VOC), parses every file before it writes anything, and leaves
images that already have boxes alone unless ``overwrite`` is set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..dataset import Dataset, FormatError, image_header, merge_classes, read_classes
from .boxtable import BoxTable, read_box_table
from .coco import CocoImage, format_coco, parse_coco
from .voc import format_voc, parse_voc
from .yolo import CLASS_FILES, format_yolo, parse_yolo, read_yolo_names

__all__ = [
    "FORMATS",
    "ConvertSummary",
    "FormatError",
    "export_dataset",
    "import_dataset",
]

#: Names accepted by ``fmt``.
FORMATS = ("yolo", "voc", "coco")


@dataclass
class ConvertSummary:
    """What an export or import did.

    Attributes
    ----------
    images : int
        Images written (export) or box tables written (import).
    boxes : int
        Boxes written.
    skipped : int
        Images (export) or source files/images (import) left out.
    messages : list of str
        One sentence per thing worth knowing (what was skipped and why).
    """

    images: int = 0
    boxes: int = 0
    skipped: int = 0
    messages: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.images} images, {self.boxes} boxes, {self.skipped} skipped"


def _check_format(fmt: str) -> str:
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    return fmt


def _for_export(
    table: BoxTable, width: int, height: int, notes: dict[str, int]
) -> BoxTable:
    """Integer boxes inside the image, with labels; counts what changed."""
    b = np.asarray(table.boxes, dtype=np.float64).reshape(-1, 4)
    r = np.floor(b + 0.5)
    notes["rounded"] += int(np.any(r != b, axis=1).sum())
    c = np.clip(r, 0, [width - 1, height - 1, width - 1, height - 1])
    notes["clipped"] += int(np.any(c != r, axis=1).sum())
    keep = np.array([bool(lab.strip()) for lab in table.labels], dtype=bool)
    notes["unlabelled"] += int((~keep).sum())
    return BoxTable(
        labels=[lab.strip() for lab, k in zip(table.labels, keep, strict=True) if k],
        boxes=c[keep],
        scores=np.asarray(table.scores, dtype=np.float64)[keep],
        slices=np.zeros((int(keep.sum()), 0)),
    )


_NOTES = {
    "rounded": "boxes with fractional coordinates were rounded to whole pixels",
    "clipped": "boxes reaching outside their image were clipped to it",
    "unlabelled": "boxes without a label were left out",
}


def export_dataset(folder: str | Path, fmt: str, out: str | Path) -> ConvertSummary:
    """Write the folder's annotations to ``out`` in ``fmt`` (yolo, voc, coco).

    Class ids follow :meth:`Dataset.classes` (``classes.txt``, then new
    labels). Existing files of the same names in ``out`` are replaced.
    """
    fmt = _check_format(fmt)
    ds = Dataset(folder)
    out = Path(out)
    classes = ds.classes()
    bad = [c for c in classes if len(c.splitlines()) > 1]
    if fmt == "yolo" and bad:
        raise FormatError(
            f"{ds.folder}: class {bad[0]!r} holds a line break, which YOLO's "
            "classes.txt cannot hold; relabel those boxes"
        )
    index = {name: i for i, name in enumerate(classes)}
    summary = ConvertSummary()
    notes = dict.fromkeys(_NOTES, 0)
    coco: list[CocoImage] = []
    if fmt == "yolo":
        (out / "labels").mkdir(parents=True, exist_ok=True)
    else:
        out.mkdir(parents=True, exist_ok=True)
    done = ds.done_names()
    for image in ds.images:
        path = ds.find_annotation(image)
        if path is None and image.name not in done:
            summary.skipped += 1
            continue
        w, h, depth = image_header(image)
        found = read_box_table(path) if path is not None else BoxTable()
        table = _for_export(found, w, h, notes)
        key = ds.key(image)
        if fmt == "yolo":
            text = format_yolo(table, w, h, index)
            atomic_write_text(out / "labels" / f"{key}.txt", text)
        elif fmt == "voc":
            atomic_write_text(out / f"{key}.xml", format_voc(table, image, w, h, depth))
        else:
            coco.append(CocoImage(image.name, w, h, table))
        summary.images += 1
        summary.boxes += len(table)
    if fmt == "yolo":
        atomic_write_text(out / "classes.txt", "".join(f"{c}\n" for c in classes))
    elif fmt == "coco":
        atomic_write_text(out / "annotations.json", format_coco(coco, classes))
    if summary.skipped:
        summary.messages.append(
            f"{summary.skipped} images have no annotation file yet and are not "
            "marked done: not exported"
        )
    summary.messages += [f"{n} {_NOTES[k]}" for k, n in notes.items() if n]
    return summary


# -- import ------------------------------------------------------------------
class _Matcher:
    """Finds the folder's image for a source file's key, stem or name."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        self.by_name = {p.name: p.name for p in ds.images}
        self.by_key = {ds.key(p): p.name for p in ds.images}
        self.by_stem: dict[str, list[str]] = {}
        for p in ds.images:
            self.by_stem.setdefault(p.stem.casefold(), []).append(p.name)

    def find(
        self, names: Iterable[str], source: str | Path, summary: ConvertSummary
    ) -> str | None:
        """The first name that names one image; None (reported) otherwise."""
        names = [n for n in names if n]
        for n in names:
            if n in self.by_name:
                return n
        for n in names:
            if n in self.by_key:
                return self.by_key[n]
        for n in names:
            found = self.by_stem.get(Path(n).stem.casefold(), [])
            if len(found) > 1:
                summary.messages.append(
                    f"{source}: matches {' and '.join(found)}; not imported"
                )
                summary.skipped += 1
                return None
            if found:
                return found[0]
        summary.messages.append(f"{source}: no image {names[0]!r} in {self.ds.folder}")
        summary.skipped += 1
        return None


def _size_check(
    name: str,
    declared: tuple[int | None, int | None],
    actual: tuple[int, int],
    source: str | Path,
    summary: ConvertSummary,
) -> None:
    if declared[0] and declared[1] and declared != actual:
        summary.messages.append(
            f"{source}: says {declared[0]}x{declared[1]} but {name} is "
            f"{actual[0]}x{actual[1]}; boxes kept as written, clipped to the image"
        )


def _imported(table: BoxTable, width: int, height: int) -> BoxTable:
    """An imported table: boxes clipped to the image, marked as imported."""
    n = len(table)
    b = np.asarray(table.boxes, dtype=np.float64).reshape(-1, 4)
    return BoxTable(
        labels=list(table.labels),
        boxes=np.clip(b, 0, [width - 1, height - 1, width - 1, height - 1]),
        scores=np.asarray(table.scores, dtype=np.float64).reshape(n),
        slices=np.zeros((n, 0)),
        sources=["import"] * n,
    )


def _yolo_sources(
    src: Path, ds: Dataset, match: _Matcher, summary: ConvertSummary
) -> tuple[dict[str, BoxTable], list[str]]:
    files: list[Path] = []
    if src.is_file():  # one label file: its folder holds the class names
        src, files = src.parent, [src]
    labels_dir = src / "labels" if (src / "labels").is_dir() else src
    if not files:
        files = sorted(labels_dir.rglob("*.txt"))
    names: list[str] | None = None
    for d in dict.fromkeys([src, labels_dir]):
        found = [d / f for f in CLASS_FILES if (d / f).is_file()]
        if found:
            names = read_yolo_names(found[0])
            break
    if names is None:
        summary.messages.append(
            f"{src}: no {' / '.join(CLASS_FILES)}; classes are named by their ids"
        )
    tables: dict[str, BoxTable] = {}
    for f in files:
        if f.name in CLASS_FILES or f.name.startswith("."):
            continue
        image = match.find([f.stem], f, summary)
        if image is None or _duplicate(image, tables, f, summary):
            continue
        w, h, _ = image_header(ds.folder / image)
        try:
            text = f.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as e:
            raise FormatError(f"{f}: not UTF-8 text ({e})") from None
        tables[image] = parse_yolo(text, w, h, names, f)
    return tables, list(names or [])


def _duplicate(
    image: str, tables: dict[str, BoxTable], f: str | Path, summary: ConvertSummary
) -> bool:
    if image in tables:
        summary.messages.append(f"{f}: {image} already has a source file; not imported")
        summary.skipped += 1
    return image in tables


def _voc_sources(
    src: Path, ds: Dataset, match: _Matcher, summary: ConvertSummary
) -> tuple[dict[str, BoxTable], list[str]]:
    tables: dict[str, BoxTable] = {}
    files = [src] if src.is_file() else sorted(src.rglob("*.xml"))
    for f in files:
        voc = parse_voc(f)
        image = match.find([voc.filename, f.stem, Path(voc.filename).stem], f, summary)
        if image is None or _duplicate(image, tables, f, summary):
            continue
        size = image_header(ds.folder / image)[:2]
        _size_check(image, (voc.width, voc.height), size, f, summary)
        tables[image] = voc.table
    labels = [lab for t in tables.values() for lab in t.labels]
    return tables, merge_classes(labels)


def _coco_sources(
    src: Path, ds: Dataset, match: _Matcher, summary: ConvertSummary
) -> tuple[dict[str, BoxTable], list[str]]:
    path = src
    if src.is_dir():
        candidates = (
            [src / "annotations.json"]
            if (src / "annotations.json").is_file()
            else sorted(src.rglob("*.json"))
        )
        if len(candidates) != 1:
            raise FormatError(
                f"{src}: expected one COCO .json file, found {len(candidates)}"
            )
        path = candidates[0]
    images, classes, crowd = parse_coco(path)
    if crowd:
        summary.messages.append(f"{path}: {crowd} crowd regions (iscrowd 1) left out")
    tables: dict[str, BoxTable] = {}
    for im in images:
        where = f"{path}: {im.file_name}"
        image = match.find([im.file_name], where, summary)
        if image is None or _duplicate(image, tables, where, summary):
            continue
        size = image_header(ds.folder / image)[:2]
        _size_check(image, (im.width, im.height), size, where, summary)
        tables[image] = im.table
    return tables, classes


_READERS: dict[str, Callable[..., tuple[dict[str, BoxTable], list[str]]]] = {
    "yolo": _yolo_sources,
    "voc": _voc_sources,
    "coco": _coco_sources,
}


def import_dataset(
    src: str | Path, fmt: str, folder: str | Path, *, overwrite: bool = False
) -> ConvertSummary:
    """Turn ``fmt`` annotations in ``src`` into the folder's box tables.

    ``src`` is a YOLO folder (``labels/`` or the label files themselves,
    with ``classes.txt``, ``obj.names`` or ``data.yaml``), a folder of VOC
    ``.xml`` files (searched recursively) or one file, or a COCO ``.json``
    file or a folder holding one. Source files for images not in ``folder``
    are reported and skipped. Every file is parsed before anything is
    written, so a malformed one (:class:`FormatError`) changes nothing.
    Images that already have boxes are skipped unless ``overwrite``. The
    source's class names (then labels of the folder's tables) are added to
    ``DIR/classes.txt``.
    """
    fmt = _check_format(fmt)
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or folder")
    ds = Dataset(folder)
    summary = ConvertSummary()
    tables, classes = _READERS[fmt](src, ds, _Matcher(ds), summary)
    for image, table in tables.items():
        if not overwrite and ds.is_annotated(image):
            summary.messages.append(
                f"{image} already has boxes; not replaced (use overwrite)"
            )
            summary.skipped += 1
            continue
        w, h = image_header(ds.folder / image)[:2]
        ds.save_boxes(image, _imported(table, w, h))
        summary.images += 1
        summary.boxes += len(table)
    listed = read_classes(ds.classes_path) if ds.classes_path.is_file() else None
    merged = merge_classes(listed or [], classes, ds.classes())
    if merged != listed:
        ds.write_classes(merged)
    return summary
