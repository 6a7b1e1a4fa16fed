"""Import YOLO, Pascal VOC or COCO annotations into a dataset folder.

No napari or Qt. Source files are matched to the folder's images by file
name, then key, then stem (COCO ``file_name`` and VOC ``<filename>`` as
written, then their last part after ``/`` or ``\\``). Every source file is
parsed, every name checked, every target checked before the first write:
a malformed file (:class:`~napari_samboxes.formats.errors.FormatError`, the
file and line or entry named) or a box table that is a symbolic link out
of the folder (:class:`~napari_samboxes.atomic.OutsideError`) writes
nothing. Images that already have boxes, or whose table is a symbolic
link, are left alone unless ``overwrite``.

YOLO sources: Ultralytics' layout (``data.yaml``, ``labels/<subset>/``),
the flat one (``labels/``, ``classes.txt``) and LabelImg's (label files
beside ``classes.txt``). The class names file is the first of
``data.yaml``, ``dataset.yaml``, ``classes.txt``, ``obj.names`` in the
source folder, then in its ``labels/``; every other ``.txt`` is a label
file (so ``labels/train/classes.txt`` is the label file of ``classes.png``
when ``data.yaml`` names the classes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from .atomic import check_inside
from .convert import ConvertSummary
from .dataset import (
    BROKEN,
    EMPTY,
    Dataset,
    image_header,
    merge_classes,
    read_classes,
)
from .formats.boxtable import BoxTable
from .formats.coco import parse_coco
from .formats.errors import FormatError
from .formats.text import label_problem
from .formats.voc import parse_voc
from .formats.yolo import CLASS_FILES, parse_yolo, read_yolo_names
from .idmap import ID_FILE, IdMap
from .splits import SUBSETS

__all__ = ["import_dataset", "read_sources"]

#: Formats ``import`` reads (``yolo-seg`` labels are read by ``yolo``).
IMPORT_FORMATS = ("yolo", "yolo-seg", "voc", "coco")

Found = dict[str, tuple[BoxTable, str, list[int | None], int | str | None]]


class _Matcher:
    """Finds the folder's image for a source file's names."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        names = ds.names  # paths in the folder: train/a.png
        self.by_name = {n: n for n in names}
        base: dict[str, list[str]] = {}
        for n in names:
            base.setdefault(PurePosixPath(n).name, []).append(n)
        for b, found in base.items():  # a file name alone, where unique
            if len(found) == 1:
                self.by_name.setdefault(b, found[0])
        self.by_key = {ds.key(n): n for n in names}
        self.by_stem: dict[str, list[str]] = {}
        for n in names:
            self.by_stem.setdefault(PurePosixPath(n).stem.casefold(), []).append(n)

    def find(
        self, names: Iterable[str], source: str | Path, summary: ConvertSummary
    ) -> str | None:
        """The first name that names one image; None (reported) otherwise."""
        names = [n for n in names if n]
        for n in names:  # in the order given: a path before a bare name
            for table in (self.by_name, self.by_key):
                if n in table:
                    return table[n]
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
        summary.messages.append(
            f"{source}: no image {names[0] if names else ''!r} in {self.ds.folder}"
        )
        summary.skipped += 1
        return None


def _file_names(name: str) -> list[str]:
    """A file name as written, then its last part after ``/`` or ``\\``."""
    return list(
        dict.fromkeys([name, PurePosixPath(name).name, PureWindowsPath(name).name])
    )


def _taken(image: str, found: Found, f: object, summary: ConvertSummary) -> bool:
    if image in found:
        summary.messages.append(f"{f}: {image} already has a source file; not imported")
        summary.skipped += 1
    return image in found


def _names_file(src: Path, labels_dir: Path) -> Path | None:
    for d in dict.fromkeys([src, labels_dir]):
        for name in CLASS_FILES:
            if (d / name).is_file():
                return d / name
    return None


def _paths_below(f: Path, root: Path, skip: Iterable[str]) -> list[str]:
    """A label file's path below ``root`` without its suffix (``train/a``),
    with the first folder left out first when it is one of ``skip`` (YOLO's
    subset folder: ``labels/train/train/a.txt`` -> ``train/a``; VOC's
    ``Annotations``): the keys of an image in a subfolder, before any guess
    by file name alone."""
    try:
        rel = f.relative_to(root).with_suffix("").as_posix()
    except ValueError:
        return []
    head, _, rest = rel.partition("/")
    out = [rest, rel] if rest and head in set(skip) else [rel]
    return [n for n in out if n]


def _yolo_sources(
    src: Path, ds: Dataset, match: _Matcher, summary: ConvertSummary
) -> tuple[Found, list[str], dict[str, int]]:
    files: list[Path] = []
    if src.is_file():  # one label file: its folder holds the class names
        src, files = src.parent, [src]
    labels_dir = src / "labels" if (src / "labels").is_dir() else src
    names_file = _names_file(src, labels_dir)
    names = read_yolo_names(names_file) if names_file is not None else None
    if names is None:
        summary.messages.append(
            f"{src}: no {' / '.join(CLASS_FILES)}; classes are named by their ids"
        )
    files = files or sorted(labels_dir.rglob("*.txt"))
    found: Found = {}
    for f in files:
        if f == names_file or f.name.startswith("."):
            continue
        below = _paths_below(f, labels_dir, SUBSETS)
        image = match.find([*below, f.stem], f, summary)
        if image is None or _taken(image, found, f, summary):
            continue
        w, h, _ = image_header(ds.folder / image)
        try:
            text = f.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as e:
            raise FormatError(f"{f}: not UTF-8 text ({e})") from None
        found[image] = (parse_yolo(text, w, h, names, f), str(f), [], None)
    return found, list(names or []), {}


def _size_check(
    name: str, declared: tuple[int | None, int | None], where: str, s: ConvertSummary
) -> None:
    actual = None
    if declared[0] and declared[1]:
        actual = image_header(name)[:2]
    if actual is not None and declared != actual:
        s.messages.append(
            f"{where}: says {declared[0]}x{declared[1]} but {Path(name).name} is "
            f"{actual[0]}x{actual[1]}; boxes kept as written, clipped to the image"
        )


def _voc_sources(
    src: Path, ds: Dataset, match: _Matcher, summary: ConvertSummary
) -> tuple[Found, list[str], dict[str, int]]:
    found: Found = {}
    files = [src] if src.is_file() else sorted(src.rglob("*.xml"))
    for f in files:
        voc = parse_voc(f)
        where = _paths_below(f, src, ("Annotations",)) if src.is_dir() else []
        names = [*where, *_file_names(voc.filename), f.stem]
        image = match.find(names, f, summary)
        if image is None or _taken(image, found, f, summary):
            continue
        _size_check(str(ds.folder / image), (voc.width, voc.height), str(f), summary)
        found[image] = (voc.table, str(f), [], None)
    labels = [lab for t, _, _, _ in found.values() for lab in t.labels]
    return found, merge_classes(labels), {}


def _coco_sources(
    src: Path, ds: Dataset, match: _Matcher, summary: ConvertSummary
) -> tuple[Found, list[str], dict[str, int]]:
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
    coco = parse_coco(path)
    if coco.crowd:
        summary.messages.append(
            f"{path}: {coco.crowd} crowd regions kept as boxes with iscrowd 1"
        )
    found: Found = {}
    for im in coco.images:
        where = f"{path}: {im.file_name}"
        image = match.find(_file_names(im.file_name), where, summary)
        if image is None or _taken(image, found, where, summary):
            continue
        declared = (im.width, im.height)
        _size_check(str(ds.folder / image), declared, where, summary)
        found[image] = (im.table, where, list(im.ann_ids), im.id)
    return found, coco.classes, coco.category_ids


_READERS: dict[str, Callable[..., tuple[Found, list[str], dict[str, int]]]] = {
    "yolo": _yolo_sources,
    "yolo-seg": _yolo_sources,
    "voc": _voc_sources,
    "coco": _coco_sources,
}


def _imported(table: BoxTable, width: int, height: int, where: str) -> BoxTable:
    """An imported table: boxes clipped to the image, marked as imported.

    Raises
    ------
    FormatError
        For a box entirely outside the image (its file declared another size).
    """
    n = len(table)
    b = np.asarray(table.boxes, dtype=np.float64).reshape(-1, 4)
    out = (b[:, 0] > width - 1) | (b[:, 1] > height - 1)
    if out.any():
        raise FormatError(
            f"{where}: box {int(np.flatnonzero(out)[0])} lies entirely outside "
            f"the {width} x {height} image"
        )
    return BoxTable(
        labels=list(table.labels),
        boxes=np.clip(b, 0, [width - 1, height - 1, width - 1, height - 1]),
        scores=np.asarray(table.scores, dtype=np.float64).reshape(n),
        slices=np.zeros((n, 0)),
        sources=["import"] * n,
        extra={k: list(v) for k, v in table.extra.items()},
    )


def _plan(
    ds: Dataset, found: Found, overwrite: bool, summary: ConvertSummary
) -> dict[str, BoxTable]:
    """The tables to write; links out of the folder refused, nothing written."""
    plan: dict[str, BoxTable] = {}
    for image, (table, where, _, _) in found.items():
        target, now = ds.annotation_path(image), ds.find_annotation(image)
        linked = [p for p in (target, now) if p is not None and p.is_symlink()]
        for p in [target, *linked]:
            check_inside(p, ds.folder)  # OutsideError: nothing written yet
        state = EMPTY if now is None else Dataset.table_state(now)
        if not overwrite and (linked or state != EMPTY):
            why = (
                "is a symbolic link"
                if linked
                else "has a table that is not a box table (fix or remove it)"
                if state == BROKEN
                else "already has boxes"
            )
            summary.messages.append(f"{image} {why}; not replaced (use overwrite)")
            summary.skipped += 1
            continue
        w, h = image_header(ds.folder / image)[:2]
        plan[image] = _imported(table, w, h, where)
    return plan


def _read_sources(
    src: str | Path, fmt: str, folder: str | Path, recursive: bool
) -> tuple[str, Dataset, ConvertSummary, tuple[Found, list[str], dict[str, int]]]:
    """The format (lower case), the folder, the summary and what the
    format's reader found; raises for a bad format or a missing source."""
    low = fmt.lower()
    if low not in IMPORT_FORMATS:
        raise ValueError(
            f"unknown format {fmt!r}: choose one of {', '.join(IMPORT_FORMATS)}"
        )
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or folder")
    ds = Dataset(folder, recursive=recursive)
    summary = ConvertSummary()
    return low, ds, summary, _READERS[low](src, ds, _Matcher(ds), summary)


def read_sources(
    src: str | Path, fmt: str, folder: str | Path, *, recursive: bool = True
) -> tuple[dict[str, BoxTable], ConvertSummary]:
    """The boxes ``import`` would write, read without writing anything.

    Returns the tables by image name (its path in the folder), checked and
    clipped to their images as ``import`` does (source ``import``), and the
    summary of what was matched and skipped (its messages).

    Raises
    ------
    FormatError
        For a malformed source file.
    ValueError
        For an unknown format.
    """
    low, ds, summary, (found, _, _) = _read_sources(src, fmt, folder, recursive)
    out: dict[str, BoxTable] = {}
    for image, (table, where, _, _) in found.items():
        w, h = image_header(ds.folder / image)[:2]
        out[image] = _imported(table, w, h, where)
        summary.images += 1
        summary.boxes += len(table)
    return out, summary


def import_dataset(
    src: str | Path,
    fmt: str,
    folder: str | Path,
    *,
    overwrite: bool = False,
    recursive: bool = True,
) -> ConvertSummary:
    """Turn ``fmt`` annotations in ``src`` into the folder's box tables.

    ``src`` is a YOLO folder or label file, a folder of VOC ``.xml`` files
    (searched recursively) or one file, or a COCO ``.json`` file or a
    folder holding one (see the module docstring). The source's class
    names (then labels of the folder's tables) are added to
    ``DIR/classes.txt``; COCO ids are kept in the id map
    (:mod:`napari_samboxes.idmap`) where no other image has them.

    Raises
    ------
    FormatError
        For a malformed source file; nothing written.
    OutsideError
        For a box table that is a symbolic link out of the folder.
    """
    low, ds, summary, read = _read_sources(src, fmt, folder, recursive)
    found, classes, category_ids = read
    listed = read_classes(ds.classes_path) if ds.classes_path.is_file() else None
    ids = IdMap.load(ds.annotations_dir / ID_FILE) if low == "coco" else None
    plan = _plan(ds, found, overwrite, summary)
    new_labels = [lab for t in plan.values() for lab in t.labels]
    merged = merge_classes(listed or [], classes, ds.classes(), new_labels)
    bad = [n for n in merged if label_problem(n)]
    if bad:  # labels of tables already there: kept in them, not listed
        summary.messages.append(
            f"{len(bad)} labels of the folder's tables cannot be class names "
            f"({label_problem(bad[0])}); not added to classes.txt"
        )
        merged = [n for n in merged if n not in bad]
    for image, table in plan.items():
        ds.save_boxes(image, table)
        summary.images += 1
        summary.boxes += len(table)
    if merged != listed:
        ds.write_classes(merged)
    if ids is not None and plan:
        for name, cid in category_ids.items():
            if cid not in ids.categories.values():
                ids.categories.setdefault(name, cid)
        for image, table in plan.items():
            _, _, ann_ids, image_id = found[image]
            ids.images.pop(image, None)
            ids.image_id(image, image_id if isinstance(image_id, int) else None)
            ids.boxes.pop(image, None)
            ids.annotation_ids(image, table.labels, table.boxes, ann_ids)
        ids.save(ds.annotations_dir / ID_FILE, within=ds.folder)
    return summary
