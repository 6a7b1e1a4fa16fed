"""Three-way merge of an image's boxes; no napari or Qt.

When a box table changed on disk after the session read it (another
annotator, ``import``, ``tighten``, a text editor), the session's edits are
put on top of the file as it is now, never over it:

* ``base`` is the table as the session read it, ``ours`` the session's
  boxes, ``theirs`` the file now. A box is a whole row (label, corners,
  score, source, slice and further columns); rows are compared as a
  multiset, so two equal rows are two boxes.
* The result is ``theirs`` without the rows the session removed, then the
  rows the session added that ``theirs`` does not already hold. Boxes
  added on either side are kept; a box removed on either side is removed.
* It is a **conflict** when both sides removed (or changed) the same box and
  both added boxes: the two edits of one box are both kept (the user picks
  one) and the caller keeps a copy of the other version beside the table.
* Without a base (boxes of an image the session never read from disk), the
  result is the union: ``theirs`` then the session's rows it lacks.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from .boxes import Boxes

__all__ = ["Merged", "concat", "merge_boxes", "row_keys"]

Row = tuple[object, ...]


def row_keys(boxes: Boxes) -> list[Row]:
    """One hashable value per box: every column of its row."""
    cols = sorted(boxes.extra)
    out: list[Row] = []
    for i in range(len(boxes)):
        score = float(boxes.scores[i])
        out.append(
            (
                boxes.labels[i],
                tuple(round(float(v), 6) for v in boxes.xyxy[i]),
                None if math.isnan(score) else round(score, 6),
                boxes.sources[i],
                tuple(float(v) for v in boxes.slices[i]),
                tuple((c, boxes.extra[c][i]) for c in cols if boxes.extra[c][i]),
            )
        )
    return out


def concat(a: Boxes, b: Boxes) -> Boxes:
    """The boxes of ``a`` then those of ``b`` (further columns joined, empty
    cells where one side has none)."""
    if not len(b):
        return a
    if not len(a):
        return b
    sa, sb = a.slices.shape[1], b.slices.shape[1]
    s = max(sa, sb)

    def pad(x: np.ndarray) -> np.ndarray:
        return np.pad(x, ((0, 0), (0, s - x.shape[1])))

    cols = list(a.extra) + [c for c in b.extra if c not in a.extra]
    extra = {
        c: tuple(a.extra.get(c, ("",) * len(a))) + tuple(b.extra.get(c, ("",) * len(b)))
        for c in cols
    }
    return Boxes(
        np.concatenate([a.xyxy, b.xyxy]),
        a.labels + b.labels,
        np.concatenate([a.scores, b.scores]),
        a.sources + b.sources,
        np.concatenate([pad(a.slices), pad(b.slices)]),
        extra,
    )


@dataclass(frozen=True)
class Merged:
    """The outcome of :func:`merge_boxes`.

    Attributes
    ----------
    boxes : Boxes
        What to write.
    conflict : bool
        Both sides changed the same box (both versions are in ``boxes``).
    theirs_added, theirs_removed : int
        Boxes the other side added and removed (relative to the base).
    """

    boxes: Boxes
    conflict: bool
    theirs_added: int
    theirs_removed: int


def merge_boxes(base: Boxes | None, ours: Boxes, theirs: Boxes) -> Merged:
    """Put the edits ``base`` -> ``ours`` on top of ``theirs`` (see the
    module docstring)."""
    kt, ko = row_keys(theirs), row_keys(ours)
    ct, co = Counter(kt), Counter(ko)
    if base is None:
        removed_us: Counter[Row] = Counter()
        added_us = co - ct
        removed_them = added_them = Counter[Row]()
    else:
        cb = Counter(row_keys(base))
        removed_us, added_us = cb - co, (co - cb) - (ct - cb)
        removed_them, added_them = cb - ct, ct - cb
    drop = Counter(removed_us)
    keep_t = []
    for i, k in enumerate(kt):
        if drop[k] > 0:
            drop[k] -= 1
        else:
            keep_t.append(i)
    add = Counter(added_us)
    keep_o = []
    for i, k in enumerate(ko):
        if add[k] > 0:
            add[k] -= 1
            keep_o.append(i)
    conflict = bool(removed_us & removed_them) and bool(added_us) and bool(added_them)
    boxes = concat(theirs.subset(keep_t), ours.subset(keep_o))
    return Merged(
        boxes,
        conflict,
        sum(added_them.values()),
        sum(removed_them.values()),
    )
