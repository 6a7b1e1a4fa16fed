"""Pick the smallest candidate box that contains the clicked points.

Pure numpy, vectorised over candidates (no Python loop over boxes).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["containing", "select_box"]


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
