"""Box geometry: box tables <-> napari rectangles (numpy only, no napari).

A box ``x_min..x_max`` (pixel columns, inclusive) is drawn as a napari
rectangle whose edges lie on the pixel borders: from ``x_min - 0.5`` to
``x_max + 0.5``. Rectangles are in the image layer's data coordinates
(rows, columns), with leading slice coordinates for nD images.

Going back, any shape becomes the whole-pixel box of its axis-aligned
bounding box: a pixel belongs to the box when the shape covers at least
half of it along each axis (an edge at ``c`` gives ``x_min = ceil(c)``,
``x_max = floor(c')``); a shape narrower than that (under one pixel, a
line, a point) becomes the one pixel row or column under its centre. So
rectangles of any size, lines, ellipses, polygons and paths all give valid
boxes, at least one pixel wide and high. Shapes that cannot (NaN or
infinite coordinates, no vertices, several slices) are refused with a
:class:`ShapeError` naming the shape's index.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .formats.boxtable import SOURCES, BoxTable

__all__ = [
    "HAND_SOURCE",
    "ShapeError",
    "boxes_from_shapes",
    "shapes_from_boxes",
    "table_from_layer_data",
]

#: The source of a shape whose layer gives none (drawn with napari's tools).
HAND_SOURCE = "hand"
#: How far off a pixel border (or half-pixel) a float edge may be and still
#: count as on it (float noise of napari's transforms).
_EPS = 1e-6


class ShapeError(ValueError):
    """A shape that cannot be saved as a box; the message names its index."""


def shapes_from_boxes(
    boxes: np.ndarray, slices: np.ndarray | None = None
) -> list[np.ndarray]:
    """napari rectangle vertices (4 x ndim each) for xyxy boxes."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be an (N, 4) array, not {boxes.shape}")
    n = len(boxes)
    slices = np.zeros((n, 0)) if slices is None else np.asarray(slices, np.float64)
    if slices.size == 0:
        slices = slices.reshape(n, 0)
    if slices.ndim != 2 or len(slices) != n:
        raise ValueError(f"slices must be an ({n}, S) array, not {slices.shape}")
    x0, y0, x1, y1 = (boxes[:, i] for i in range(4))
    r0, r1, c0, c1 = y0 - 0.5, y1 + 0.5, x0 - 0.5, x1 + 0.5
    rc = np.stack(
        [
            np.stack([r0, c0], -1),
            np.stack([r0, c1], -1),
            np.stack([r1, c1], -1),
            np.stack([r1, c0], -1),
        ],
        axis=1,
    )  # n x 4 x 2
    lead = np.repeat(slices[:, None, :], 4, axis=1)
    verts = np.concatenate([lead, rc], axis=-1)
    return list(verts)


def _pixel_span(lo: float, hi: float) -> tuple[float, float]:
    """Inclusive pixel indices covered at least half by ``[lo, hi]``."""
    first, last = math.ceil(lo - _EPS), math.floor(hi + _EPS)
    if last < first:  # under a pixel: the pixel under the centre
        first = last = math.floor((lo + hi) / 2 + 0.5)
    return float(first), float(last)


def _vertices(i: int, shape: Any, ndim: int | None) -> np.ndarray:
    try:
        v = np.asarray(shape, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ShapeError(f"shape {i}: its vertices are not numbers ({e})") from None
    if v.ndim != 2 or len(v) == 0 or v.shape[1] < 2:
        raise ShapeError(
            f"shape {i}: expected (vertices, ndim) coordinates, got shape {v.shape}"
        )
    if ndim is not None and v.shape[1] != ndim:
        raise ShapeError(f"shape {i}: {v.shape[1]} dimensions, the others {ndim}")
    if not np.isfinite(v).all():
        raise ShapeError(
            f"shape {i}: has NaN or infinite coordinates; delete or redraw it"
        )
    if np.ptp(v[:, :-2], axis=0).max(initial=0.0) > _EPS:
        raise ShapeError(
            f"shape {i}: spans several slices ({v[:, :-2].min(0).tolist()} to "
            f"{v[:, :-2].max(0).tolist()}); a box lies in one slice"
        )
    return v


def boxes_from_shapes(shapes: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Whole-pixel xyxy boxes of napari shapes and their slice coordinates.

    Parameters
    ----------
    shapes : sequence of array-like
        Each (V, ndim) vertices in data coordinates (rows, columns last), as
        a Shapes layer's ``data``. Any shape type: the box is taken from the
        axis-aligned bounding box of the vertices.

    Returns
    -------
    boxes : numpy.ndarray
        (N, 4) xyxy inclusive pixel indices (whole numbers; x_min <= x_max,
        y_min <= y_max).
    slices : numpy.ndarray
        (N, ndim - 2) leading coordinates.

    Raises
    ------
    ShapeError
        For a shape with NaN or infinite coordinates, no vertices, a
        dimension count unlike the others' or spanning several slices.
    """
    if len(shapes) == 0:
        return np.zeros((0, 4)), np.zeros((0, 0))
    vs = [_vertices(0, shapes[0], None)]
    vs += [_vertices(i, s, vs[0].shape[1]) for i, s in enumerate(shapes) if i]
    boxes = np.zeros((len(vs), 4))
    slices = np.zeros((len(vs), vs[0].shape[1] - 2))
    for i, v in enumerate(vs):
        lo, hi = v[:, -2:].min(axis=0), v[:, -2:].max(axis=0)
        y0, y1 = _pixel_span(lo[0], hi[0])
        x0, x1 = _pixel_span(lo[1], hi[1])
        boxes[i] = [x0, y0, x1, y1]
        slices[i] = v[0, :-2]
    return boxes, slices


def _column(feats: Any, name: str, n: int) -> list[Any] | None:
    if feats is None or name not in feats:
        return None
    values = list(feats[name])
    return values if len(values) == n else None


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is np.nan


def _score(i: int, v: Any) -> float:
    if _missing(v) or (isinstance(v, str) and not v.strip()):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ShapeError(f"shape {i}: score {v!r} is not a number") from None


def table_from_layer_data(data: Sequence[Any], meta: dict[str, Any]) -> BoxTable:
    """A box table from a Shapes layer's data and state (``_get_state()``).

    Labels, scores and sources come from the ``features`` (``label``,
    ``score``, ``source``). A missing label is ``""`` (never ``"nan"``),
    a missing score NaN, a missing or unknown source ``"hand"`` (a shape
    drawn with napari's own tools). Without a ``label`` feature every label
    is ``"object"``.

    Raises
    ------
    ShapeError
        For a shape that gives no box (see :func:`boxes_from_shapes`), or a
        score that is not a number.
    """
    boxes, slices = boxes_from_shapes(data)
    n = len(boxes)
    feats = meta.get("features")
    if feats is None:
        feats = meta.get("properties")
    labels = _column(feats, "label", n)
    scores = _column(feats, "score", n)
    sources = _column(feats, "source", n)
    return BoxTable(
        labels=(
            ["" if _missing(v) else str(v) for v in labels]
            if labels is not None
            else ["object"] * n
        ),
        boxes=boxes,
        scores=np.array(
            [_score(i, v) for i, v in enumerate(scores)] if scores else [math.nan] * n,
            dtype=np.float64,
        ),
        slices=slices,
        sources=[
            v if isinstance(v, str) and v in SOURCES else HAND_SOURCE
            for v in (sources or [None] * n)
        ],
    )


def level_to_full(xyxy: Any, scale: Any) -> np.ndarray:
    """Boxes (N, 4) in pixels of a coarser level -> level-0 pixels.

    ``scale`` is the (x, y) size of a level pixel in level-0 pixels: pixel
    i of the level covers level-0 pixels ``i*s .. (i+1)*s - 1``.
    """
    sx, sy = float(scale[0]), float(scale[1])
    b = np.array(xyxy, dtype=np.float64).reshape(-1, 4)
    b[:, [0, 2]] = b[:, [0, 2]] * sx + [0.0, sx - 1]
    b[:, [1, 3]] = b[:, [1, 3]] * sy + [0.0, sy - 1]
    return b
