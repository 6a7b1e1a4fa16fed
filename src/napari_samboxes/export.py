"""Export a dataset folder as YOLO, YOLO-seg, Pascal VOC or COCO.

No napari or Qt. Every box table is read and every label, flag and mask
checked before the first write; a malformed one writes nothing
(:class:`~napari_samboxes.formats.errors.FormatError`, the file and line
named). An image that cannot be read is reported and left out; the others
are exported (:attr:`ConvertSummary.failed`).

Exported images are those with a box table (an empty table is an image
checked and found empty) and those marked done. Layouts (``OUT`` is the
output folder, ``<key>`` an image's file key, see
:mod:`napari_samboxes.dataset`, ``<subset>`` ``train``, ``val``, ``test``):

- ``yolo``, ``yolo-seg``: ``OUT/data.yaml``, ``OUT/images/<subset>/<key><suffix>``
  (links, or copies), ``OUT/labels/<subset>/<key>.txt`` (Ultralytics);
- ``voc`` ``flat`` (LabelImg): ``OUT/<key>.xml``; ``devkit``:
  ``OUT/Annotations/<key>.xml``, ``OUT/JPEGImages/<key><suffix>``,
  ``OUT/ImageSets/Main/<subset>.txt``, ``OUT/labelmap.txt``;
- ``coco`` ``flat``: ``OUT/annotations.json``; ``subsets``:
  ``OUT/annotations/instances_<subset>.json``, ``OUT/images/<subset>/<name>``.

COCO ids come from the id map (:mod:`napari_samboxes.idmap`), stored in
``DIR/annotations/coco_ids.json`` after each COCO export.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_write_text
from .convert import ConvertSummary, check_format, check_layout
from .dataset import EXPORT_MARK, Dataset, image_header
from .formats.boxtable import BoxTable, read_box_table
from .formats.coco import CocoImage, format_coco
from .formats.columns import MASK_COLUMN, PROMPT_COLUMN, cell
from .formats.errors import FormatError
from .formats.rle import cell_box, decode_cell
from .formats.text import check_label, text_lines
from .formats.voc import format_voc
from .formats.yamlfile import dump_data_yaml
from .formats.yolo import format_yolo, format_yolo_seg
from .idmap import ID_FILE, IdMap
from .outfiles import OutFile, remove_stale, write_all
from .splits import SUBSETS, assign_subsets, parse_split

__all__ = ["export_dataset"]


@dataclass
class _Item:
    """One image to export: where it is, its size, its export-ready boxes."""

    image: Path
    key: str
    size: tuple[int, int, int]
    table: BoxTable
    subset: str = "train"
    #: The image's path in the folder (``train/a.png``).
    name: str = ""

    @property
    def stem_name(self) -> str:
        """The image's name in ``images/`` and ``JPEGImages/``: unique stems."""
        return self.key + self.image.suffix


_NOTES = {
    "rounded": "boxes with fractional coordinates were rounded to whole pixels",
    "clipped": "boxes reaching outside their image were clipped to it",
    "unlabelled": "boxes without a label were left out",
    "no_mask": "boxes have a SAM prompt but no stored mask (their segmentation "
    "is empty / their rectangle); `napari-samboxes masks DIR` computes them",
}


def _row_line(path: Path, row: int) -> int:
    """The line box ``row`` of a box table starts on (quoted breaks count)."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        next(reader, None)
        start, n = reader.line_num + 1, -1
        for r in reader:
            lineno, start = start, reader.line_num + 1
            if r and any(c.strip() for c in r):
                n += 1
                if n == row:
                    return lineno
    return 0


def _check_table(table: BoxTable, path: Path, fmt: str) -> None:
    """Labels (and masks, where the format writes them) or FormatError
    naming the table's file and line."""
    for i, label in enumerate(table.labels):
        try:
            check_label(label.strip(), "")
            if fmt in ("coco", "yolo-seg") and cell(table.extra, MASK_COLUMN, i):
                decode_cell(cell(table.extra, MASK_COLUMN, i))
            if fmt == "voc":
                check_label(cell(table.extra, "pose", i), "", "pose")
        except FormatError as e:
            where = f"{path}, line {_row_line(path, i)}"
            raise FormatError(f"{where}: {str(e).removeprefix(': ')}") from None


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
    idx = np.flatnonzero(keep)
    extra = {k: [v[i] for i in idx] for k, v in table.extra.items()}
    for j, i in enumerate(idx):
        box = tuple(int(v) for v in c[i])
        if (
            cell(extra, PROMPT_COLUMN, j)
            and cell_box(cell(extra, MASK_COLUMN, j)) != box
        ):
            notes["no_mask"] += 1
    return BoxTable(
        labels=[table.labels[i].strip() for i in idx],
        boxes=c[keep],
        scores=np.asarray(table.scores, dtype=np.float64).reshape(-1)[keep],
        slices=np.zeros((len(idx), 0)),
        extra=extra,
    )


def _classes(ds: Dataset) -> list[str]:
    """The folder's classes, ``classes.txt`` checked line by line first."""
    if ds.classes_path.is_file():
        try:
            text = ds.classes_path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as e:
            raise FormatError(f"{ds.classes_path}: not UTF-8 text ({e})") from None
        for n, line in enumerate(text_lines(text), start=1):
            check_label(line.strip(), f"{ds.classes_path}, line {n}", "class name")
    return ds.classes()


def _read(ds: Dataset, fmt: str, summary: ConvertSummary) -> list[_Item]:
    """Every image to export, its boxes checked; unreadable images reported."""
    notes = dict.fromkeys(_NOTES, 0)
    done = ds.done_names()
    items: list[_Item] = []
    for image in ds.images:
        path = ds.find_annotation(image)
        name = ds.name(image)
        if path is None and name not in done:
            summary.skipped += 1
            continue
        found = read_box_table(path) if path is not None else BoxTable()
        if path is not None:
            _check_table(found, path, fmt)
        if fmt == "voc":
            check_label(image.name, str(image), "file name")
        try:
            size = image_header(image)
        except FormatError as e:
            summary.failed += 1
            summary.messages.append(f"{e}; not exported")
            continue
        table = _for_export(found, size[0], size[1], notes)
        items.append(_Item(image, ds.key(image), size, table, name=name))
    if summary.skipped:
        summary.messages.append(
            f"{summary.skipped} images have no annotation file yet and are not "
            "marked done: not exported"
        )
    if fmt not in ("coco", "yolo-seg"):
        notes["no_mask"] = 0
    summary.messages += [f"{n} {_NOTES[k]}" for k, n in notes.items() if n]
    return items


def _yolo(items: list[_Item], fmt: str, classes: list[str], out: Path) -> list[OutFile]:
    index = {name: i for i, name in enumerate(classes)}
    fmt_labels = format_yolo_seg if fmt == "yolo-seg" else format_yolo
    files = []
    for it in items:
        w, h, _ = it.size
        text = fmt_labels(it.table, w, h, index)
        files.append(OutFile(out / "labels" / it.subset / f"{it.key}.txt", text))
        files.append(OutFile(out / "images" / it.subset / it.stem_name, image=it.image))
    used = [s for s in SUBSETS if any(it.subset == s for it in items)] or ["train"]
    subsets = {s: f"images/{s}" for s in used}
    subsets.setdefault("val", subsets["train"])  # Ultralytics needs a val
    subsets = {k: subsets[k] for k in SUBSETS if k in subsets}
    files.append(OutFile(out / "data.yaml", dump_data_yaml(out, subsets, classes)))
    return files


def _labelmap(classes: list[str]) -> str:
    """Datumaro's ``labelmap.txt`` (name:r,g,b::), VOC's colour map."""

    def colour(i: int) -> str:
        r = g = b = 0
        for k in range(8):
            r |= ((i >> 0) & 1) << (7 - k)
            g |= ((i >> 1) & 1) << (7 - k)
            b |= ((i >> 2) & 1) << (7 - k)
            i >>= 3
        return f"{r},{g},{b}"

    lines = ["# label:color_rgb:parts:actions", "background:0,0,0::"]
    lines += [f"{name}:{colour(i)}::" for i, name in enumerate(classes, start=1)]
    return "\n".join(lines) + "\n"


def _voc(
    items: list[_Item], layout: str, classes: list[str], out: Path
) -> list[OutFile]:
    files = []
    for it in items:
        w, h, depth = it.size
        if layout == "flat":
            text = format_voc(it.table, it.image, w, h, depth)
            files.append(OutFile(out / f"{it.key}.xml", text))
            continue
        text = format_voc(
            it.table, it.image, w, h, depth, filename=it.stem_name, folder="JPEGImages"
        )
        files.append(OutFile(out / "Annotations" / f"{it.key}.xml", text))
        files.append(OutFile(out / "JPEGImages" / it.stem_name, image=it.image))
    if layout == "devkit":
        for s in SUBSETS:
            keys = [it.key for it in items if it.subset == s]
            if keys or s == "train":
                text = "".join(f"{k}\n" for k in keys)
                files.append(OutFile(out / "ImageSets" / "Main" / f"{s}.txt", text))
        files.append(OutFile(out / "labelmap.txt", _labelmap(classes)))
    return files


def _coco(
    items: list[_Item], layout: str, classes: list[str], out: Path, ids: IdMap
) -> list[OutFile]:
    cats = ids.category_ids(classes)
    by_subset: dict[str, list[CocoImage]] = {}
    files = []
    for it in items:
        t = it.table
        im = CocoImage(it.name, it.size[0], it.size[1], t)
        im.id = ids.image_id(it.name)
        im.ann_ids = list(ids.annotation_ids(it.name, t.labels, t.boxes))
        by_subset.setdefault(it.subset, []).append(im)
        if layout == "subsets":
            dst = out / "images" / it.subset / it.name
            files.append(OutFile(dst, image=it.image))
    if layout == "flat":
        text = format_coco(by_subset.get("train", []), classes, cats)
        return [*files, OutFile(out / "annotations.json", text)]
    for s in SUBSETS:
        if s in by_subset or s == "train":
            text = format_coco(by_subset.get(s, []), classes, cats)
            files.append(OutFile(out / "annotations" / f"instances_{s}.json", text))
    return files


def _stale(items: list[_Item], fmt: str, layout: str, out: Path) -> list[Path]:
    """Files of these images that an earlier export put in other subsets."""
    paths: list[Path] = []
    for it in items:
        for s in SUBSETS:
            if s == it.subset:
                continue
            if fmt.startswith("yolo"):
                paths += [out / "labels" / s / f"{it.key}.txt"]
                paths += [out / "images" / s / it.stem_name]
            elif layout == "subsets":
                paths += [out / "images" / s / it.name]
    return paths


def export_dataset(
    folder: str | Path,
    fmt: str,
    out: str | Path,
    *,
    split: str | tuple[float, ...] | None = None,
    seed: int = 0,
    layout: str | None = None,
    copy_images: bool = False,
    recursive: bool = True,
) -> ConvertSummary:
    """Write the folder's annotations to ``out`` (see the module docstring).

    ``out`` gets a marker file (:data:`~napari_samboxes.dataset.EXPORT_MARK`),
    so that an export inside the folder is never taken for its images.

    Parameters
    ----------
    folder : str or Path
        The image folder (``annotations/``, ``classes.txt``).
    fmt : str
        ``yolo``, ``yolo-seg``, ``voc`` or ``coco``.
    out : str or Path
        The output folder; files of the same names are replaced.
    split : str or tuple of float, optional
        ``"0.8,0.2"``: fractions for train, val (and test)
        (:mod:`napari_samboxes.splits`); none: every image in ``train``.
    seed : int
        The split's seed.
    layout : str, optional
        ``flat`` or ``devkit`` (VOC), ``flat`` or ``subsets`` (COCO).
    copy_images : bool
        Copy images into ``out`` rather than link them.
    recursive : bool
        Images in subfolders too (default); their files keep the path
        (``train/a.png`` -> ``labels/<subset>/train/a.txt``).

    Raises
    ------
    FormatError, BoxTableError
        For a malformed table, label, mask or id map; nothing written.
    ValueError
        For an unknown format or layout, or a bad split.
    OSError
        When ``out`` cannot be written (a link out of it: nothing written).
    """
    fmt = check_format(fmt)
    fractions = parse_split(split)
    layout = check_layout(fmt, layout, fractions is not None)
    ds = Dataset(folder, recursive=recursive)
    out = Path(out)
    summary = ConvertSummary()
    classes = _classes(ds)
    items = _read(ds, fmt, summary)
    subsets = assign_subsets([it.name for it in items], fractions, seed)
    for it in items:
        it.subset = subsets[it.name]
    ids = IdMap.load(ds.annotations_dir / ID_FILE) if fmt == "coco" else IdMap()
    if fmt.startswith("yolo"):
        files = _yolo(items, fmt, classes, out)
    elif fmt == "voc":
        files = _voc(items, layout, classes, out)
    else:
        files = _coco(items, layout, classes, out, ids)
    out.mkdir(parents=True, exist_ok=True)  # marked before the first file
    atomic_write_text(out / EXPORT_MARK, "exported by napari-samboxes\n")
    fallbacks = write_all(files, out, copy_images)
    remove_stale(_stale(items, fmt, layout, out), out)
    if fallbacks:
        summary.messages.append(f"{fallbacks} images copied: no links here")
    if fmt == "coco":
        try:
            ds.annotations_dir.mkdir(exist_ok=True)
            ids.save(ds.annotations_dir / ID_FILE, within=ds.folder)
        except OSError as e:
            summary.messages.append(
                f"{ds.annotations_dir / ID_FILE}: the id map could not be stored "
                f"({e}); new images may get other ids next time"
            )
    summary.images = len(items)
    summary.boxes = sum(len(it.table) for it in items)
    return summary
