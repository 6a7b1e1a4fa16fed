"""The class list of a session and each class's stable colour; no napari or Qt.

* Names keep their order (``classes.txt`` order, then classes added in the
  session). A name is one line of text: no line break, no control
  character, not blank.
* A class's colour comes from its place in the list, so the classes of a
  ``classes.txt`` keep their colours in every session; a label that is not
  in the list (yet) gets a colour derived from its name.
* Saving merges with the file as it is on disk: classes another tool (or
  an editor) added meanwhile are kept, before ours.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from .dataset import merge_classes, read_classes, write_classes
from .formats.text import label_problem

__all__ = ["DEFAULT_CLASS", "PALETTE", "ClassList", "check_class_name"]

#: The class of new boxes before the user names one.
DEFAULT_CLASS = "object"

#: Class colours: saturated, told apart by colour-blind viewers first
#: (Okabe-Ito), then more; they cycle after the last.
PALETTE = (
    "#E69F00",
    "#56B4E9",
    "#009E73",
    "#F0E442",
    "#0072B2",
    "#D55E00",
    "#CC79A7",
    "#FFFFFF",
    "#FF6F61",
    "#8DD3C7",
    "#BEBADA",
    "#FB8072",
)


def check_class_name(name: str) -> str:
    """A class name stripped of surrounding blanks.

    Raises
    ------
    ValueError
        For a blank name, or one that no annotation format can hold (a line
        break, another control character; see
        :func:`~napari_samboxes.formats.text.label_problem`).
    """
    text = str(name).strip()
    if not text:
        raise ValueError("a class name cannot be blank")
    problem = label_problem(text)
    if problem:
        raise ValueError(f"not a class name: {problem}")
    return text


class ClassList:
    """Class names in order, their colours, and the file they live in.

    Parameters
    ----------
    names : iterable of str
        The first classes; none gives the placeholder :data:`DEFAULT_CLASS`,
        which the first class list added replaces.
    path : str or Path, optional
        The ``classes.txt`` that :meth:`save` writes.
    """

    def __init__(self, names: Iterable[str] = (), path: str | Path | None = None):
        self._names = merge_classes(names)
        self.placeholder = not self._names
        if self.placeholder:
            self._names = [DEFAULT_CLASS]
        self.path = Path(path) if path else None
        #: The file's classes as last read or written (None: not known).
        self.on_disk: list[str] | None = None

    def track(self, on_disk: list[str] | None) -> None:
        """The file's classes as they were when this list was made from it
        (a class removed from the file later is then not written back)."""
        self.on_disk = None if on_disk is None else list(on_disk)

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    @property
    def names(self) -> tuple[str, ...]:
        """The class names, in order."""
        return tuple(self._names)

    def nth(self, n: int) -> str | None:
        """The ``n``-th class (1-based), or None past the end."""
        return self._names[n - 1] if 1 <= n <= len(self._names) else None

    def colour(self, name: str) -> str:
        """The colour of a class: by its place in the list, else by its name."""
        if name in self._names:
            return PALETTE[self._names.index(name) % len(PALETTE)]
        return PALETTE[zlib.crc32(str(name).encode("utf-8", "replace")) % len(PALETTE)]

    def add(self, names: Iterable[str]) -> list[str]:
        """Append new, valid names (order kept); returns those added.

        The placeholder class is replaced by the first names added. Names
        that cannot be classes (see :func:`check_class_name`) are skipped.
        """
        new: list[str] = []
        for n in names:
            try:
                name = check_class_name(n)
            except ValueError:
                continue
            if name not in self._names and name not in new:
                new.append(name)
        if not new:
            return []
        if self.placeholder:
            self._names, self.placeholder = [], False
        self._names += new
        return new

    def replace(self, names: Iterable[str]) -> None:
        """Use these classes instead (a folder's list); none keeps the
        placeholder."""
        names = merge_classes(names)
        self.placeholder = not names
        self._names = names or [DEFAULT_CLASS]

    def load(self, path: str | Path) -> list[str]:
        """Take the classes of a ``classes.txt`` and save to it from now on;
        returns the classes added. The file's classes come first, in its
        order (their colours are their places there); classes of the session
        that the file lacks follow. Raises ``OSError`` or ``ValueError``."""
        self.path = Path(path)
        if not self.path.is_file():
            return []
        listed = read_classes(path)
        self.on_disk = list(listed)
        new = [n for n in listed if n not in self._names]
        ours = [] if self.placeholder else self._names
        merged = merge_classes(listed, ours)
        if merged:
            self._names, self.placeholder = merged, False
        return new

    def save(self) -> Path | None:
        """Write the classes to :attr:`path` (nothing without a path),
        merged with the file's classes on disk, which come first; the list
        becomes that merge (classes added on disk join it).

        The merge is three-way when the file was read before
        (:attr:`on_disk`): classes added here since are added, a class
        someone removed from the file stays removed, a class someone added
        is never dropped.

        Raises ``OSError`` or ``ValueError`` (a name with a line break).
        """
        if self.path is None:
            return None
        on_disk = read_classes(self.path) if self.path.is_file() else []
        ours = [] if self.placeholder else self._names
        if self.on_disk is not None:
            ours = [n for n in ours if n not in self.on_disk]  # added here
        merged = merge_classes(on_disk, ours)
        if merged and merged != self._names:
            self._names, self.placeholder = merged, False
        self.on_disk = list(merged)
        if merged == on_disk and self.path.is_file():
            return self.path
        return write_classes(self.path, merged)
