"""Box geometry: box tables <-> napari rectangles (numpy only, no napari).

A box ``x_min..x_max`` (pixel columns, inclusive) is drawn as a napari
rectangle whose edges lie on the pixel borders: from ``x_min - 0.5`` to
``x_max + 0.5``. Rectangles are in the image layer's data coordinates
(rows, columns), with leading slice coordinates for nD images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .formats.boxtable import BoxTable

__all__ = ["boxes_from_shapes", "shapes_from_boxes", "table_from_layer_data"]


def shapes_from_boxes(
    boxes: np.ndarray, slices: np.ndarray | None = None
) -> list[np.ndarray]:
    """napari rectangle vertices (4 x ndim each) for xyxy boxes."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = len(boxes)
    if slices is None:
        slices = np.zeros((n, 0))
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
    lead = np.repeat(np.asarray(slices, dtype=np.float64)[:, None, :], 4, axis=1)
    verts = np.concatenate([lead, rc], axis=-1)
    return list(verts)


def boxes_from_shapes(shapes: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """xyxy boxes (bounding boxes of the shapes) and their slice coordinates."""
    if len(shapes) == 0:
        return np.zeros((0, 4)), np.zeros((0, 0))
    ndim = np.asarray(shapes[0]).shape[-1]
    boxes = np.zeros((len(shapes), 4))
    slices = np.zeros((len(shapes), ndim - 2))
    for i, s in enumerate(shapes):
        v = np.asarray(s, dtype=np.float64)
        lo, hi = v[:, -2:].min(axis=0), v[:, -2:].max(axis=0)
        boxes[i] = [lo[1] + 0.5, lo[0] + 0.5, hi[1] - 0.5, hi[0] - 0.5]
        slices[i] = v[0, :-2]
    return boxes, slices


def table_from_layer_data(data: Sequence[np.ndarray], meta: dict[str, Any]) -> BoxTable:
    """A box table from a Shapes layer's data and metadata (features)."""
    boxes, slices = boxes_from_shapes(data)
    n = len(boxes)
    feats = meta.get("features")
    labels = ["object"] * n
    scores = np.full(n, np.nan)
    if feats is not None and len(feats) == n:
        if "label" in feats:
            labels = ["" if v is None else str(v) for v in feats["label"]]
        if "score" in feats:
            scores = np.asarray(feats["score"], dtype=np.float64)
    return BoxTable(labels=labels, boxes=boxes, scores=scores, slices=slices)
