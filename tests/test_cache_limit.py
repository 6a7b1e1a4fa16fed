"""The cache's size limit: least-recently-used eviction, rare scans, and the
current folder's entries kept and served."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from napari_samboxes.cache import (
    DEFAULT_LIMIT,
    CandidateCache,
    cache_key,
    parse_size,
)
from napari_samboxes.candidates import RawMasks
from napari_samboxes.settings import DEFAULTS


def raw(n, seed=0):
    rng = np.random.default_rng(seed)
    return RawMasks(
        boxes=rng.integers(0, 50, (n, 4)),
        areas=rng.integers(1, 999, n),
        iou_preds=rng.random(n).astype(np.float32),
        stability=rng.random(n).astype(np.float32),
        points=rng.random((n, 2)),
        crop_boxes=np.tile([0, 0, 60, 40], (n, 1)),
        near_edge=rng.random(n) > 0.5,
    )


def disk_bytes(root):
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def age(path, seconds_ago):
    t = time.time() - seconds_ago
    os.utime(path, (t, t))


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("2GB", 2 * 10**9),
        ("500 MB", 500 * 10**6),
        ("1.5GiB", int(1.5 * 2**30)),
        ("123", 123),
        ("0", 0),
        ("64kib", 64 * 1024),
        ("unlimited", None),
    ],
)
def test_sizes_are_read_with_their_units(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "2 XB", "-1GB", "", "GB"])
def test_a_size_that_is_not_one_is_refused_with_the_forms_accepted(text):
    with pytest.raises(ValueError, match="2GB"):
        parse_size(text)


def test_limit_from_the_argument_the_environment_or_the_default(tmp_path, monkeypatch):
    assert CandidateCache(tmp_path).limit == DEFAULT_LIMIT
    assert 10**9 <= DEFAULT_LIMIT <= 10 * 10**9  # a few GB
    monkeypatch.setenv("NAPARI_SAMBOXES_CACHE_LIMIT", "2GB")
    assert CandidateCache(tmp_path).limit == 2 * 10**9
    assert CandidateCache(tmp_path, limit="300MB").limit == 300 * 10**6
    assert CandidateCache(tmp_path, limit=1000).limit == 1000
    monkeypatch.setenv("NAPARI_SAMBOXES_CACHE_LIMIT", "lots")
    with pytest.warns(RuntimeWarning, match="NAPARI_SAMBOXES_CACHE_LIMIT"):
        assert CandidateCache(tmp_path).limit == DEFAULT_LIMIT


def entry_bytes(n, tmp_path):
    c = CandidateCache(tmp_path / "scratch", limit="unlimited")
    return c.save("k", raw(n)).stat().st_size


def test_filled_past_its_limit_the_cache_evicts_the_least_recently_used(tmp_path):
    limit = 40 * entry_bytes(100, tmp_path)
    d = tmp_path / "c"
    c = CandidateCache(d, limit=limit)
    for i in range(30):
        c.save(f"k{i}", raw(100, i))
        age(c.path(f"k{i}"), 1000 - i)  # written long ago, k0 first
    # another session uses k3 now (a load sets its time of last use)
    assert CandidateCache(d, limit=limit).load("k3") is not None
    for i in range(30, 45):  # past the limit
        c.save(f"k{i}", raw(100, i))
        assert disk_bytes(d) <= limit
    names = {p.name for p in (d / "candidates").iterdir()}
    assert disk_bytes(d) <= limit
    assert "k3.npz" in names  # used lately: kept
    assert not {"k0.npz", "k1.npz", "k2.npz", "k4.npz"} & names  # the oldest went
    assert {f"k{i}.npz" for i in range(10, 45)} <= names


def test_partial_entries_count_and_the_folder_is_scanned_rarely(tmp_path):
    limit = 200 * entry_bytes(20, tmp_path)
    d = tmp_path / "c"
    c = CandidateCache(d, limit=limit)
    for i in range(600):  # 3 times the limit, a fifth of it partial entries
        if i % 5:
            c.save(f"k{i}", raw(20, i))
        else:
            c.save_partial(f"k{i}", raw(20, i), np.zeros(20, dtype=np.int64))
        if i % 50 == 0:
            assert disk_bytes(d) <= limit  # never above the limit
    names = {p.name for p in (d / "candidates").iterdir()}
    assert disk_bytes(d) <= limit
    assert {"k599.npz", "k595.part.npz"} <= names
    assert "k5.part.npz" not in names  # partial entries go like any other
    assert len(names) >= 0.85 * 200  # evicted down to the limit, not far below
    assert not {n for n in names if n.startswith(".")}  # no temporary file left
    # scanned once per tenth of the limit written (20 entries), not on
    # every write: 1 + 400 / 20 evictions + 2 periodic rescans
    assert c.scans <= 30, c.scans
    assert {f.kind for f in c.files()} == {"candidates", "partial"}


def test_the_entries_used_last_are_never_evicted(tmp_path):
    big = CandidateCache(tmp_path, limit="unlimited")
    for i in range(10):
        big.save(f"old{i}", raw(200, i))
        age(big.path(f"old{i}"), 100 - i)
    c = CandidateCache(tmp_path, limit=0)  # a limit below any entry
    assert c.load("old2") is not None  # in use
    c.save("new", raw(200))  # being written
    names = {p.name for p in (tmp_path / "candidates").iterdir()}
    assert names == {"old2.npz", "new.npz"}
    assert c.load("new") is not None and c.load("old2") is not None


def test_a_damaged_or_foreign_file_is_neither_read_nor_counted_nor_removed(tmp_path):
    weights = tmp_path / "mobile_sam.pt"  # the user cache also holds the weights
    weights.write_bytes(b"w" * 5000)
    mine = tmp_path / "notes.npz"  # not a cache file name
    mine.write_bytes(b"x" * 5000)
    old = tmp_path / ("0123456789abcdef" * 2 + ".emb.npz")  # the old layout
    old.write_bytes(b"o" * 5000)
    age(old, 10_000)
    c = CandidateCache(tmp_path, limit=3000)
    kinds = {f.path.name: f.kind for f in c.files()}
    assert kinds == {old.name: "old layout"}
    c.save("k", raw(5))
    assert weights.exists() and mine.exists() and not old.exists()


def test_the_current_folder_is_still_served_after_the_cache_overflows(
    structured_model, synthetic, tmp_path, monkeypatch
):
    from napari_samboxes import engine
    from napari_samboxes.pipeline import Encoded, FromCache, drain, raw_results

    s = DEFAULTS.with_(points_per_side=3)
    root = tmp_path / "cache"
    # entries of other folders, worked on days ago
    old = CandidateCache(root, limit="unlimited")
    for i in range(60):
        old.save(f"{i:032x}-0", raw(2000, i))
        age(old.path(f"{i:032x}-0"), 86400 * 3 - i)
    limit = int(0.7 * disk_bytes(root))  # already past the limit
    assert limit > 2_000_000
    # the annotator opens the current folder: two images, computed
    images = [
        np.ascontiguousarray(np.roll(synthetic, 20 * k, axis=1)) for k in range(2)
    ]
    c = CandidateCache(root, limit=limit)
    first = [
        drain(raw_results(im, s, model=structured_model, cache=c)) for im in images
    ]
    assert disk_bytes(root) <= limit  # evicted to the limit
    left = {p.name for p in (root / "candidates").iterdir()}
    assert f"{59:032x}-0.npz" in left and f"{0:032x}-0.npz" not in left  # LRU
    # every image of the current folder is served from the cache, with its
    # embedding (no encoder run), in a new session too
    monkeypatch.setattr(
        engine, "encode_image", lambda *a: pytest.fail("encoded a second time")
    )
    for cache in (c, CandidateCache(root, limit=limit)):
        for im, want in zip(images, first, strict=True):
            seen = []
            got = drain(
                raw_results(im, s, model=structured_model, cache=cache), seen.append
            )
            assert any(isinstance(e, FromCache) for e in seen)
            assert any(isinstance(e, Encoded) for e in seen)
            np.testing.assert_array_equal(got.boxes, want.boxes)
            key = cache_key(im, structured_model.digest, s)
            assert cache.path(key).is_file() and cache.embedding_path(key).is_file()
