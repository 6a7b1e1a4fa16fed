"""Images read as their users see them (issue 11 item 6), real files."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from napari_samboxes.image import to_rgb8
from napari_samboxes.imread import ImageReadError, read_image


def picture():
    img = np.zeros((24, 32, 3), np.uint8)
    img[:, :16] = (220, 30, 40)  # red left half
    img[:, 16:] = (30, 40, 210)  # blue right half
    return img


def test_single_frame_gif_is_one_rgb_plane(tmp_path):
    # imageio gave (1, H, W, 3), which the CLI refused
    p = tmp_path / "a.gif"
    Image.fromarray(picture()).save(p)
    arr = read_image(p)
    assert arr.shape == (24, 32, 3) and arr.dtype == np.uint8
    assert to_rgb8(arr)[5, 5, 0] > 180 and to_rgb8(arr)[5, 25, 2] > 170


def test_grey_alpha_png_becomes_rgba(tmp_path):
    # (H, W, 2) was refused
    p = tmp_path / "la.png"
    la = np.zeros((20, 30, 2), np.uint8)
    la[..., 0] = np.arange(30, dtype=np.uint8) * 8
    la[..., 1] = 255
    Image.fromarray(la, mode="LA").save(p)
    rgb = to_rgb8(read_image(p))
    assert rgb.shape == (20, 30, 3)
    np.testing.assert_array_equal(rgb[3, :, 0], la[0, :, 0])
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


def test_cmyk_jpeg_is_not_a_colour_negative(tmp_path):
    p = tmp_path / "cmyk.jpg"
    Image.fromarray(picture()).convert("CMYK").save(p, quality=95)
    rgb = to_rgb8(read_image(p))
    r, g, b = (int(v) for v in rgb[12, 4])
    assert r > 170 and g < 90 and b < 90, (r, g, b)  # red, not cyan
    r, g, b = (int(v) for v in rgb[12, 28])
    assert b > 160 and r < 90, (r, g, b)


def test_16_bit_png_keeps_its_values(tmp_path):
    import imageio.v3 as iio

    p = tmp_path / "deep.png"
    deep = (np.arange(16 * 20, dtype=np.uint16).reshape(16, 20) * 200).astype(np.uint16)
    iio.imwrite(p, deep)
    arr = read_image(p)
    assert arr.dtype == np.uint16
    np.testing.assert_array_equal(arr, deep)


def test_palette_with_transparency_and_one_bit(tmp_path):
    p = tmp_path / "p.png"
    Image.fromarray(picture()).convert("P").save(p, transparency=0)
    assert read_image(p).shape == (24, 32, 4)
    q = tmp_path / "bw.png"
    Image.fromarray(picture()[..., 0] > 100).save(q)
    assert set(np.unique(read_image(q))) == {0, 255}


def test_fifo_is_refused_at_once(tmp_path):
    # a FIFO hung the CLI: nobody writes to it
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageReadError, match="not a regular file"):
        read_image(fifo)  # before the fix this call never returned


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p.mkdir(), "is a folder"),
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b"not an image"), "not an image file"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40), "image"),
    ],
)
def test_other_bad_paths_are_named(tmp_path, make, match):
    p = tmp_path / "x.png"
    make(p)
    with pytest.raises(ImageReadError, match=match) as e:
        read_image(p)
    assert "x.png" in str(e.value)


def test_tiff_stack_keeps_its_axes(tmp_path):
    import tifffile

    p = tmp_path / "stack.tif"
    stack = np.arange(3 * 8 * 10, dtype=np.uint16).reshape(3, 8, 10)
    tifffile.imwrite(p, stack)
    np.testing.assert_array_equal(read_image(p), stack)
