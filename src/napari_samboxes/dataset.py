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

import hashlib
import json
import os
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from .atomic import atomic_write_text
from .formats.boxtable import BoxTable, read_box_table, write_box_table
from .formats.errors import FormatError
from .formats.text import check_label, text_lines

__all__ = [
    "ANNOTATIONS",
    "BOXES",
    "BROKEN",
    "DONE_FILE",
    "EMPTY",
    "EXPORT_MARK",
    "INDEX_FILE",
    "ChangedOnDisk",
    "Stamp",
    "IMAGE_SUFFIXES",
    "Dataset",
    "FormatError",
    "count_entries",
    "file_keys",
    "image_header",
    "ImageList",
    "image_size",
    "list_image_names",
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


#: The folder of the box tables; never searched for images.
ANNOTATIONS = "annotations"
#: A file marking a folder that ``export`` wrote; never searched for images.
EXPORT_MARK = ".napari-samboxes-export"


_DIGITS = re.compile(r"\d+")


def _number(m: re.Match[str]) -> str:
    digits = m.group().lstrip("0") or "0"
    return "\x00" + chr(0x30 + min(len(digits), 0xFFFF)) + digits


def natural_text(name: str) -> str:
    """The order of :func:`natural_key` as one string (sorting strings never
    holds Python's lock for long, sorting tuples of 100,000 names does)."""
    return _DIGITS.sub(_number, name.casefold()) + "\x00\x00" + name


def list_images(
    folder: str | Path, recursive: bool = True, problems: list[str] | None = None
) -> list[Path]:
    """The image files of ``folder`` (and its subfolders), in natural order.

    See :func:`list_image_names`.
    """
    return [Path(p) for _, p in list_image_names(folder, recursive, problems)]


def list_image_names(
    folder: str | Path, recursive: bool = True, problems: list[str] | None = None
) -> list[tuple[str, str]]:
    """``(name, path)`` of the image files of ``folder`` (and its
    subfolders), in natural order; a name is the path in the folder,
    ``/``-separated (``train/a.png``), a path is ``folder`` joined with it.

    Hidden files and folders, the top level ``annotations`` folder and
    folders written by ``export`` (holding :data:`EXPORT_MARK`) are
    skipped. A symbolic link that loops or leads nowhere, and a subfolder
    that cannot be read, are skipped with one sentence in ``problems``; a
    folder reached twice through links is searched once.

    Parameters
    ----------
    folder : str or Path
    recursive : bool
        Search subfolders too (default); False: ``folder`` only.
    problems : list of str, optional
        Receives what was skipped and why.
    """
    root = Path(folder)
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    said = problems if problems is not None else []

    todo = [(str(root), "")]  # a stack, not recursion: any depth
    while todo:
        path, rel = todo.pop()
        real = os.path.realpath(path)
        if real in seen:
            said.append(f"{rel or '.'}: a link back to a folder already searched")
            continue
        seen.add(real)
        try:
            entries = list(os.scandir(path))
        except OSError as e:
            if not rel:
                raise
            said.append(f"{rel}: cannot be read ({e.strerror or e}); skipped")
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            name = rel + entry.name
            try:
                if entry.is_dir():
                    top = rel or entry.name != ANNOTATIONS
                    mark = os.path.lexists(os.path.join(entry.path, EXPORT_MARK))
                    if recursive and top and not mark:
                        todo.append((entry.path, name + "/"))
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                    if entry.is_file():
                        found.append((name, entry.path))
                    elif entry.is_symlink():
                        said.append(f"{name}: a link to nothing; skipped")
            except OSError as err:  # a link that loops
                said.append(f"{name}: {err.strerror or err}; skipped")
    found.sort(key=lambda t: natural_text(t[0]))
    return found


def count_entries(folder: str | Path, limit: int) -> int:
    """How many entries ``folder`` and its subfolders hold, counted up to
    ``limit`` only (the cost is bounded whatever the folder's size)."""
    n = 0
    todo = [str(folder)]
    while todo and n < limit:
        try:
            with os.scandir(todo.pop()) as it:
                for entry in it:
                    n += 1
                    if n >= limit:
                        break
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            todo.append(entry.path)
                    except OSError:
                        pass
        except OSError:
            continue
    return min(n, limit)


def _stem(name: str) -> str:
    """``train/a`` for ``train/a.png``."""
    return name[: len(name) - len(os.path.splitext(name)[1])]


def file_keys(names: Iterable[str]) -> dict[str, str]:
    """Each file name's key: its stem, or the whole name where stems collide.

    Names may hold folders (``train/a.png``: key ``train/a``). Keys are
    compared case-insensitively, so that they also stay apart on
    case-insensitive file systems.
    """
    key = {n: _stem(n) for n in names}
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
    doc = {"done": sorted(set(names), key=natural_text)}
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


#: The progress index in ``DIR/annotations`` (see :meth:`Dataset.table_states`).
INDEX_FILE = ".samboxes-index.json"
_INDEX_VERSION = 2
#: Table states of :meth:`Dataset.table_states`.
BOXES, EMPTY, BROKEN = "boxes", "empty", "broken"


@dataclass(frozen=True)
class Stamp:
    """What a box table file was when it was read: size and content hash
    (``None`` fields: there was no file)."""

    size: int | None = None
    sha256: str | None = None

    @classmethod
    def of(cls, path: str | Path | None) -> Stamp:
        """The stamp of the file at ``path`` now (no file: the empty stamp)."""
        if path is None:
            return cls()
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            return cls()
        return cls(len(data), hashlib.sha256(data).hexdigest())


class ChangedOnDisk(RuntimeError):
    """A box table changed on disk since it was read (see
    :meth:`Dataset.save_boxes`)."""


class ImageList(Sequence[Path]):
    """The image files of a folder: a sequence of ``Path`` made on access
    from the paths as text (:attr:`paths`), so that listing 100,000 images
    does not make 100,000 ``Path`` objects."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    @overload
    def __getitem__(self, i: int) -> Path: ...
    @overload
    def __getitem__(self, i: slice) -> list[Path]: ...
    def __getitem__(self, i: int | slice) -> Path | list[Path]:
        if isinstance(i, slice):
            return [Path(p) for p in self.paths[i]]
        return Path(self.paths[i])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ImageList):
            return self.paths == other.paths
        if isinstance(other, list | tuple):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ImageList({len(self)} images)"


class Dataset:
    """A folder of images with one box table per image and a class list.

    Parameters
    ----------
    folder : str or Path
        The image folder. Its image list is read now; call :meth:`refresh`
        after files are added or removed.
    recursive : bool
        Images in subfolders too (default), named by their path in the
        folder (``train/a.png``, key ``train/a``, table
        ``annotations/train/a.csv``).

    Attributes
    ----------
    folder : Path
    images : list of Path
        Image files in natural order.
    listing_problems : list of str
        Links and subfolders skipped when listing, one sentence each.
    """

    def __init__(self, folder: str | Path, recursive: bool = True) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise NotADirectoryError(f"{self.folder}: not a folder")
        self.recursive = recursive
        self.images: ImageList = ImageList([])
        self.listing_problems: list[str] = []
        self.refresh()

    @property
    def annotations_dir(self) -> Path:
        """``DIR/annotations``."""
        return self.folder / ANNOTATIONS

    @property
    def done_path(self) -> Path:
        """``DIR/annotations/done.json``: the images marked done."""
        return self.annotations_dir / DONE_FILE

    @property
    def index_path(self) -> Path:
        """``DIR/annotations/.samboxes-index.json``: the progress index."""
        return self.annotations_dir / INDEX_FILE

    def done_names(self) -> set[str]:
        """Names of the images marked done (those still in the folder).

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
        with self.lock():
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
        problems: list[str] = []
        found = list_image_names(self.folder, self.recursive, problems)
        self.listing_problems = problems
        names = [n for n, _ in found]
        paths = [p for _, p in found]
        self.images = ImageList(paths)
        self._names = names
        self._index = {n: i for i, n in enumerate(names)}
        self._paths = dict(zip(paths, names, strict=True))
        self._keys = file_keys(names)
        self._canonical = {k + ".csv" for k in self._keys.values()}
        self._by_other: dict[str, list[str]] = defaultdict(list)
        for n in names:
            self._by_other[self._other(n)].append(n)

    @property
    def names(self) -> list[str]:
        """The images' names (paths in the folder, ``/``-separated), in the
        order of :attr:`images`."""
        return self._names

    def name(self, image: ImageRef) -> str:
        """The name (path in the folder) of an image given by index, name
        or path."""
        if isinstance(image, int):
            return self._names[image]
        text = str(image)
        if text in self._index:
            return text
        found = self._paths.get(text)
        if found is not None:
            return found
        p = Path(image)
        try:
            rel = p.relative_to(self.folder).as_posix()
        except ValueError:
            rel = p.as_posix()
        if rel in self._index:
            return rel
        if p.name in self._index:
            return p.name
        raise KeyError(f"{text} is not an image of {self.folder}")

    def index(self, image: ImageRef) -> int:
        """Position of an image in :attr:`images`."""
        return self._index[self.name(image)]

    def key(self, image: ImageRef) -> str:
        """The image's file key (see the module docstring)."""
        return self._keys[self.name(image)]

    def _other(self, name: str) -> str:
        """The annotation file under the name the key does not use."""
        stem = _stem(name)
        return (name if self._keys[name] == stem else stem) + ".csv"

    def annotation_path(self, image: ImageRef) -> Path:
        """Where the image's boxes are saved: ``DIR/annotations/<key>.csv``."""
        return self.annotations_dir / (self.key(image) + ".csv")

    def _existing(self) -> set[str]:
        """The files under ``annotations`` (paths in it, ``/``-separated)."""
        return set(self._table_stats())

    def _table_stats(self) -> dict[str, tuple[int, int]]:
        """``{path in annotations: (mtime_ns, size)}`` of its files."""
        out: dict[str, tuple[int, int]] = {}

        todo = [(str(self.annotations_dir), "")]
        while todo:
            path, rel = todo.pop()
            try:
                entries = list(os.scandir(path))
            except OSError:
                continue
            for e in entries:
                if e.name.startswith("."):
                    continue
                try:
                    if e.is_dir(follow_symlinks=False):
                        todo.append((e.path, rel + e.name + "/"))
                    else:
                        st = e.stat()
                        out[rel + e.name] = (st.st_mtime_ns, st.st_size)
                except OSError:  # a link that loops or leads nowhere
                    out[rel + e.name] = (0, -1)
        return out

    def _on_disk(self, rel: str) -> bool:
        return os.path.lexists(self.annotations_dir / rel)

    def _claimants(self, other: str, exists: Callable[[str], bool]) -> list[str]:
        """Images that may own the file ``other``: those without their own."""
        if other in self._canonical:
            return []  # it is some image's own file
        return [
            n
            for n in self._by_other.get(other, [])
            if not exists(self._keys[n] + ".csv")
        ]

    def _owner(self, other: str, claimants: list[str]) -> str | None:
        """The image a file under the other name belongs to, or None.

        The only image with that other name owns it. Among several (``a.png``
        and ``a.jpg`` for ``a.csv``), the one image not modified after the
        file was written does, if it is a claimant (an image that already has
        its own file never gets a second one, and the file is not handed to
        the other image either: it stays unowned and reported).
        """
        sharing = self._by_other.get(other, [])
        if len(sharing) == 1:
            return claimants[0] if claimants == sharing else None
        try:  # the file was written before the images added after it
            t = (self.annotations_dir / other).stat().st_mtime_ns
            older = [
                n
                for n in sharing
                if self.images[self._index[n]].stat().st_mtime_ns <= t
            ]
        except OSError:  # a file went away meanwhile
            return None
        return older[0] if len(older) == 1 and older[0] in claimants else None

    def _find_rel(self, name: str, exists: Callable[[str], bool]) -> str | None:
        own, other = self._keys[name] + ".csv", self._other(name)
        if exists(own):
            return own
        if not exists(other):
            return None
        claimants = self._claimants(other, exists)
        if name in claimants and self._owner(other, claimants) == name:
            return other
        return None

    def _find(
        self, name: str, exists: Callable[[str], bool] | None = None
    ) -> Path | None:
        rel = self._find_rel(name, exists or self._on_disk)
        return None if rel is None else self.annotations_dir / rel

    def find_annotation(self, image: ImageRef) -> Path | None:
        """The file that holds the image's boxes now, if any.

        That is :meth:`annotation_path`, or the file under the image's other
        name (see the module docstring). Only these files are looked at: the
        cost does not grow with the folder.
        """
        return self._find(self.name(image))

    def problems(self) -> list[str]:
        """Annotation files that no single image owns, and what listing the
        folder skipped, one sentence each."""
        existing = self._existing()
        out = list(self.listing_problems)
        for other in sorted(self._by_other.keys() & existing):
            names = self._claimants(other, existing.__contains__)
            if names and self._owner(other, names) is None:
                out.append(
                    f"{self.annotations_dir / other} may belong to "
                    f"{' or '.join(names)}: rename it to "
                    f"{' or '.join(self._keys[n] + '.csv' for n in names)}"
                )
        return out

    @staticmethod
    def table_info(path: str | Path) -> tuple[str, list[str]]:
        """``(state, labels)`` of a table file: the state is :data:`BOXES`,
        :data:`EMPTY` or :data:`BROKEN` (not readable as a box table)."""
        try:
            table = read_box_table(path)
        except (OSError, ValueError):
            return BROKEN, []
        return (BOXES if len(table) else EMPTY), merge_classes(table.labels)

    @classmethod
    def table_state(cls, path: str | Path) -> str:
        """:data:`BOXES`, :data:`EMPTY` or :data:`BROKEN` for a table file."""
        return cls.table_info(path)[0]

    def table_index(self) -> dict[str, tuple[str, list[str]]]:
        """Each image's table ``(state, labels)`` (no table: left out).

        Reads only the tables changed since the last call: states and labels
        are kept in :attr:`index_path` with each table's size and
        modification time, and that index is rewritten (atomically, best
        effort) when it changed. The cost is one ``stat`` per table plus the
        tables that changed; safe to call from a worker thread.
        """
        stats = self._table_stats()
        try:
            doc = json.loads(self.index_path.read_text(encoding="utf-8"))
            old = doc["tables"] if doc.get("version") == _INDEX_VERSION else {}
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            old = {}
        old = old if isinstance(old, dict) else {}
        new: dict[str, list[Any]] = {}
        out: dict[str, tuple[str, list[str]]] = {}
        for name in self._names:
            rel = self._find_rel(name, stats.__contains__)
            if rel is None:
                continue
            mtime, size = stats[rel]
            hit = old.get(rel)
            if isinstance(hit, list) and len(hit) == 4 and hit[:2] == [mtime, size]:
                info = (str(hit[2]), [str(x) for x in hit[3]])
            else:
                info = self.table_info(self.annotations_dir / rel)
            new[rel] = [mtime, size, info[0], info[1]]
            out[name] = info
        if new != old and stats:
            doc = {"version": _INDEX_VERSION, "tables": new}
            try:
                atomic_write_text(self.index_path, json.dumps(doc, ensure_ascii=False))
            except OSError:
                pass  # a read-only folder: counted again next time
        return out

    def table_states(self) -> dict[str, str]:
        """Each image's table state (see :meth:`table_index`)."""
        return {n: state for n, (state, _) in self.table_index().items()}

    def is_annotated(self, image: ImageRef) -> bool:
        """Whether the image has a box table with at least one box."""
        path = self.find_annotation(image)
        return path is not None and self.table_state(path) == BOXES

    def has_boxes_or_done(self, image: ImageRef) -> bool:
        """Whether the image has boxes or is marked done (it counts as
        annotated in the progress)."""
        return self.name(image) in read_done(self.done_path) or self.is_annotated(image)

    def annotated_names(self) -> set[str]:
        """Names of the images with boxes or marked done (a broken table is
        not annotated)."""
        done = read_done(self.done_path)
        states = self.table_states()
        return {n for n in self._names if n in done or states.get(n) == BOXES}

    def progress(self) -> tuple[int, int]:
        """``(annotated images, images)``; done images count as annotated."""
        return len(self.annotated_names()), len(self.images)

    def next_unannotated(self, after_index: int = -1) -> int | None:
        """Index of the next image without boxes after ``after_index``.

        The search wraps around and ends with ``after_index`` itself; None
        when every image has boxes.
        """
        annotated = self.annotated_names()
        n = len(self.images)
        for step in range(1, n + 1):
            i = (after_index + step) % n
            if self._names[i] not in annotated:
                return i
        return None

    def load_boxes(self, image: ImageRef) -> BoxTable:
        """The image's box table; an empty table when it has none."""
        return self.load_boxes_stamped(image)[0]

    def load_boxes_stamped(self, image: ImageRef) -> tuple[BoxTable, Stamp]:
        """The image's box table and the :class:`Stamp` of its file as read
        (the table is parsed from the bytes that were hashed)."""
        path = self.find_annotation(image)
        if path is None:
            return BoxTable(), Stamp()
        for _ in range(3):  # the same bytes before and after parsing
            data = path.read_bytes()
            table = read_box_table(path)
            if path.read_bytes() == data:
                break
        return table, Stamp(len(data), hashlib.sha256(data).hexdigest())

    @contextmanager
    def lock(self) -> Iterator[None]:
        """An advisory lock of the folder's annotations (``fcntl.flock`` on
        the ``annotations`` folder itself, so no lock file is left; none
        where the platform or file system has none).

        Processes of this plugin hold it while they check and write a file,
        so two of them never interleave a check and a write.
        """
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield
            return
        try:
            self.annotations_dir.mkdir(exist_ok=True)
            fd = os.open(self.annotations_dir, os.O_RDONLY)
        except OSError:  # a read-only folder: nothing can be written anyway
            yield
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:  # a file system without locks
                pass
            yield
        finally:
            os.close(fd)  # releases the lock

    def save_boxes(
        self, image: ImageRef, table: BoxTable, expect: Stamp | None = None
    ) -> Path:
        """Write the image's box table; see :meth:`save_boxes_stamped`."""
        return self.save_boxes_stamped(image, table, expect)[0]

    def save_boxes_stamped(
        self, image: ImageRef, table: BoxTable, expect: Stamp | None = None
    ) -> tuple[Path, Stamp]:
        """Write the image's box table atomically to :meth:`annotation_path`.

        The image's file under its other name, if any, is then removed. A
        symbolic link leading out of the folder is refused
        (:class:`~napari_samboxes.atomic.OutsideError`), nothing written.

        Parameters
        ----------
        expect : Stamp, optional
            The stamp of the file as it was read. When the file is no longer
            that, nothing is written and :class:`ChangedOnDisk` is raised
            (under :meth:`lock`, so the check and the write are one step for
            processes of this plugin).

        Returns
        -------
        path, stamp
            The file written and its stamp, taken under the lock (so that
            what another process writes right after is never taken for it).
        """
        name = self.name(image)
        with self.lock():
            before = self._find(name)
            if expect is not None and Stamp.of(before) != expect:
                raise ChangedOnDisk(
                    f"{before or self.annotation_path(name)} changed on disk"
                )
            path = self.annotation_path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path = write_box_table(path, table, within=self.folder)
            if before is not None and before != path:
                before.unlink(missing_ok=True)
            return path, Stamp.of(path)

    def classes(
        self, index: dict[str, tuple[str, list[str]]] | None = None
    ) -> list[str]:
        """``classes.txt``'s names, then new labels of the box tables.

        New labels come in image order, then row order. ``index`` (from
        :meth:`table_index`) saves reading the tables again.
        """
        listed = read_classes(self.classes_path) if self.classes_path.is_file() else []
        index = self.table_index() if index is None else index
        found = [x for n in self._names if n in index for x in index[n][1]]
        return merge_classes(listed, found)

    def write_classes(self, names: Iterable[str]) -> Path:
        """Save ``names`` to ``DIR/classes.txt``."""
        return write_classes(self.classes_path, names)
