"""Any napari image data -> H x W x 3 uint8 RGB for SAM.

No napari or Qt here: the widget passes the layer's data, its contrast
limits and whether it is RGB.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "MAX_LEVEL_SIDE",
    "MIN_SIDE",
    "ImageError",
    "default_limits",
    "Plane",
    "extract_plane",
    "to_rgb8",
]

#: Smallest image side accepted (SAM upsamples anything to 1024 pixels).
MIN_SIDE = 4
#: Multiscale images: the finest level whose longest side is at most this.
MAX_LEVEL_SIDE = 4096


class ImageError(ValueError):
    """Image data that cannot be turned into an RGB picture for SAM."""


def _is_color(arr: np.ndarray, rgb: bool | None) -> bool:
    if rgb is not None:
        return bool(rgb) and arr.ndim >= 3 and arr.shape[-1] in (3, 4)
    return arr.ndim == 3 and arr.shape[-1] in (3, 4)


def default_limits(arr: np.ndarray) -> tuple[float, float]:
    """The contrast limits :func:`to_rgb8` uses when given none.

    0..255 for uint8, 0..1 for bool, else the finite minimum and maximum
    (0..1 when no value is finite). ``arr`` holds the channels to map
    (alpha already dropped).
    """
    if arr.dtype == np.uint8:
        return (0.0, 255.0)
    if arr.dtype.kind == "b":
        return (0.0, 1.0)
    finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
    if finite.size == 0:
        return (0.0, 1.0)
    return (float(finite.min()), float(finite.max()))


def to_rgb8(
    data: np.ndarray,
    contrast_limits: Sequence[float] | None = None,
    rgb: bool | None = None,
) -> np.ndarray:
    """Map image data to an H x W x 3 uint8 RGB array.

    Parameters
    ----------
    data : array-like
        A 2D plane (H x W) or a colour plane (H x W x 3 or H x W x 4; alpha
        is dropped). Any real dtype, bool included; NaN and -inf map to
        the lower limit (black), +inf to the upper one (white).
    contrast_limits : (float, float), optional
        Values mapped to 0 and 255 (clipped). Default:
        :func:`default_limits` (0..255 for uint8, 0..1 for bool, else the
        finite minimum and maximum of the data).
    rgb : bool, optional
        Whether the last axis holds colour channels; guessed from the shape
        when None.

    Returns
    -------
    numpy.ndarray
        H x W x 3, uint8, C-contiguous.

    Raises
    ------
    ImageError
        For empty, complex, non-numeric data or data that is not one plane.
    """
    arr = np.asarray(data)
    if arr.dtype.kind == "c":
        raise ImageError(
            "complex image data cannot be segmented: take abs() or real first"
        )
    if arr.dtype.kind not in "biuf":
        raise ImageError(f"image data of type {arr.dtype} is not numeric")
    color = _is_color(arr, rgb)
    plane_ndim = 3 if color else 2
    if arr.ndim != plane_ndim:
        raise ImageError(
            f"expected one {'colour ' if color else ''}plane, got shape {arr.shape}"
        )
    if arr.size == 0 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"the image is empty (shape {arr.shape})")
    if min(arr.shape[:2]) < MIN_SIDE:
        raise ImageError(
            f"the image is {arr.shape[0]} x {arr.shape[1]} pixels; at least "
            f"{MIN_SIDE} x {MIN_SIDE} is needed to find objects"
        )
    if color:
        arr = arr[..., :3]
    identity = contrast_limits is None or (
        float(contrast_limits[0]) == 0.0 and float(contrast_limits[1]) == 255.0
    )
    if arr.dtype == np.uint8 and identity:
        out = arr  # already 8-bit with the identity mapping: no conversion
    else:
        lo, hi = (
            default_limits(arr)
            if contrast_limits is None
            else (float(v) for v in contrast_limits)
        )
        if arr.dtype.kind == "b":
            arr = arr.astype(np.uint8)
        f = arr.astype(np.float64)
        if hi <= lo:
            f = np.where(f > lo, 255.0, 0.0)
        else:
            f = (f - lo) * (255.0 / (hi - lo))
        f = np.nan_to_num(f, nan=0.0, posinf=255.0, neginf=0.0)
        out = np.clip(np.rint(f), 0, 255).astype(np.uint8)
    if not color:
        out = np.repeat(out[..., None], 3, axis=-1)
    return np.ascontiguousarray(out)


@dataclass(frozen=True)
class Plane:
    """The 2D plane of a layer that SAM segments.

    Attributes
    ----------
    rgb8 : numpy.ndarray
        H x W x 3 uint8, as fed to SAM.
    index : tuple of int
        The leading (slice) indices of the plane in the layer's data.
    scale : (float, float)
        (x, y) size of one plane pixel in level-0 pixels (multiscale data).
    """

    rgb8: np.ndarray
    index: tuple[int, ...]
    scale: tuple[float, float]


def _level(levels: Sequence[Any], rgb: bool) -> tuple[Any, tuple[float, float]]:
    """The finest level at most :data:`MAX_LEVEL_SIDE` on a side, and its
    (x, y) scale to level 0."""
    sh = (-3, -2) if rgb else (-2, -1)
    chosen = next(
        (
            lv
            for lv in levels
            if max(lv.shape[sh[0]], lv.shape[sh[1]]) <= MAX_LEVEL_SIDE
        ),
        levels[-1],
    )
    full = levels[0].shape
    return chosen, (
        full[sh[1]] / chosen.shape[sh[1]],
        full[sh[0]] / chosen.shape[sh[0]],
    )


def extract_plane(
    data: Any,
    *,
    index: Sequence[int] = (),
    rgb: bool = False,
    multiscale: bool = False,
    contrast_limits: Sequence[float] | None = None,
) -> Plane:
    """Read one plane of (possibly lazy, multiscale, nD) layer data as RGB.

    This is the heavy part of preparing a run (reading, converting): the
    widget calls it in the worker thread, never on the UI thread.

    Parameters
    ----------
    data : array-like or list of array-like
        A layer's data (a list of levels when ``multiscale``).
    index : sequence of int
        Indices along the leading (non-plane) axes; clipped to the shape.
    rgb, multiscale : bool
        As the layer's attributes.
    contrast_limits : (float, float), optional
        The layer's contrast limits (see :func:`to_rgb8`).
    """
    scale = (1.0, 1.0)
    if multiscale:
        data, scale = _level(list(data), rgb)
    n_lead = data.ndim - (3 if rgb else 2)
    idx = tuple(
        int(np.clip(int(index[i]) if i < len(index) else 0, 0, data.shape[i] - 1))
        for i in range(max(n_lead, 0))
    )
    plane = np.asarray(data[idx] if idx else data)
    return Plane(to_rgb8(plane, contrast_limits, rgb), idx, scale)
