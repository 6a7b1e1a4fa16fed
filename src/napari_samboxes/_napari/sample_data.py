"""A sample photo for the File > Open Sample menu."""

from __future__ import annotations

from typing import Any

import numpy as np


def sample_image() -> np.ndarray:
    """A natural RGB photo (scikit-image's coffee, 400 x 600), or a
    synthetic picture with a few objects if scikit-image is absent."""
    try:
        from skimage import data

        return np.asarray(data.coffee())
    except ImportError:
        yy, xx = np.mgrid[0:384, 0:512]
        img = np.full((384, 512, 3), 40, np.uint8)
        for cy, cx, r, col in [
            (100, 120, 50, (220, 60, 60)),
            (250, 330, 80, (60, 200, 90)),
            (120, 400, 35, (70, 90, 230)),
        ]:
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = col
        return img


def make_sample_data() -> list[tuple[Any, dict[str, Any], str]]:
    """Return the sample photo as an image layer data tuple."""
    return [(sample_image(), {"name": "photo", "rgb": True}, "image")]
