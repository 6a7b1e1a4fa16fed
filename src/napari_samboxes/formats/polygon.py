"""A mask as one polygon, for YOLO segmentation labels; no napari or Qt.

YOLO-seg holds one polygon per object (``class x1 y1 x2 y2 ...``,
normalised), and Ultralytics takes an object's box from its polygon. So
the polygon here keeps the mask's bounding box exactly:

* each 4-connected part of the mask, its holes filled, gives its outline
  (marching squares at level 0.5 around the pixels, so the outline passes
  the outermost pixels' outer edges: a mask over columns 3..7 spans
  x = 3 to 8 in continuous coordinates);
* points on a straight stretch are dropped (lossless);
* several parts are joined into one polygon by zero-width bridges between
  their nearest points, as Ultralytics' own converters do.

Holes are not kept (YOLO polygons cannot hold them).
"""

from __future__ import annotations

import numpy as np

__all__ = ["box_polygon", "mask_polygon"]


def _drop_collinear(p: np.ndarray) -> np.ndarray:
    if len(p) < 4:
        return p
    prev, nxt = np.roll(p, 1, axis=0), np.roll(p, -1, axis=0)
    cross = (p[:, 0] - prev[:, 0]) * (nxt[:, 1] - p[:, 1]) - (p[:, 1] - prev[:, 1]) * (
        nxt[:, 0] - p[:, 0]
    )
    keep = np.abs(cross) > 1e-9
    return p[keep] if keep.sum() >= 3 else p


def _outline(part: np.ndarray) -> np.ndarray:
    """(K, 2) x, y outline of one filled part, in the crop's continuous
    coordinates."""
    from skimage.measure import find_contours

    padded = np.pad(part, 1).astype(np.float32)
    contours = find_contours(padded, 0.5)
    c = max(contours, key=len)[:-1]  # closed: the last point repeats the first
    xy = c[:, ::-1] - 0.5  # (row, col) of the padded array -> continuous x, y
    return _drop_collinear(xy)


def _join(polygons: list[np.ndarray]) -> np.ndarray:
    """One polygon through all: each next part is entered and left at the
    point pair nearest to the polygon so far."""
    from scipy.spatial import cKDTree

    merged = polygons[0]
    for p in polygons[1:]:
        dist, idx = cKDTree(merged).query(p)
        j = int(np.argmin(dist))
        i = int(idx[j])
        rot = np.roll(p, -j, axis=0)
        merged = np.concatenate([merged[: i + 1], rot, rot[:1], merged[i:]])
    return merged


def mask_polygon(crop: np.ndarray, x0: float = 0, y0: float = 0) -> np.ndarray:
    """One polygon (K, 2) of x, y continuous image coordinates for a mask.

    Parameters
    ----------
    crop : numpy.ndarray
        2D bool mask (a crop of the image, or the whole image).
    x0, y0 : float
        Where the crop's top-left pixel lies in the image.

    Returns
    -------
    numpy.ndarray
        Its bounding box is the mask's: ``min x = x_min``, ``max x =
        x_max + 1`` (likewise y). Empty (0, 2) for an empty mask.
    """
    from scipy.ndimage import binary_fill_holes
    from skimage.measure import label

    m = np.asarray(crop, dtype=bool)
    labels = label(m, connectivity=1)
    parts = [
        _outline(binary_fill_holes(labels == k)) for k in range(1, labels.max() + 1)
    ]
    if not parts:
        return np.zeros((0, 2))
    return _join(parts) + np.array([x0, y0], dtype=np.float64)


def box_polygon(xyxy: np.ndarray) -> np.ndarray:
    """The rectangle (4, 2) of an inclusive pixel box, in continuous x, y."""
    x0, y0, x1, y1 = (float(v) for v in np.asarray(xyxy).reshape(4))
    return np.array([[x0, y0], [x1 + 1, y0], [x1 + 1, y1 + 1], [x0, y1 + 1]])
