"""On-disk cache of raw per-mask results."""

from __future__ import annotations

import numpy as np

from napari_samboxes.cache import CandidateCache, cache_key
from napari_samboxes.engine import RawMasks
from napari_samboxes.settings import Settings


def raw(n=6):
    rng = np.random.default_rng(1)
    return RawMasks(
        boxes=rng.integers(0, 50, (n, 4)),
        areas=rng.integers(1, 999, n),
        iou_preds=rng.random(n).astype(np.float32),
        stability=rng.random(n).astype(np.float32),
        points=rng.random((n, 2)),
    )


def test_key_depends_on_image_checkpoint_and_grid():
    img = np.zeros((8, 8, 3), np.uint8)
    k = cache_key(img, "abc", Settings())
    assert k == cache_key(img.copy(), "abc", Settings())
    img2 = img.copy()
    img2[0, 0, 0] = 1
    assert (
        len(
            {
                k,
                cache_key(img2, "abc", Settings()),
                cache_key(img, "abd", Settings()),
                cache_key(img, "abc", Settings(points_per_side=16)),
            }
        )
        == 4
    )


def test_round_trip_and_corrupt_entry(tmp_path):
    c = CandidateCache(tmp_path)
    r = raw()
    assert c.load("k") is None
    c.save("k", r)
    back = c.load("k")
    for f in ("boxes", "areas", "iou_preds", "stability", "points"):
        np.testing.assert_array_equal(getattr(back, f), getattr(r, f))
    c.path("k").write_bytes(b"PK\x03\x04 definitely not an npz")
    assert c.load("k") is None  # ignored, not fatal
    c.save("k", r)  # overwritten
    assert c.load("k") is not None
