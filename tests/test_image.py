"""Any image data -> 8-bit RGB for SAM (pure numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_samboxes.image import ImageError, to_rgb8


def test_uint8_rgb_is_unchanged_and_alpha_dropped():
    rgb = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb8(rgb), rgb)
    rgba = np.dstack([rgb, np.full((6, 5), 7, np.uint8)])
    np.testing.assert_array_equal(to_rgb8(rgba), rgb)
    np.testing.assert_array_equal(to_rgb8(rgb, (0, 255), True), rgb)


def test_gray_float_uses_contrast_limits_and_clips():
    g = np.tile(np.array([[0.0, 0.5], [1.0, 2.0]]), (2, 2))
    out = to_rgb8(g, contrast_limits=(0, 1))
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    assert out[..., 0].tolist() == [[0, 128, 0, 128], [255, 255, 255, 255]] * 2


def test_uint16_narrow_range_and_int64_and_bool():
    g = np.full((8, 8), 1000, np.uint16)
    g[2:4] = 1010
    out = to_rgb8(g, contrast_limits=(1000, 1010))
    assert out[0, 0, 0] == 0 and out[2, 0, 0] == 255
    i64 = np.arange(64, dtype=np.int64).reshape(8, 8) - 10**12
    assert to_rgb8(i64)[..., 0].min() == 0 and to_rgb8(i64)[..., 0].max() == 255
    b = np.eye(8, dtype=bool)
    assert set(np.unique(to_rgb8(b))) == {0, 255}


def test_nan_inf_and_constant():
    f = np.full((8, 8), np.nan)
    f[0, 0] = np.inf
    f[1, 1] = -np.inf
    f[2, 2] = 5.0
    out = to_rgb8(f)
    assert out.dtype == np.uint8 and out[0, 0, 0] == 255 and out[1, 1, 0] == 0
    c = to_rgb8(np.full((8, 8), 3.0))
    assert np.all(c == 0)


@pytest.mark.parametrize(
    "data, match",
    [
        (np.zeros((0, 5)), "empty"),
        (np.zeros((1, 1)), "at least 4 x 4"),
        (np.zeros((8, 8), complex), "complex"),
        (np.zeros((2, 8, 8)), "one plane"),
        (np.array([["a"] * 8] * 8), "not numeric"),
    ],
)
def test_refused_with_a_clear_message(data, match):
    with pytest.raises(ImageError, match=match):
        to_rgb8(data)


def test_extreme_aspect_is_accepted():
    assert to_rgb8(np.zeros((10, 10000), np.uint16)).shape == (10, 10000, 3)
