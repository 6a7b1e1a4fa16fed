"""The annotations of one image as an immutable value (numpy only).

:class:`Boxes` is what the session stores, what undo restores and what the
widget renders: every operation returns a new value, so a history of
states is a list of references, and no operation can half-apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .formats.boxtable import BoxTable

__all__ = ["SOURCES", "Boxes"]

#: Where a box came from.
SOURCES = ("candidate", "prompt", "hand", "import")


def _f(a: object, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.array(a, dtype=np.float64).reshape(shape)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class Boxes:
    """Boxes with labels, scores, sources and slice coordinates.

    Attributes
    ----------
    xyxy : numpy.ndarray
        (N, 4) float, ``x_min, y_min, x_max, y_max``, inclusive pixel indices
        of the image layer's level 0.
    labels, sources : tuple of str
        Class name and origin (one of :data:`SOURCES`) of each box.
    scores : numpy.ndarray
        (N,) predicted IoU; NaN for hand-drawn or imported boxes.
    slices : numpy.ndarray
        (N, S) leading (slice) indices for nD images; S may be 0.
    """

    xyxy: np.ndarray = field(default_factory=lambda: _f([], (0, 4)))
    labels: tuple[str, ...] = ()
    scores: np.ndarray = field(default_factory=lambda: _f([], (0,)))
    sources: tuple[str, ...] = ()
    slices: np.ndarray = field(default_factory=lambda: _f([], (0, 0)))

    def __post_init__(self) -> None:
        n = len(self.labels)
        object.__setattr__(self, "xyxy", _f(self.xyxy, (n, 4)))
        object.__setattr__(self, "scores", _f(self.scores, (n,)))
        s = np.asarray(self.slices)
        object.__setattr__(
            self, "slices", _f(s, (n, s.shape[-1] if s.ndim == 2 else 0))
        )
        if len(self.sources) != n:
            raise ValueError(f"{len(self.sources)} sources for {n} boxes")
        bad = set(self.sources) - set(SOURCES)
        if bad:
            raise ValueError(f"unknown box source(s) {sorted(bad)}; use {SOURCES}")

    def __len__(self) -> int:
        return len(self.labels)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Boxes):
            return NotImplemented
        return (
            self.labels == other.labels
            and self.sources == other.sources
            and np.array_equal(self.xyxy, other.xyxy)
            and np.array_equal(self.scores, other.scores, equal_nan=True)
            and np.array_equal(self.slices, other.slices)
        )

    __hash__ = None  # type: ignore[assignment]

    # -- operations (each returns a new value) -------------------------
    def added(
        self,
        xyxy: Sequence[float],
        label: str,
        score: float = float("nan"),
        source: str = "candidate",
        slice_index: Sequence[float] = (),
    ) -> Boxes:
        """A copy with one box appended."""
        sl = np.asarray(slice_index, dtype=np.float64).reshape(1, -1)
        slices = self.slices if len(self) else np.zeros((0, sl.shape[1]))
        return Boxes(
            np.vstack([self.xyxy, np.asarray(xyxy, dtype=np.float64).reshape(1, 4)]),
            (*self.labels, str(label)),
            np.append(self.scores, float(score)),
            (*self.sources, source),
            np.vstack([slices, sl]),
        )

    def without(self, indices: Sequence[int]) -> Boxes:
        """A copy without the boxes at ``indices``."""
        keep = np.ones(len(self), dtype=bool)
        keep[list(indices)] = False
        return self.subset(np.flatnonzero(keep))

    def subset(self, indices: Sequence[int] | np.ndarray) -> Boxes:
        """The boxes at ``indices``, in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        return Boxes(
            self.xyxy[idx],
            tuple(self.labels[i] for i in idx),
            self.scores[idx],
            tuple(self.sources[i] for i in idx),
            self.slices[idx],
        )

    def relabeled(self, indices: Sequence[int], label: str) -> Boxes:
        """A copy with the boxes at ``indices`` labelled ``label``."""
        chosen = {int(i) for i in indices}
        labels = tuple(
            str(label) if i in chosen else v for i, v in enumerate(self.labels)
        )
        return Boxes(self.xyxy, labels, self.scores, self.sources, self.slices)

    def replaced(
        self, index: int, xyxy: Sequence[float], score: float, source: str
    ) -> Boxes:
        """A copy with box ``index`` moved (label and slice kept)."""
        xy = self.xyxy.copy()
        xy[index] = np.asarray(xyxy, dtype=np.float64)
        scores = self.scores.copy()
        scores[index] = score
        sources = list(self.sources)
        sources[index] = source
        return Boxes(xy, self.labels, scores, tuple(sources), self.slices)

    # -- files ----------------------------------------------------------
    def to_table(self) -> BoxTable:
        """The boxes as a :class:`~napari_samboxes.formats.boxtable.BoxTable`."""
        return BoxTable(
            labels=list(self.labels),
            boxes=np.array(self.xyxy),
            scores=np.array(self.scores),
            slices=np.array(self.slices),
            sources=list(self.sources),
        )

    @classmethod
    def from_table(cls, table: BoxTable, default_source: str = "import") -> Boxes:
        """Boxes from a box table (rows without a source get ``default_source``)."""
        sources = table.sources or [default_source] * len(table)
        return cls(
            table.boxes,
            tuple(str(v) for v in table.labels),
            table.scores,
            tuple(s if s in SOURCES else default_source for s in sources),
            table.slices,
        )
