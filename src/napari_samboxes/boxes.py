"""The annotations of one image as an immutable value (numpy only).

:class:`Boxes` is what the session stores, what undo restores and what the
widget renders: every operation returns a new value, so a history of
states is a list of references, and no operation can half-apply.

Besides geometry, label, score and source, each box carries the box
table's further columns as text (:attr:`Boxes.extra`: VOC flags, COCO's
crowd flag, its SAM ``prompt`` and ``mask``, columns of other tools), so
that they survive every edit and every save. A box that is moved loses
its ``prompt`` and ``mask`` (they no longer describe it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .formats.boxtable import SOURCES, BoxTable
from .formats.columns import MASK_COLUMN, PROMPT_COLUMN

__all__ = ["GEOMETRY_COLUMNS", "SOURCES", "Boxes"]

#: The columns that describe a box's geometry: dropped when it moves.
GEOMETRY_COLUMNS = (PROMPT_COLUMN, MASK_COLUMN)


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
        Class name and origin (one of :data:`SOURCES`: ``candidate``,
        ``island``, ``prompt``, ``hand``, ``import``) of each box.
    scores : numpy.ndarray
        (N,) predicted IoU; NaN for hand-drawn or imported boxes.
    slices : numpy.ndarray
        (N, S) leading (slice) indices for nD images; S may be 0.
    extra : mapping of str to tuple of str
        Further columns (name -> one text cell per box; "" = none).
    """

    xyxy: np.ndarray = field(default_factory=lambda: _f([], (0, 4)))
    labels: tuple[str, ...] = ()
    scores: np.ndarray = field(default_factory=lambda: _f([], (0,)))
    sources: tuple[str, ...] = ()
    slices: np.ndarray = field(default_factory=lambda: _f([], (0, 0)))
    extra: Mapping[str, Sequence[str]] = field(default_factory=dict)

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
        extra = {str(k): tuple(str(c) for c in v) for k, v in self.extra.items()}
        for k, v in extra.items():
            if len(v) != n:
                raise ValueError(f"column {k!r} has {len(v)} cells for {n} boxes")
        object.__setattr__(self, "extra", extra)

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
            and self._cells() == other._cells()
        )

    def _cells(self) -> dict[str, Sequence[str]]:
        """The further columns that hold anything (an empty column is none)."""
        return {k: v for k, v in self.extra.items() if any(v)}

    def cell(self, column: str, index: int) -> str:
        """Box ``index``'s cell of a further column ("" when it has none)."""
        col = self.extra.get(column)
        return col[index] if col is not None else ""

    __hash__ = None  # type: ignore[assignment]

    # -- operations (each returns a new value) -------------------------
    def added(
        self,
        xyxy: Sequence[float],
        label: str,
        score: float = float("nan"),
        source: str = "candidate",
        slice_index: Sequence[float] = (),
        cells: Mapping[str, str] | None = None,
    ) -> Boxes:
        """A copy with one box appended; ``cells`` fill its further columns."""
        sl = np.asarray(slice_index, dtype=np.float64).reshape(1, -1)
        slices = self.slices if len(self) else np.zeros((0, sl.shape[1]))
        cells = dict(cells or {})
        names = list(self.extra) + [k for k in cells if k not in self.extra]
        return Boxes(
            np.vstack([self.xyxy, np.asarray(xyxy, dtype=np.float64).reshape(1, 4)]),
            (*self.labels, str(label)),
            np.append(self.scores, float(score)),
            (*self.sources, source),
            np.vstack([slices, sl]),
            {
                k: (*self.extra.get(k, ("",) * len(self)), cells.get(k, ""))
                for k in names
            },
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
            {k: tuple(v[i] for i in idx) for k, v in self.extra.items()},
        )

    def relabeled(self, indices: Sequence[int], label: str) -> Boxes:
        """A copy with the boxes at ``indices`` labelled ``label``."""
        chosen = {int(i) for i in indices}
        labels = tuple(
            str(label) if i in chosen else v for i, v in enumerate(self.labels)
        )
        return Boxes(
            self.xyxy, labels, self.scores, self.sources, self.slices, self.extra
        )

    def replaced(
        self,
        index: int,
        xyxy: Sequence[float] | np.ndarray,
        score: float,
        source: str,
        cells: Mapping[str, str] | None = None,
    ) -> Boxes:
        """A copy with box ``index`` moved (label, slice and further columns
        kept, except its ``prompt`` and ``mask``, which ``cells`` may give)."""
        xy = self.xyxy.copy()
        xy[index] = np.asarray(xyxy, dtype=np.float64)
        scores = self.scores.copy()
        scores[index] = score
        sources = list(self.sources)
        sources[index] = source
        moved = not np.array_equal(xy[index], self.xyxy[index])
        new = dict.fromkeys(GEOMETRY_COLUMNS, "") if moved else {}
        new.update(cells or {})
        return Boxes(
            xy, self.labels, scores, tuple(sources), self.slices, self.extra
        ).with_cells(index, new)

    def with_cells(self, index: int, cells: Mapping[str, str]) -> Boxes:
        """A copy with box ``index``'s further columns set from ``cells``."""
        if not cells:
            return self
        extra = {k: list(v) for k, v in self.extra.items()}
        for k, v in cells.items():
            extra.setdefault(k, [""] * len(self))[index] = str(v)
        return Boxes(
            self.xyxy, self.labels, self.scores, self.sources, self.slices, extra
        )

    def carrying(self, previous: Boxes) -> Boxes:
        """These boxes (read back from an edited layer, without further
        columns) with the further columns of ``previous``.

        A box takes the columns of the first unused box of ``previous`` at
        the same place (box and slice). If both have as many boxes, the
        others take those of the box at the same position, less ``prompt``
        and ``mask`` (the box moved). The rest get none.
        """
        if not previous.extra:
            return self
        free: dict[tuple[float, ...], list[int]] = {}
        for j in range(len(previous)):
            key = (*previous.xyxy[j], *previous.slices[j])
            free.setdefault(key, []).append(j)
        extra = {k: [""] * len(self) for k in previous.extra}
        unmatched = []
        for i in range(len(self)):
            js = free.get((*self.xyxy[i], *self.slices[i]))
            if js:
                j = js.pop(0)
                for k, v in previous.extra.items():
                    extra[k][i] = v[j]
            else:
                unmatched.append(i)
        if len(self) == len(previous):
            for i in unmatched:
                for k, v in previous.extra.items():
                    extra[k][i] = "" if k in GEOMETRY_COLUMNS else v[i]
        return Boxes(
            self.xyxy, self.labels, self.scores, self.sources, self.slices, extra
        )

    def changes_from(self, previous: Boxes) -> tuple[list[int], list[int]]:
        """What made these boxes out of ``previous``: the rows added (boxes
        at a place, box and slice, where ``previous`` had none; only when
        there are more boxes now) and the rows changed in place (same
        number of boxes: another box, slice or label at the same row)."""
        if len(self) > len(previous):
            free: dict[tuple[float, ...], int] = {}
            for j in range(len(previous)):
                key = (*previous.xyxy[j], *previous.slices[j])
                free[key] = free.get(key, 0) + 1
            added = []
            for i in range(len(self)):
                key = (*self.xyxy[i], *self.slices[i])
                if free.get(key, 0):
                    free[key] -= 1
                else:
                    added.append(i)
            return added[len(added) - (len(self) - len(previous)) :], []
        if len(self) != len(previous):
            return [], []
        moved = np.any(self.xyxy != previous.xyxy, axis=1)
        if self.slices.shape == previous.slices.shape and self.slices.shape[1]:
            moved |= np.any(self.slices != previous.slices, axis=1)
        relabelled = np.array(
            [a != b for a, b in zip(self.labels, previous.labels, strict=True)],
            dtype=bool,
        ).reshape(len(self))
        return [], [int(i) for i in np.flatnonzero(moved | relabelled)]

    # -- files ----------------------------------------------------------
    def to_table(self) -> BoxTable:
        """The boxes as a :class:`~napari_samboxes.formats.boxtable.BoxTable`."""
        return BoxTable(
            labels=list(self.labels),
            boxes=np.array(self.xyxy),
            scores=np.array(self.scores),
            slices=np.array(self.slices),
            sources=list(self.sources),
            extra={k: list(v) for k, v in self.extra.items()},
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
            table.extra,
        )
