"""Any napari image data -> H x W x 3 uint8 RGB for SAM.

No napari or Qt here: the widget passes the layer's data, its contrast
limits and whether it is RGB.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["MIN_SIDE", "ImageError", "to_rgb8"]

#: Smallest image side accepted (SAM upsamples anything to 1024 pixels).
MIN_SIDE = 4


class ImageError(ValueError):
    """Image data that cannot be turned into an RGB picture for SAM."""


def _is_color(arr: np.ndarray, rgb: bool | None) -> bool:
    if rgb is not None:
        return bool(rgb) and arr.ndim >= 3 and arr.shape[-1] in (3, 4)
    return arr.ndim == 3 and arr.shape[-1] in (3, 4)


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
        is dropped). Any real dtype, bool included; NaN and inf are treated
        as the lower limit.
    contrast_limits : (float, float), optional
        Values mapped to 0 and 255 (clipped). Default: 0..255 for uint8,
        0..1 for bool, else the finite minimum and maximum of the data.
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
    if arr.dtype == np.uint8 and contrast_limits is None:
        out = arr
    else:
        if arr.dtype.kind == "b":
            arr = arr.astype(np.uint8)
            lo, hi = (0.0, 1.0) if contrast_limits is None else contrast_limits
        elif contrast_limits is None:
            finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
            if finite.size == 0:
                lo, hi = 0.0, 1.0
            else:
                lo, hi = float(finite.min()), float(finite.max())
        else:
            lo, hi = (float(v) for v in contrast_limits)
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
