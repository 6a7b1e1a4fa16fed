"""A folder of images and its annotations, as LabelImg keeps them; no napari or Qt.

Layout::

    DIR/a.png, DIR/b.jpg, ...       images (not recursive, hidden files skipped)
    DIR/annotations/<key>.csv       one box table per image (autosaved)
    DIR/classes.txt                 class names, one per line
    DIR/annotations/done.json       images marked done (``{"done": [names]}``)

**Done images.** An annotator marks an image *done* when it is finished,
also when it holds no object. The flags are image file names in
``annotations/done.json`` (a JSON object ``{"done": [...]}``, names in
natural order, written atomically; a write merges with the file as it is
on disk, so flags set by another process are kept). A done image counts as
annotated, is skipped by :meth:`Dataset.next_unannotated`, and every export
includes it (an image with no boxes as an empty one).

**File keys.** An image's *key* names its annotation file and its exported
files (YOLO ``labels/<key>.txt``, VOC ``<key>.xml``). The key is the file
stem (``a`` for ``a.png``) unless another image of the folder has the same
stem, compared case-insensitively (``a.png`` and ``A.jpg``), or the same key;
then it is the whole file name (``a.png`` and ``a.jpg`` give
``annotations/a.png.csv`` and ``annotations/a.jpg.csv``). Keys never collide,
and the usual one-image-per-stem folder keeps LabelImg's ``<stem>`` names.

**Files written under the other name.** When images are added or removed, an
image's key can change between its stem and its name. Its boxes are still
found: reading tries the key's file first, then the other name (stem or
name). A file under the other name that several images could own (``a.csv``
written when ``a.png`` was alone, then ``a.jpg`` added) goes to the one image
not modified after the file was written (the new image is normally newer).
When that does not single out one image, the file is read for none, left
untouched, and :meth:`Dataset.problems` names it. Saving writes the key's
file, then removes the image's file under the other name, so each image
ends with one file.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .formats.boxtable import BoxTable, read_box_table, write_box_table
from .formats.errors import FormatError
from .formats.text import check_label, text_lines

__all__ = [
    "DONE_FILE",
    "IMAGE_SUFFIXES",
    "Dataset",
    "FormatError",
    "file_keys",
    "image_header",
    "image_size",
    "list_images",
    "merge_classes",
    "natural_key",
    "read_classes",
    "read_done",
    "write_classes",
    "write_done",
]

#: Image file suffixes of a dataset folder (compared in lower case).
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"}
)

ImageRef = str | Path | int


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key giving natural order: ``img2`` before ``img10``, case-blind."""
    parts = re.split(r"(\d+)", name)
    return tuple(
        (1, int(p)) if i % 2 else (0, p.casefold()) for i, p in enumerate(parts)
    ) + ((0, name),)


def list_images(folder: str | Path) -> list[Path]:
    """The image files of ``folder`` in natural order (not recursive)."""
    found = [
        Path(e.path)
        for e in os.scandir(folder)
        if not e.name.startswith(".")
        and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES
        and e.is_file()
    ]
    return sorted(found, key=lambda p: natural_key(p.name))


def file_keys(names: Iterable[str]) -> dict[str, str]:
    """Each file name's key: its stem, or the whole name where stems collide.

    Keys are compared case-insensitively, so that they also stay apart on
    case-insensitive file systems.
    """
    key = {n: Path(n).stem for n in names}
    changed = True
    while changed:  # each pass only turns stems into names: it ends
        changed = False
        groups: dict[str, list[str]] = defaultdict(list)
        for n, k in key.items():
            groups[k.casefold()].append(n)
        for members in groups.values():
            for n in members if len(members) > 1 else ():
                if key[n] != n:
                    key[n] = n
                    changed = True
    return key


def merge_classes(*lists: Iterable[str]) -> list[str]:
    """Concatenate class lists, keeping first appearances; blanks dropped."""
    out: dict[str, None] = {}
    for names in lists:
        for n in names:
            if n.strip():
                out.setdefault(n.strip(), None)
    return list(out)


def read_classes(path: str | Path) -> list[str]:
    """Class names, one per line (LabelImg's ``predefined_classes.txt``).

    Names are stripped; blank lines and repeats are skipped; order is kept.
    Lines end at ``\n``, ``\r\n`` or ``\r`` only (a U+2028 inside a name
    does not split it).

    Raises
    ------
    FormatError
        For a file that is not UTF-8, or a name no format can hold (a
        control character, say), naming the line.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise FormatError(f"{path}: not UTF-8 text ({e})") from e
    lines = text_lines(text)
    for i, line in enumerate(lines, 1):
        if line.strip():
            check_label(line.strip(), f"{path}, line {i}", "class name")
    return merge_classes(lines)


def write_classes(path: str | Path, names: Iterable[str]) -> Path:
    """Write class names one per line, atomically (stripped, deduplicated).

    Raises
    ------
    ValueError
        For a name holding a line break, which one line cannot hold.
    """
    names = merge_classes(names)
    bad = [n for n in names if len(n.splitlines()) > 1]
    if bad:
        raise ValueError(f"{path}: a class name cannot hold a line break: {bad[0]!r}")
    return atomic_write_text(path, "".join(f"{n}\n" for n in names))


#: The file of the done flags, in ``DIR/annotations``.
DONE_FILE = "done.json"


def read_done(path: str | Path) -> set[str]:
    """The image names in a ``done.json`` (empty when the file is missing).

    Raises
    ------
    FormatError
        For a file that is not ``{"done": [names]}``.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return set()
    except (OSError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: cannot be read ({e})") from e
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise FormatError(f"{path}: not JSON ({e})") from None
    names = doc.get("done") if isinstance(doc, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise FormatError(f'{path}: expected {{"done": [image file names]}}')
    return set(names)


def write_done(path: str | Path, names: Iterable[str]) -> Path:
    """Write done flags atomically, names in natural order."""
    doc = {"done": sorted(set(names), key=natural_key)}
    text = json.dumps(doc, ensure_ascii=False, indent=1) + "\n"
    return atomic_write_text(path, text)


_BOMB_LOCK = threading.Lock()


def image_header(path: str | Path) -> tuple[int, int, int]:
    """``(width, height, channels)`` from the file header, without decoding.

    Raises
    ------
    FormatError
        When the file is not an image Pillow (or tifffile) can read.
    """
    from PIL import Image

    def header() -> tuple[int, int, int]:
        with Image.open(path) as im:
            return im.width, im.height, len(im.getbands())

    try:
        try:
            return header()
        except Image.DecompressionBombError:
            # only the header is read here: a huge image is no bomb
            with _BOMB_LOCK:
                limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                try:
                    return header()
                finally:
                    Image.MAX_IMAGE_PIXELS = limit
    except (OSError, ValueError) as e:
        if Path(path).suffix.lower() in (".tif", ".tiff"):
            return _tiff_header(path, e)
        raise FormatError(f"{path}: not a readable image ({e})") from e


def _tiff_header(path: str | Path, first: Exception) -> tuple[int, int, int]:
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page: Any = tif.pages[0]
            return (
                int(page.imagewidth),
                int(page.imagelength),
                int(page.samplesperpixel),
            )
    except Exception as e:  # any failure: the file is unreadable
        raise FormatError(f"{path}: not a readable image ({first})") from e


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image file, read from its header."""
    w, h, _ = image_header(path)
    return w, h


class Dataset:
    """A folder of images with one box table per image and a class list.

    Parameters
    ----------
    folder : str or Path
        The image folder. Its image list is read now; call :meth:`refresh`
        after files are added or removed.

    Attributes
    ----------
    folder : Path
    images : list of Path
        Image files in natural order.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise NotADirectoryError(f"{self.folder}: not a folder")
        self.images: list[Path] = []
        self.refresh()

    @property
    def annotations_dir(self) -> Path:
        """``DIR/annotations``."""
        return self.folder / "annotations"

    @property
    def done_path(self) -> Path:
        """``DIR/annotations/done.json``: the images marked done."""
        return self.annotations_dir / DONE_FILE

    def done_names(self) -> set[str]:
        """File names of the images marked done (those still in the folder).

        Raises
        ------
        FormatError
            When ``done.json`` is not a JSON object with a list of names.
        """
        return read_done(self.done_path) & set(self._index)

    def is_done(self, image: ImageRef) -> bool:
        """Whether the image is marked done."""
        return self.name(image) in read_done(self.done_path)

    def set_done(self, image: ImageRef, done: bool = True) -> bool:
        """Mark an image done (or not); returns whether the file changed.

        Merges with ``done.json`` as it is on disk now (atomic write).
        """
        name = self.name(image)
        flags = read_done(self.done_path)
        if (name in flags) == done:
            return False
        flags = flags | {name} if done else flags - {name}
        self.annotations_dir.mkdir(exist_ok=True)
        write_done(self.done_path, flags)
        return True

    @property
    def classes_path(self) -> Path:
        """``DIR/classes.txt``."""
        return self.folder / "classes.txt"

    def refresh(self) -> None:
        """Read the folder's image list again."""
        self.images = list_images(self.folder)
        names = [p.name for p in self.images]
        self._index = {n: i for i, n in enumerate(names)}
        self._keys = file_keys(names)
        self._canonical = {k + ".csv" for k in self._keys.values()}
        self._by_other: dict[str, list[str]] = defaultdict(list)
        for n in names:
            self._by_other[self._other(n)].append(n)

    def name(self, image: ImageRef) -> str:
        """The file name of an image given by index, name or path."""
        if isinstance(image, int):
            return self.images[image].name
        name = Path(image).name
        if name not in self._index:
            raise KeyError(f"{name} is not an image of {self.folder}")
        return name

    def index(self, image: ImageRef) -> int:
        """Position of an image in :attr:`images`."""
        return self._index[self.name(image)]

    def key(self, image: ImageRef) -> str:
        """The image's file key (see the module docstring)."""
        return self._keys[self.name(image)]

    def _other(self, name: str) -> str:
        """The annotation file under the name the key does not use."""
        stem = Path(name).stem
        return (name if self._keys[name] == stem else stem) + ".csv"

    def annotation_path(self, image: ImageRef) -> Path:
        """Where the image's boxes are saved: ``DIR/annotations/<key>.csv``."""
        return self.annotations_dir / (self.key(image) + ".csv")

    def _existing(self) -> set[str]:
        try:
            return set(os.listdir(self.annotations_dir))
        except (FileNotFoundError, NotADirectoryError):
            return set()

    def _claimants(self, other: str, existing: set[str]) -> list[str]:
        """Images that may own the file ``other``: those without their own."""
        if other in self._canonical:
            return []  # it is some image's own file
        return [
            n
            for n in self._by_other.get(other, [])
            if self._keys[n] + ".csv" not in existing
        ]

    def _owner(self, other: str, claimants: list[str]) -> str | None:
        if len(claimants) == 1:
            return claimants[0]
        try:  # the file was written before the images added after it
            t = (self.annotations_dir / other).stat().st_mtime_ns
            older = [n for n in claimants if (self.folder / n).stat().st_mtime_ns <= t]
        except OSError:  # a file went away meanwhile
            return None
        return older[0] if len(older) == 1 else None

    def _find(self, name: str, existing: set[str]) -> Path | None:
        own, other = self._keys[name] + ".csv", self._other(name)
        if own in existing:
            return self.annotations_dir / own
        claimants = self._claimants(other, existing) if other in existing else []
        if name in claimants and self._owner(other, claimants) == name:
            return self.annotations_dir / other
        return None

    def find_annotation(self, image: ImageRef) -> Path | None:
        """The file that holds the image's boxes now, if any.

        That is :meth:`annotation_path`, or the file under the image's other
        name (see the module docstring).
        """
        return self._find(self.name(image), self._existing())

    def problems(self) -> list[str]:
        """Annotation files that no single image owns, one sentence each."""
        existing = self._existing()
        out = []
        for other in sorted(self._by_other.keys() & existing):
            names = self._claimants(other, existing)
            if len(names) > 1 and self._owner(other, names) is None:
                out.append(
                    f"{self.annotations_dir / other} may belong to "
                    f"{' or '.join(names)}: rename it to "
                    f"{' or '.join(n + '.csv' for n in names)}"
                )
        return out

    def _annotated(self, name: str, existing: set[str]) -> bool:
        path = self._find(name, existing)
        if path is None:
            return False
        try:
            with open(path, encoding="utf-8-sig") as f:
                next(f, None)  # header
                return any(line.strip() for line in f)
        except (OSError, UnicodeDecodeError):
            return True  # a file is there: do not offer the image as new

    def is_annotated(self, image: ImageRef) -> bool:
        """Whether the image has a box table with at least one box."""
        return self._annotated(self.name(image), self._existing())

    def has_boxes_or_done(self, image: ImageRef) -> bool:
        """Whether the image has boxes or is marked done (it counts as
        annotated in the progress)."""
        name = self.name(image)
        return name in read_done(self.done_path) or self._annotated(
            name, self._existing()
        )

    def annotated_names(self) -> set[str]:
        """Names of the images with boxes or marked done (one pass)."""
        existing, done = self._existing(), read_done(self.done_path)
        return {
            p.name
            for p in self.images
            if p.name in done or self._annotated(p.name, existing)
        }

    def progress(self) -> tuple[int, int]:
        """``(annotated images, images)``; done images count as annotated."""
        return len(self.annotated_names()), len(self.images)

    def next_unannotated(self, after_index: int = -1) -> int | None:
        """Index of the next image without boxes after ``after_index``.

        The search wraps around and ends with ``after_index`` itself; None
        when every image has boxes.
        """
        n = len(self.images)
        existing, done = self._existing(), read_done(self.done_path)
        for step in range(1, n + 1):
            i = (after_index + step) % n
            name = self.images[i].name
            if name not in done and not self._annotated(name, existing):
                return i
        return None

    def load_boxes(self, image: ImageRef) -> BoxTable:
        """The image's box table; an empty table when it has none."""
        path = self.find_annotation(image)
        return BoxTable() if path is None else read_box_table(path)

    def save_boxes(self, image: ImageRef, table: BoxTable) -> Path:
        """Write the image's box table atomically to :meth:`annotation_path`.

        The image's file under its other name, if any, is then removed. A
        symbolic link leading out of the folder is refused
        (:class:`~napari_samboxes.atomic.OutsideError`), nothing written.
        """
        name = self.name(image)
        before = self._find(name, self._existing())
        self.annotations_dir.mkdir(exist_ok=True)
        path = write_box_table(self.annotation_path(name), table, within=self.folder)
        if before is not None and before != path:
            before.unlink(missing_ok=True)
        return path

    def classes(self) -> list[str]:
        """``classes.txt``'s names, then new labels of the box tables.

        New labels come in image order, then row order.
        """
        listed = read_classes(self.classes_path) if self.classes_path.is_file() else []
        existing = self._existing()
        found: list[str] = []
        for p in self.images:
            path = self._find(p.name, existing)
            if path is not None:
                found.extend(read_box_table(path).labels)
        return merge_classes(listed, found)

    def write_classes(self, names: Iterable[str]) -> Path:
        """Save ``names`` to ``DIR/classes.txt``."""
        return write_classes(self.classes_path, names)
