"""Pick the smallest candidate box that contains the clicked points.

Pure numpy, vectorised over candidates (no Python loop over boxes).
:func:`island` gives the box of a mask's largest connected part (the
next smaller option of a candidate whose mask has detached fragments).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .formats.errors import FormatError
from .formats.rle import decode_cell, encode_rle

__all__ = ["containing", "island", "select_box"]


def _array(value: Any, width: int, what: str) -> np.ndarray:
    """``value`` as an (N, width) float array; empty input gives N = 0.

    Raises ValueError for any other shape instead of reshaping it.
    """
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, width)
    if arr.ndim != 2 or arr.shape[1] != width:
        raise ValueError(f"{what} must be an (N, {width}) array, not {arr.shape}")
    return arr


def _boxes_of(candidates: Any) -> tuple[np.ndarray, np.ndarray | None]:
    boxes = _array(getattr(candidates, "boxes", candidates), 4, "boxes")
    areas = getattr(candidates, "areas", None)
    if areas is not None and np.shape(areas) != (len(boxes),):
        raise ValueError(
            f"areas must be a ({len(boxes)},) array, not {np.shape(areas)}"
        )
    return boxes, areas


def containing(boxes: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Return a (N,) bool mask: boxes (xyxy) that contain every point.

    Boundaries are inclusive. ``points`` is (K, 2) in (x, y).

    Raises
    ------
    ValueError
        If ``boxes`` is not (N, 4) or ``points`` not (K, 2).
    """
    boxes = _array(boxes, 4, "boxes")
    pts = _array(points, 2, "points")
    if len(pts) == 0:
        return np.zeros(len(boxes), dtype=bool)
    lo = pts.min(axis=0)  # a box holds all points iff it holds their hull
    hi = pts.max(axis=0)
    return (
        (boxes[:, 0] <= lo[0])
        & (boxes[:, 1] <= lo[1])
        & (boxes[:, 2] >= hi[0])
        & (boxes[:, 3] >= hi[1])
    )


def select_box(candidates: Any, points: Any) -> int | None:
    """Index of the smallest-area candidate containing all points.

    Parameters
    ----------
    candidates : Candidates or array-like
        A :class:`~napari_samboxes.engine.Candidates` (sorted by area,
        smallest first), or an (N, 4) xyxy array already in that order.
    points : array-like
        (K, 2) points in (x, y) pixel coordinates; K >= 1. Points with
        NaN coordinates never match.

    Returns
    -------
    int or None
        The index into ``candidates``; among equal areas the earliest (for
        :class:`Candidates`, the higher predicted IoU). ``None`` if no
        candidate contains every point or no point is given.

    Raises
    ------
    ValueError
        If the boxes are not (N, 4), the areas not (N,) or the points not
        (K, 2) (a single point is ``[[x, y]]``).
    """
    boxes, areas = _boxes_of(candidates)
    pts = _array(points, 2, "points")
    if len(pts) == 0 or len(boxes) == 0 or not np.isfinite(pts).all():
        return None
    hit = containing(boxes, pts)
    if areas is not None and len(areas) and np.any(np.diff(areas) < 0):
        # not sorted (hand-built): choose by area, first among ties
        idx = np.flatnonzero(hit)
        if len(idx) == 0:
            return None
        return int(idx[np.argsort(np.asarray(areas)[idx], kind="stable")[0]])
    first = int(np.argmax(hit))
    return first if hit[first] else None


def largest_part(mask: Any) -> tuple[np.ndarray, int] | None:
    """A mask's largest 8-connected part (a boolean mask of its shape; the
    first in row-major order among equals) and the number of parts; None
    for an empty mask."""
    from scipy import ndimage

    labels, n = ndimage.label(
        np.asarray(mask, dtype=bool), structure=np.ones((3, 3), dtype=bool)
    )
    if n == 0:
        return None
    return labels == int(np.argmax(np.bincount(labels.ravel())[1:])) + 1, int(n)


def island(cell: str) -> tuple[np.ndarray, str] | None:
    """The largest connected part of a mask with detached fragments.

    Parts are 8-connected (pixels touching at a corner are one part, as in
    :mod:`napari_samboxes.audit`); the largest has the most pixels (the
    first in row-major order among equals).

    Parameters
    ----------
    cell : str
        A box table ``mask`` cell (:mod:`napari_samboxes.formats.rle`).

    Returns
    -------
    (numpy.ndarray, str) or None
        The part's inclusive xyxy box (float) and its own mask cell; None
        when the mask is one part, its fragments lie within the largest
        part's box, or the cell is empty or malformed.
    """
    if not cell:
        return None
    try:
        x0, y0, crop = decode_cell(cell)
    except FormatError:
        return None
    got = largest_part(crop)
    if got is None or got[1] < 2:
        return None
    part = got[0]
    rows, cols = np.flatnonzero(part.any(axis=1)), np.flatnonzero(part.any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    if (r0, c0, r1, c1) == (0, 0, crop.shape[0] - 1, crop.shape[1] - 1):
        return None  # the fragments do not make the box larger
    sub = part[r0 : r1 + 1, c0 : c1 + 1]
    box = np.array([x0 + c0, y0 + r0, x0 + c1, y0 + r1], dtype=np.float64)
    counts = encode_rle(sub)["counts"]
    return box, f"{x0 + c0} {y0 + r0} {c1 - c0 + 1} {r1 - r0 + 1} {counts}"
