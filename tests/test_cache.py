"""On-disk cache of raw per-mask results and image embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_samboxes.cache import CandidateCache, cache_key, embedding_key
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
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave nothing
    assert c.path("k").parent == tmp_path / "candidates"


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
    c.candidates_dir.mkdir(parents=True, exist_ok=True)
    np.savez(c.path("k"), **arrays)
    assert c.load("k") is None
    c.save("k", r)
    np.testing.assert_array_equal(c.load("k").boxes, r.boxes)


def test_key_has_an_embedding_part_shared_by_every_grid():
    img = np.zeros((8, 8, 3), np.uint8)
    k8, k16 = (
        cache_key(img, "abc", DEFAULTS.with_(points_per_side=n)) for n in (8, 16)
    )
    assert k8 != k16 and embedding_key(k8) == embedding_key(k16)
    assert embedding_key(cache_key(img, "abd", DEFAULTS)) != embedding_key(k8)
    c = CandidateCache(Path("/nowhere"))
    assert c.embedding_path(k8) == c.embedding_path(k16)
    assert c.embedding_path(k8).parent == Path("/nowhere/embeddings")
    assert c.path(k8) != c.path(k16)


def features(seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 256, 64, 64, generator=g)


def test_embedding_round_trip_is_exact_and_damage_is_ignored(tmp_path):
    import torch

    from napari_samboxes.engine import Embedding

    c = CandidateCache(tmp_path)
    f = features()
    emb = Embedding(features=f, input_size=(768, 1024), original_size=(192, 256))
    assert c.load_embedding("k") is None
    c.save_embedding("k", emb)
    back = c.load_embedding("k", exact=True)
    assert back.features.dtype == torch.float32
    assert torch.equal(back.features, f)  # bit for bit, not float16
    assert back.input_size == (768, 1024) and back.original_size == (192, 256)
    # stored losslessly in fewer bytes than the raw float32 array
    assert c.embedding_path("k").stat().st_size < f.numpy().nbytes
    np.savez(  # the previous layout's raw float16 features: refused
        c.embedding_path("k"),
        features=f.numpy().astype(np.float16),
        input_size=np.array([768, 1024]),
        original_size=np.array([192, 256]),
    )
    assert c.load_embedding("k") is None
    c.save_embedding("k", emb)
    assert torch.equal(c.load_embedding("k").features, f)
    c.embedding_path("k").write_bytes(b"PK\x03\x04 broken")
    assert c.load_embedding("k") is None


def test_float16_embeddings_halve_the_bytes_and_never_resume_a_run(tmp_path):
    import torch

    from napari_samboxes.engine import Embedding

    f = features()
    emb = Embedding(features=f, input_size=(768, 1024), original_size=(192, 256))
    exact, half = (
        CandidateCache(tmp_path / "a"),
        CandidateCache(tmp_path / "b", embeddings="float16"),
    )
    exact.save_embedding("k", emb)
    half.save_embedding("k", emb)
    n32 = exact.embedding_path("k").stat().st_size
    n16 = half.embedding_path("k").stat().st_size
    assert n16 < 0.6 * n32
    back = half.load_embedding("k")
    assert torch.equal(back.features, f.half().float())  # float32 on the way out
    assert half.load_embedding("k", exact=True) is None  # not for a run
    none = CandidateCache(tmp_path / "c", embeddings="none")
    assert none.save_embedding("k", emb) is None
    assert not none.embedding_path("k").exists()
    with pytest.raises(ValueError, match="embeddings"):
        CandidateCache(tmp_path, embeddings="int8")


def test_environment_chooses_the_embeddings_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_SAMBOXES_CACHE_EMBEDDINGS", "float16")
    assert CandidateCache(tmp_path).embeddings == "float16"
    monkeypatch.setenv("NAPARI_SAMBOXES_CACHE_EMBEDDINGS", "bf16")
    with pytest.warns(RuntimeWarning, match="NAPARI_SAMBOXES_CACHE_EMBEDDINGS"):
        assert CandidateCache(tmp_path).embeddings == "float32"


def test_one_embedding_for_every_grid_of_an_image(
    structured_model, synthetic, tmp_path, monkeypatch
):
    from napari_samboxes import engine
    from napari_samboxes.pipeline import drain, raw_results

    cache = CandidateCache(tmp_path)
    encodes = []
    real = engine.encode_image
    monkeypatch.setattr(
        engine, "encode_image", lambda *a: encodes.append(1) or real(*a)
    )
    fresh = {}
    for n in (2, 3):
        s = DEFAULTS.with_(points_per_side=n)
        fresh[n] = drain(raw_results(synthetic, s, model=structured_model, cache=cache))
    assert len(encodes) == 1  # the second grid reused the first one's embedding
    assert len(list((tmp_path / "embeddings").glob("*.npz"))) == 1
    assert len(list((tmp_path / "candidates").glob("*.npz"))) == 2
    # and the candidates from the stored embedding are those of a fresh encode
    fresh3 = drain(
        raw_results(
            synthetic, DEFAULTS.with_(points_per_side=3), model=structured_model
        )
    )
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(fresh[3], f), getattr(fresh3, f))
