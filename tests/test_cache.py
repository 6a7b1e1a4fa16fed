"""On-disk cache of raw per-mask results and image embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from napari_samboxes.cache import CandidateCache, cache_key
from napari_samboxes.candidates import RawMasks
from napari_samboxes.settings import DEFAULTS

FIELDS = RawMasks.field_names()


def raw(n=6):
    rng = np.random.default_rng(1)
    return RawMasks(
        boxes=rng.integers(0, 50, (n, 4)),
        areas=rng.integers(1, 999, n),
        iou_preds=rng.random(n).astype(np.float32),
        stability=rng.random(n).astype(np.float32),
        points=rng.random((n, 2)),
        crop_boxes=np.tile([0, 0, 60, 40], (n, 1)),
        near_edge=rng.random(n) > 0.5,
    )


def test_key_depends_on_image_checkpoint_grid_and_crops_not_thresholds():
    img = np.zeros((8, 8, 3), np.uint8)
    k = cache_key(img, "abc", DEFAULTS)
    assert k == cache_key(img.copy(), "abc", DEFAULTS)
    assert k == cache_key(img, "abc", DEFAULTS.with_(pred_iou_thresh=0.5))
    assert k == cache_key(img, "abc", DEFAULTS.with_(crop_nms_thresh=0.2))
    img2 = img.copy()
    img2[0, 0, 0] = 1
    keys = {
        k,
        cache_key(img2, "abc", DEFAULTS),
        cache_key(img, "abd", DEFAULTS),
        cache_key(img, "abc", DEFAULTS.with_(points_per_side=16)),
        cache_key(img, "abc", DEFAULTS.with_(crop_n_layers=1)),
        cache_key(img, "abc", DEFAULTS.with_(crop_overlap_ratio=0.25)),
        cache_key(img, "abc", DEFAULTS.with_(crop_n_points_downscale_factor=2)),
    }
    assert len(keys) == 7


def test_round_trip_and_corrupt_entry(tmp_path):
    c = CandidateCache(tmp_path)
    r = raw()
    assert c.load("k") is None
    c.save("k", r)
    back = c.load("k")
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(back, f), getattr(r, f))
    c.path("k").write_bytes(b"PK\x03\x04 definitely not an npz")
    assert c.load("k") is None  # ignored, not fatal
    c.save("k", r)  # overwritten
    assert c.load("k") is not None
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave nothing


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("boxes", lambda a: a.astype(np.float64)),  # wrong dtype
        ("boxes", lambda a: a[:, :3]),  # wrong shape
        ("iou_preds", lambda a: a.astype(np.float16)),
        ("points", lambda a: a[:-1]),  # one row short
        ("areas", lambda a: a.reshape(2, -1)),
        ("near_edge", lambda a: a.astype(np.uint8)),
        ("crop_boxes", None),  # missing
    ],
)
def test_entry_with_wrong_dtype_or_shape_is_ignored_and_rewritten(tmp_path, field, bad):
    c = CandidateCache(tmp_path)
    r = raw()
    arrays = {f: getattr(r, f) for f in FIELDS}
    if bad is None:
        del arrays[field]
    else:
        arrays[field] = bad(arrays[field])
    c.folder.mkdir(exist_ok=True)
    np.savez(c.path("k"), **arrays)
    assert c.load("k") is None
    c.save("k", r)
    np.testing.assert_array_equal(c.load("k").boxes, r.boxes)


def test_embedding_round_trip_is_exact_and_damage_is_ignored(tmp_path):
    import torch

    from napari_samboxes.engine import Embedding

    c = CandidateCache(tmp_path)
    f = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(0))
    emb = Embedding(features=f, input_size=(768, 1024), original_size=(192, 256))
    assert c.load_embedding("k") is None
    c.save_embedding("k", emb)
    back = c.load_embedding("k")
    assert back.features.dtype == torch.float32
    assert torch.equal(back.features, f)  # bit for bit, not float16
    assert back.input_size == (768, 1024) and back.original_size == (192, 256)
    np.savez(
        c.embedding_path("k"),
        features=f.numpy().astype(np.float16),
        input_size=np.array([768, 1024]),
        original_size=np.array([192, 256]),
    )
    assert c.load_embedding("k") is None
    c.save_embedding("k", emb)
    assert torch.equal(c.load_embedding("k").features, f)
