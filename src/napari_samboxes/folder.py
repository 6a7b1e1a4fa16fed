"""A folder being annotated, one image at a time; no napari or Qt.

:class:`FolderSession` is what folder mode knows apart from the view: the
folder's images, the image shown, the boxes not yet written (autosave
writes them with :meth:`FolderSession.flush`), the done flags, the class
list and the progress ("image k of N, m annotated").

* An image's session key is its path as text (see
  :class:`~napari_samboxes.session.Session`).
* The progress is counted once when the folder is opened and then kept up
  to date by every save and every done flag, so an autosave never reads
  the other images' tables again.
* Nothing is written but boxes that changed, the done flags and the class
  list; every write is atomic (:mod:`napari_samboxes.atomic`).
"""

from __future__ import annotations

from pathlib import Path

from .boxes import Boxes
from .classes import ClassList
from .dataset import Dataset, read_classes

__all__ = ["FolderSession"]


class FolderSession:
    """The folder workflow's state (see the module docstring).

    Parameters
    ----------
    folder : str or Path
        A folder of images.

    Raises
    ------
    NotADirectoryError
        When ``folder`` is not a folder.
    ValueError
        When it holds no image.
    """

    def __init__(self, folder: str | Path) -> None:
        self.dataset = Dataset(folder)
        if not self.dataset.images:
            raise ValueError(f"{folder}: no images (png, jpg, tif, bmp, gif, webp)")
        self.name = self.dataset.folder.resolve().name or "folder"
        #: The image shown (-1 before the first).
        self.index = -1
        #: Problems found when opening, one sentence each.
        self.problems: list[str] = list(self.dataset.problems())
        self._dirty: dict[str, Boxes] = {}
        self._keys = {str(p): i for i, p in enumerate(self.dataset.images)}
        try:
            self._annotated = self.dataset.annotated_names()
            self._done = self.dataset.done_names()
        except ValueError as e:  # a broken done.json: nothing counts as done
            self.problems.append(str(e))
            self._done = set()
            self._annotated = set()
        path = self.dataset.classes_path
        try:
            names = self.dataset.classes()
        except ValueError as e:  # a broken table: its image is refused later
            self.problems.append(str(e))
            names = read_classes(path) if path.is_file() else []
        self.classes = ClassList(names, path=path)

    # -- images --------------------------------------------------------------
    @property
    def images(self) -> list[Path]:
        """The image files, in natural order."""
        return self.dataset.images

    def __len__(self) -> int:
        return len(self.dataset.images)

    def clip(self, index: int) -> int:
        """``index`` clipped to the folder's images."""
        return max(0, min(int(index), len(self) - 1))

    def key(self, index: int) -> str:
        """The session key of image ``index``."""
        return str(self.dataset.images[index])

    def index_of(self, key: str) -> int | None:
        """The position of the image of a session key, or None."""
        return self._keys.get(key)

    def read_boxes(self, index: int) -> Boxes:
        """The boxes of image ``index`` as its table on disk holds them.

        Raises ``OSError`` or ``ValueError`` (the message names the file
        and line).
        """
        return Boxes.from_table(self.dataset.load_boxes(self.images[index]))

    # -- autosave ------------------------------------------------------------
    def record(self, key: str, boxes: Boxes) -> bool:
        """Note new boxes of an image (written by :meth:`flush`, counted in
        the progress at once); False for a key that is no image of the
        folder."""
        if key not in self._keys:
            return False
        self._dirty[key] = boxes
        name = Path(key).name  # the progress counts it at once
        if len(boxes) or name in self._done:
            self._annotated.add(name)
        else:
            self._annotated.discard(name)
        return True

    def unsaved_keys(self) -> set[str]:
        """The keys of the images whose boxes are not written yet."""
        return set(self._dirty)

    @property
    def pending(self) -> bool:
        """Whether some boxes are not written yet."""
        return bool(self._dirty)

    def flush(self) -> list[str]:
        """Write every pending table now; returns one message per failure
        (those tables stay pending and are tried again on the next flush)."""
        dirty, self._dirty = self._dirty, {}
        failed: list[str] = []
        for key, boxes in dirty.items():
            path = Path(key)
            try:
                self.dataset.save_boxes(path, boxes.to_table())
            except (OSError, ValueError) as e:
                self._dirty.setdefault(key, boxes)
                failed.append(f"could not save {path.name}'s boxes: {e}")
                continue
            if len(boxes) or path.name in self._done:
                self._annotated.add(path.name)
            else:
                self._annotated.discard(path.name)
        return failed

    # -- done flags and progress ---------------------------------------------
    def is_done(self, index: int) -> bool:
        """Whether image ``index`` is marked done."""
        return self.images[index].name in self._done

    def set_done(self, index: int, done: bool = True) -> None:
        """Mark image ``index`` done (or not), on disk at once.

        Raises ``OSError`` or ``ValueError`` (a broken ``done.json``).
        """
        name = self.images[index].name
        self.dataset.set_done(name, done)
        if done:
            self._done.add(name)
            self._annotated.add(name)
        else:
            self._done.discard(name)
            boxes = self._dirty.get(self.key(index))
            has = len(boxes) > 0 if boxes is not None else self._has_boxes(name)
            if not has:
                self._annotated.discard(name)

    def _has_boxes(self, name: str) -> bool:
        return self.dataset.is_annotated(name)

    def is_annotated(self, index: int) -> bool:
        """Whether image ``index`` has boxes or is done."""
        return self.images[index].name in self._annotated

    def progress(self) -> tuple[int, int]:
        """``(annotated or done images, images)``."""
        return len(self._annotated), len(self)

    def progress_text(self) -> str:
        """'image k of N, m annotated: <name>' (and ', done')."""
        m, n = self.progress()
        if self.index < 0:
            return f"{n} images, {m} annotated"
        name = self.images[self.index].name
        done = " (done)" if self.is_done(self.index) else ""
        return f"image {self.index + 1} of {n}, {m} annotated: {name}{done}"

    def next_unannotated(self, after: int) -> int | None:
        """The next image after ``after`` with no boxes and not done
        (wrapping around, ``after`` itself last); None when there is none."""
        n = len(self)
        for step in range(1, n + 1):
            i = (after + step) % n
            if self.images[i].name not in self._annotated:
                return i
        return None
