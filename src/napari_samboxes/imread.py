"""Read an image file as its user sees it (no napari or Qt).

Pillow decodes the file and its mode is converted as an image viewer would:

- palette (``P``, GIF) -> RGB, or RGBA where the palette has transparency;
- grey + alpha (``LA``, ``La``, ``PA``) -> RGBA (grey in the colour channels);
- CMYK (JPEG or TIFF), YCbCr, LAB, HSV -> RGB (Pillow undoes Adobe's
  inverted CMYK, so a CMYK photo is not a colour negative);
- 1-bit -> 0/255 grey;
- 16-bit grey (``I;16``), 32-bit integer and float planes are kept as they
  are (``to_rgb8`` maps their range later).

An animation (GIF, APNG, multi-page file) gives its first frame. TIFF files
are read with ``tifffile`` where installed (stacks and 16-bit colour kept).
Anything that is not a regular file (a folder, FIFO, device, socket) is
refused at once, so a FIFO never blocks the reader.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ImageReadError", "read_image"]

_TO_RGB = ("CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa")
_TO_RGBA = ("LA", "La", "PA")


class ImageReadError(ValueError):
    """A file that cannot be read as an image; the message names it."""


def _check_regular(path: Path) -> None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except OSError as e:
        raise ImageReadError(f"{path}: cannot open it ({e.strerror})") from None
    if stat.S_ISDIR(mode):
        raise ImageReadError(f"{path}: is a folder, not an image file")
    if not stat.S_ISREG(mode):
        raise ImageReadError(
            f"{path}: not a regular file (a FIFO, device or socket); give an image file"
        )


def _read_tiff(path: Path) -> np.ndarray | None:
    try:
        import tifffile
    except ImportError:  # pragma: no cover - Pillow reads simple TIFFs
        return None
    try:
        return np.asarray(tifffile.imread(path))
    except Exception:  # noqa: BLE001 - let Pillow try (JPEG-in-TIFF, say)
        return None


def _convert(im: Any) -> Any:
    """A Pillow image in a mode numpy and ``to_rgb8`` read as users expect."""
    if im.mode == "P":
        return im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in _TO_RGBA:
        return im.convert("RGBA")
    if im.mode in _TO_RGB:
        return im.convert("RGB")
    return im.convert("L") if im.mode == "1" else im


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file into an array (H x W, H x W x 3 or H x W x 4).

    Parameters
    ----------
    path : str or Path
        An image file Pillow can read (PNG, JPEG, GIF, BMP, TIFF, WebP...).

    Returns
    -------
    numpy.ndarray
        uint8 for 8-bit images; 16-bit grey stays uint16, other integer and
        float planes keep their dtype. TIFF stacks keep all their axes.

    Raises
    ------
    ImageReadError
        If the path is missing, not a regular file or not a readable image.
    """
    path = Path(path)
    _check_regular(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        arr = _read_tiff(path)
        if arr is not None:
            return arr
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as f:
            f.seek(0)  # the first frame of an animation
            arr = np.asarray(_convert(f))
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file Pillow can read") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{path}: {e}") from None
    except (OSError, ValueError, SyntaxError) as e:  # truncated, bad header
        raise ImageReadError(f"{path}: damaged or unsupported image ({e})") from None
    if arr.dtype.byteorder == ">":  # I;16B
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr
