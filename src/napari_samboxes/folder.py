"""A folder being annotated, one image at a time; no napari or Qt.

:class:`FolderSession` is what folder mode knows apart from the view: the
folder's images, the image shown, the boxes not yet written (autosave
writes them with :meth:`FolderSession.flush`), the done flags, the class
list and the progress ("image k of N, m annotated").

* An image's session key is its path as text (see
  :class:`~napari_samboxes.session.Session`); its *name* is its path in the
  folder (``train/a.png``).
* **Cost independent of the folder's size.** The progress is counted once,
  from the progress index (:meth:`Dataset.table_index`, which reads only
  the tables changed since it was last counted), in a worker when the
  folder is large (:meth:`count`, then :meth:`set_counts` on the UI
  thread); every save and done flag then keeps it up to date. Moving,
  picking and saving read and write only the image's own table.
* **Never overwrite what was not loaded.** The table of an image is
  remembered with its :class:`~napari_samboxes.dataset.Stamp` (size and
  content hash) when it is read and after each save. A save first checks
  (under the folder's advisory lock) that the file is still that; when it
  changed (another annotator, ``import``, ``tighten``, an editor), the file
  is read again and the session's edits are merged on top of it
  (:mod:`napari_samboxes.merge`). When both changed the same box, both
  versions stay in the table and the other version is also kept whole as
  ``annotations/<key>.conflict-<time>.csv``. What changed is said
  (:meth:`take_notes`) and the merged boxes go back to the view
  (:attr:`reloaded`).
* A broken table (not a box table) counts as *broken*, not annotated.
* Nothing is written but boxes that changed, the done flags and the class
  list; every write is atomic (:mod:`napari_samboxes.atomic`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from .boxes import Boxes
from .classes import ClassList
from .dataset import (
    BOXES,
    BROKEN,
    ChangedOnDisk,
    Dataset,
    ImageList,
    Stamp,
    read_classes,
)
from .formats.boxtable import write_box_table
from .merge import merge_boxes

__all__ = ["Counts", "FolderSession"]

#: Tries of a save that keeps finding its file changed on disk.
_SAVE_TRIES = 5


@dataclass
class Counts:
    """The progress of a folder as counted from its files."""

    annotated: set[str] = field(default_factory=set)
    broken: set[str] = field(default_factory=set)
    done: set[str] = field(default_factory=set)
    classes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class FolderSession:
    """The folder workflow's state (see the module docstring).

    Parameters
    ----------
    folder : str or Path
        A folder of images.
    recursive : bool
        Images in subfolders too (default).
    count : bool
        Count the progress now (default); False leaves it to :meth:`count`
        (in a worker) and :meth:`set_counts`.

    Raises
    ------
    NotADirectoryError
        When ``folder`` is not a folder.
    ValueError
        When it holds no image.
    """

    def __init__(
        self, folder: str | Path, recursive: bool = True, count: bool = True
    ) -> None:
        self.dataset = Dataset(folder, recursive=recursive)
        if not self.dataset.images:
            raise ValueError(f"{folder}: no images (png, jpg, tif, bmp, gif, webp)")
        self.name = self.dataset.folder.resolve().name or "folder"
        #: The image shown (-1 before the first).
        self.index = -1
        #: Problems found when opening, one sentence each.
        self.problems: list[str] = list(self.dataset.listing_problems)
        #: Boxes merged with a changed file, for the view to show (key ->
        #: boxes); the view takes them.
        self.reloaded: dict[str, Boxes] = {}
        self._notes: list[str] = []
        self._dirty: dict[str, Boxes] = {}
        self._base: dict[str, tuple[Stamp, Boxes]] = {}
        self._keys = {p: i for i, p in enumerate(self.dataset.images.paths)}
        self._annotated: set[str] = set()
        self._broken: set[str] = set()
        self._done: set[str] = set()
        #: Whether the progress is counted (see :meth:`count`).
        self.counted = False
        self._touched: dict[str, bool] = {}
        path = self.dataset.classes_path
        try:
            names = read_classes(path) if path.is_file() else []
        except ValueError as e:
            self.problems.append(str(e))
            names = []
        self.classes = ClassList(names, path=path)
        self.classes.track(names)
        if count:
            self.set_counts(self.count())

    # -- counting --------------------------------------------------------------
    def count(self) -> Counts:
        """Count the progress from the files (safe in a worker thread: it
        changes nothing of the session)."""
        ds = self.dataset
        c = Counts(problems=ds.problems()[len(ds.listing_problems) :])
        try:
            c.done = ds.done_names()
        except ValueError as e:  # a broken done.json: nothing counts as done
            c.problems.append(str(e))
        index = ds.table_index()
        c.annotated = {n for n, (s, _) in index.items() if s == BOXES} | c.done
        c.broken = {n for n, (s, _) in index.items() if s == BROKEN}
        for n in sorted(c.broken)[:3]:
            c.problems.append(
                f"{ds.find_annotation(n)}: not a box table; {n} is shown as broken"
            )
        if len(c.broken) > 3:
            c.problems.append(f"... and {len(c.broken) - 3} more broken tables")
        c.classes = ds.classes(index)
        return c

    def set_counts(self, counts: Counts) -> None:
        """Take the counted progress (on the UI thread); saves and flags
        made while counting stay as they are."""
        self._annotated = set(counts.annotated)
        self._broken = set(counts.broken)
        self._done = set(counts.done)
        for name, annotated in self._touched.items():
            self._mark(name, annotated)
        self._touched.clear()
        self.problems.extend(counts.problems)
        self.classes.add(counts.classes)
        self.counted = True

    def _mark(self, name: str, annotated: bool) -> None:
        self._broken.discard(name)
        if annotated:
            self._annotated.add(name)
        else:
            self._annotated.discard(name)
        if not self.counted:
            self._touched[name] = annotated

    # -- images --------------------------------------------------------------
    @property
    def images(self) -> ImageList:
        """The image files, in natural order."""
        return self.dataset.images

    def image_keys(self) -> list[str]:
        """The session keys of the images, in order."""
        return self.dataset.images.paths

    def __len__(self) -> int:
        return len(self.dataset.images)

    def clip(self, index: int) -> int:
        """``index`` clipped to the folder's images."""
        return max(0, min(int(index), len(self) - 1))

    def key(self, index: int) -> str:
        """The session key of image ``index``."""
        return self.dataset.images.paths[index]

    def image_name(self, index: int) -> str:
        """The name of image ``index`` (its path in the folder)."""
        return self.dataset.names[index]

    def index_of(self, key: str) -> int | None:
        """The position of the image of a session key, or None."""
        return self._keys.get(key)

    def _name(self, key: str) -> str:
        i = self._keys.get(key)
        return self.dataset.names[i] if i is not None else Path(key).name

    def read_boxes(self, index: int) -> Boxes:
        """The boxes of image ``index`` as its table on disk holds them
        (remembered as what the session loaded).

        Raises ``OSError`` or ``ValueError`` (the message names the file
        and line); the image is then counted as broken.
        """
        name = self.image_name(index)
        try:
            table, stamp = self.dataset.load_boxes_stamped(name)
        except (OSError, ValueError):
            if self.dataset.find_annotation(name) is not None:
                self._broken.add(name)
                self._annotated.discard(name)
            raise
        boxes = Boxes.from_table(table)
        self._base[self.key(index)] = (stamp, boxes)
        self._broken.discard(name)
        return boxes

    def changed_on_disk(self, index: int) -> bool:
        """Whether image ``index``'s table is no longer the one the session
        loaded or wrote (always False while it has unsaved boxes, or when
        it was never loaded)."""
        key = self.key(index)
        base = self._base.get(key)
        if base is None or key in self._dirty:
            return False
        found = self.dataset.find_annotation(self.image_name(index))
        return Stamp.of(found) != base[0]

    # -- autosave ------------------------------------------------------------
    def record(self, key: str, boxes: Boxes) -> bool:
        """Note new boxes of an image (written by :meth:`flush`, counted in
        the progress at once); False for a key that is no image of the
        folder."""
        if key not in self._keys:
            return False
        self._dirty[key] = boxes
        name = self._name(key)
        self._mark(name, bool(len(boxes)) or name in self._done)
        return True

    def unsaved_keys(self) -> set[str]:
        """The keys of the images whose boxes are not written yet."""
        return set(self._dirty)

    @property
    def pending(self) -> bool:
        """Whether some boxes are not written yet."""
        return bool(self._dirty)

    def take_notes(self) -> list[str]:
        """What the last saves found and did (merges with changed files),
        one sentence each; cleared."""
        notes, self._notes = self._notes, []
        return notes

    def flush(self) -> list[str]:
        """Write every pending table now; returns one message per failure
        (those tables stay pending and are tried again on the next flush).

        A table changed on disk since it was loaded is merged, never
        overwritten (see the module docstring).
        """
        dirty, self._dirty = self._dirty, {}
        failed: list[str] = []
        for key, boxes in dirty.items():
            name = self._name(key)
            try:
                written = self._save(key, name, boxes)
            except (OSError, ValueError) as e:
                self._dirty.setdefault(key, boxes)
                failed.append(f"could not save {name}'s boxes: {e}")
                continue
            self._mark(name, bool(len(written)) or name in self._done)
        return failed

    def _save(self, key: str, name: str, boxes: Boxes) -> Boxes:
        """Write ``boxes`` (merged with a changed file); returns what was
        written."""
        ds = self.dataset
        base = self._base.get(key)
        if base is None:  # never loaded here: what is on disk is the base
            table, stamp = ds.load_boxes_stamped(name)
            base = (stamp, Boxes.from_table(table))
            if len(base[1]) and base[1] != boxes:
                merged = merge_boxes(None, boxes, base[1])
                self._said_merge(name, merged.theirs_added, 0, False, "")
                boxes = merged.boxes
        ours = boxes
        for _ in range(_SAVE_TRIES):
            try:
                _, written = ds.save_boxes_stamped(
                    name, boxes.to_table(), expect=base[0]
                )
            except ChangedOnDisk:
                table, stamp = ds.load_boxes_stamped(name)
                theirs = Boxes.from_table(table)
                # what was about to be written, on top of the file as it is
                # now (``boxes`` already holds the earlier tries' merges)
                merged = merge_boxes(base[1], boxes, theirs)
                copy = self._keep_other(name, theirs) if merged.conflict else ""
                self._said_merge(
                    name,
                    merged.theirs_added,
                    merged.theirs_removed,
                    merged.conflict,
                    copy,
                )
                base, boxes = (stamp, theirs), merged.boxes
                continue
            self._base[key] = (written, boxes)
            if boxes != ours:
                self.reloaded[key] = boxes
            return boxes
        raise OSError(f"{name}'s table keeps changing on disk; try again")

    def _keep_other(self, name: str, theirs: Boxes) -> str:
        """Keep the other version whole beside the table; its file name
        ("" when it could not be written: the table holds both versions)."""
        ds = self.dataset
        key = ds.key(name)
        head, _, tail = key.rpartition("/")
        tail = tail.encode("utf-8")[:120].decode("utf-8", "ignore")  # short
        stamp = time.strftime("%Y%m%d-%H%M%S")
        folder = ds.annotations_dir / head if head else ds.annotations_dir
        for n in range(1, 100):
            more = f"-{n}" if n > 1 else ""
            path = folder / f"{tail}.conflict-{stamp}{more}.csv"
            if not path.exists():
                break
        try:
            write_box_table(path, theirs.to_table(), within=ds.folder)
        except (OSError, ValueError):
            return ""
        return str(path.relative_to(ds.annotations_dir))

    def _said_merge(
        self, name: str, added: int, removed: int, conflict: bool, copy: str
    ) -> None:
        what = f"{added} box(es) added" + (f", {removed} removed" if removed else "")
        text = f"{name}: its table changed on disk ({what} there); your edits were"
        if conflict:
            where = f" (the other version whole in {copy})" if copy else ""
            text += (
                " merged, and where both changed the same box both versions are"
                f" kept{where}"
            )
        else:
            text += " put on top of it, nothing lost"
        self._notes.append(text)

    # -- done flags and progress ---------------------------------------------
    def is_done(self, index: int) -> bool:
        """Whether image ``index`` is marked done."""
        return self.image_name(index) in self._done

    def set_done(self, index: int, done: bool = True) -> None:
        """Mark image ``index`` done (or not), on disk at once.

        Raises ``OSError`` or ``ValueError`` (a broken ``done.json``).
        """
        name = self.image_name(index)
        self.dataset.set_done(name, done)
        if done:
            self._done.add(name)
            self._mark(name, True)
        else:
            self._done.discard(name)
            boxes = self._dirty.get(self.key(index))
            has = len(boxes) > 0 if boxes is not None else self._has_boxes(name)
            self._mark(name, has)

    def _has_boxes(self, name: str) -> bool:
        return self.dataset.is_annotated(name)

    def is_annotated(self, index: int) -> bool:
        """Whether image ``index`` has boxes or is done."""
        return self.image_name(index) in self._annotated

    def is_broken(self, index: int) -> bool:
        """Whether image ``index``'s table is not a box table."""
        return self.image_name(index) in self._broken

    def progress(self) -> tuple[int, int]:
        """``(annotated or done images, images)``."""
        return len(self._annotated), len(self)

    def progress_text(self) -> str:
        """'image k of N, m annotated: <name>' (and ' (done)' or
        ' (broken table)'); 'counting...' for m until counted."""
        m, n = self.progress()
        count = f"{m} annotated" if self.counted else "counting annotated..."
        broken = f", {len(self._broken)} broken" if self._broken else ""
        if self.index < 0:
            return f"{n} images, {count}{broken}"
        name = self.image_name(self.index)
        flag = (
            " (broken table)"
            if self.is_broken(self.index)
            else " (done)"
            if self.is_done(self.index)
            else ""
        )
        return f"image {self.index + 1} of {n}, {count}{broken}: {name}{flag}"

    def next_unannotated(self, after: int) -> int | None:
        """The next image after ``after`` with no boxes and not done
        (wrapping around, ``after`` itself last); None when there is none.
        Images with a broken table are skipped (they cannot be shown)."""
        n = len(self)
        names = self.dataset.names
        skip = self._annotated | self._broken
        for step in range(1, n + 1):
            i = (after + step) % n
            if names[i] not in skip:
                return i
        return None
