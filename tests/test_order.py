"""The order prompts run in (coarse to fine, clicks first) and runs resumed
from partial cache entries: the same candidates as the reference, the same
bytes in the cache, no batch decoded twice. No viewer."""

from __future__ import annotations

import numpy as np
import pytest

from napari_samboxes import engine
from napari_samboxes.cache import CandidateCache, cache_key
from napari_samboxes.candidates import RawMasks
from napari_samboxes.order import PromptQueue, Steer, coarse_to_fine
from napari_samboxes.pipeline import BatchDone, Resumed, drain, raw_results
from napari_samboxes.settings import DEFAULTS
from napari_samboxes.testing import reference_candidates
from test_engine import assert_same


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 16, 32, 33, 64])
def test_coarse_to_fine_is_a_permutation_whose_prefixes_cover_the_grid(n):
    order = coarse_to_fine(n)
    assert sorted(order.tolist()) == list(range(n * n))
    if n < 8:
        return
    rows, cols = order // n, order % n
    # the first sixteenth of the prompts reaches all four quadrants
    k = n * n // 16
    quads = {(int(r) * 2 // n, int(c) * 2 // n) for r, c in zip(rows[:k], cols[:k], strict=True)}
    assert len(quads) == 4
    # and within 1/4 of the prompts, every 4 x 4 block of the image has one
    k = n * n // 4
    blocks = {(int(r) * 4 // n, int(c) * 4 // n) for r, c in zip(rows[:k], cols[:k], strict=True)}
    assert len(blocks) == 16


def test_the_row_by_row_order_reaches_the_bottom_last():
    order = coarse_to_fine(32)
    bottom = np.flatnonzero(order // 32 >= 24)[0]
    assert bottom < 64  # in the first of 16 batches, not the last 4


def grid_points(n):
    from napari_samboxes.model import import_mobile_sam

    return import_mobile_sam().utils.amg.build_point_grid(n) * 100


def test_queue_hands_out_every_prompt_once_in_full_batches():
    q = PromptQueue([64, 16], np.vstack([grid_points(8), grid_points(4)]), [8, 4], 10)
    assert q.remaining_batches() == 7 + 2
    seen = []
    sizes = []
    while (b := q.next_batch()) is not None:
        seen += b.prompts.tolist()
        sizes.append((b.crop, len(b.prompts)))
    assert sorted(seen) == list(range(80))
    assert sizes == [(0, 10)] * 6 + [(0, 4), (1, 10), (1, 6)]
    assert q.batches_taken == 9


def test_a_click_brings_the_nearest_prompts_first_and_nothing_twice():
    pts = grid_points(8)  # 64 prompts over 100 x 100
    q = PromptQueue([64], pts, [8], 8)
    first = q.next_batch()
    click = np.array([[95.0, 95.0]])  # the bottom-right corner
    assert q.prefer(click) == 1
    b = q.next_batch()
    assert b.served == 1
    d = np.linalg.norm(pts - click, axis=1)
    left = np.setdiff1d(np.arange(64), first.prompts)
    nearest = left[np.argsort(d[left], kind="stable")[:8]]
    assert sorted(b.prompts.tolist()) == sorted(nearest.tolist())
    rest = []
    while (c := q.next_batch()) is not None:
        rest += c.prompts.tolist()
        assert c.served == 1
    assert sorted(first.prompts.tolist() + b.prompts.tolist() + rest) == list(range(64))


def test_done_prompts_are_never_handed_out_and_clicks_wait_for_the_queue():
    pts = grid_points(4)
    q = PromptQueue([16], pts, [4], 4, done=np.arange(0, 16, 2))
    steer = Steer()
    assert steer.remaining is None
    assert steer.prefer(np.array([[0.0, 0.0]])) == 1  # before the queue exists
    steer.attach(q)
    assert steer.remaining == 8
    b = q.next_batch()
    assert b.served == 1 and all(i % 2 for i in b.prompts)
    assert 1 in b.prompts  # prompt 0 (nearest) was done: the next nearest
    assert q.remaining_batches() == 1


@pytest.fixture(scope="module")
def decoded(structured_model, photo):
    """Grid-order raw masks of the photo, batch by batch."""
    s = DEFAULTS.with_(points_per_side=8, points_per_batch=8)
    return s, list(engine.iter_raw_batches(photo, structured_model, s, order="grid"))


def test_a_prompts_masks_do_not_depend_on_its_batch(structured_model, photo, decoded):
    # a batch of one prompt once wrote into the image tokens every later
    # prompt reads (in place): all later masks changed
    s, batches = decoded
    emb = engine.encode_image(photo, structured_model)
    plan = engine.prompt_plan(photo.shape[:2], s)
    sam, _ = engine._as_sam(structured_model)
    import torch

    with torch.inference_mode():
        crop = engine._Crop(sam, emb, plan.crop_boxes[0], photo.shape[:2])
        pts = plan.points(0)
        one = crop.process_batch(pts[:1])
        odd = crop.process_batch(pts[[40, 3, 17]])
        again = crop.process_batch(pts[:8])
    want = batches[0][2]
    for name in RawMasks.field_names():
        np.testing.assert_array_equal(getattr(again, name), getattr(want, name))
        np.testing.assert_array_equal(getattr(one, name), getattr(want, name)[:3])
    full = RawMasks.concat([b for _, _, b in batches])
    rows = np.r_[40 * 3 : 41 * 3, 3 * 3 : 4 * 3, 17 * 3 : 18 * 3]
    np.testing.assert_array_equal(odd.iou_preds, full.iou_preds[rows])
    np.testing.assert_array_equal(odd.boxes, full.boxes[rows])


@pytest.mark.parametrize(("pps", "layers"), [(8, 0), (7, 0), (6, 1)])
def test_coarse_to_fine_gives_the_grid_orders_masks(structured_model, photo, pps, layers):
    s = DEFAULTS.with_(points_per_side=pps, crop_n_layers=layers, points_per_batch=5)
    grid = RawMasks.concat(
        [
            r
            for _, _, r in engine.iter_raw_batches(
                photo, structured_model, s, order="grid"
            )
        ]
    )
    got = drain(raw_results(photo, s, model=structured_model))
    for name in RawMasks.field_names():
        np.testing.assert_array_equal(getattr(got, name), getattr(grid, name))
    assert_same(reference_candidates(photo, structured_model, s), got.candidates(s))


def test_a_run_stopped_half_way_resumes_without_decoding_a_batch_twice(
    structured_model, photo, tmp_path, monkeypatch, decoder_batches
):
    s = DEFAULTS.with_(points_per_side=8, crop_n_layers=1, points_per_batch=8)
    calls = decoder_batches
    cache = CandidateCache(tmp_path / "cache")
    events = raw_results(photo, s, model=structured_model, cache=cache)
    done = 0
    for ev in events:  # leave the image after three batches
        done += isinstance(ev, BatchDone)
        if done == 3:
            events.close()
            break
    key = cache_key(photo, structured_model.digest, s)
    assert cache.partial_path(key).is_file() and cache.embedding_path(key).is_file()
    assert not cache.path(key).exists()

    encodes = []
    real_encode = engine.encode_image
    monkeypatch.setattr(
        engine, "encode_image", lambda *a: encodes.append(1) or real_encode(*a)
    )
    seen = []
    raw = drain(raw_results(photo, s, model=structured_model, cache=cache), seen.append)
    resumed = [e for e in seen if isinstance(e, Resumed)]
    assert len(resumed) == 1 and resumed[0].batches == 3
    assert len(resumed[0].raw) == 3 * 8 * 3  # 3 batches of 8 prompts, 3 masks each
    plan = engine.prompt_plan(photo.shape[:2], s)
    full_run = sum(-(-n // 8) for n in plan.sizes)
    assert len(calls) == full_run  # no batch twice
    assert len(encodes) == len(plan.sizes) - 1  # whole image's embedding kept
    assert not cache.partial_path(key).exists()
    assert_same(reference_candidates(photo, structured_model, s), raw.candidates(s))

    # the complete entry is the same file as a run in one go
    one_go = CandidateCache(tmp_path / "one-go")
    drain(raw_results(photo, s, model=structured_model, cache=one_go))
    assert cache.path(key).read_bytes() == one_go.path(key).read_bytes()


def test_a_damaged_partial_entry_is_ignored(structured_model, photo, tmp_path):
    s = DEFAULTS.with_(points_per_side=4, points_per_batch=4)
    cache = CandidateCache(tmp_path)
    key = cache_key(photo, structured_model.digest, s)
    raw = RawMasks.empty()
    cache.save_partial(key, raw, np.zeros(0, dtype=np.int64))
    assert cache.load_partial(key, 16) is not None
    cache.partial_path(key).write_bytes(b"PK\x03\x04 broken")
    assert cache.load_partial(key, 16) is None
    one = drain(raw_results(photo, s, model=structured_model))
    cache.save_partial(key, one.take(np.arange(3)), np.array([99, 99, 99]))
    assert cache.load_partial(key, 16) is None  # a prompt the run does not have
    got = drain(raw_results(photo, s, model=structured_model, cache=cache))
    for name in RawMasks.field_names():
        np.testing.assert_array_equal(getattr(got, name), getattr(one, name))


def test_a_run_stopped_in_the_encoder_keeps_the_embedding(
    structured_model, photo, tmp_path, monkeypatch
):
    s = DEFAULTS.with_(points_per_side=4, points_per_batch=4)
    cache = CandidateCache(tmp_path)
    events = raw_results(photo, s, model=structured_model, cache=cache)
    for ev in events:
        if type(ev).__name__ == "Encoded":
            events.close()  # the user moved on as the encoder finished
            break
    key = cache_key(photo, structured_model.digest, s)
    assert cache.embedding_path(key).is_file()
    assert not cache.partial_path(key).exists()  # no batch was done
    monkeypatch.setattr(
        engine, "encode_image", lambda *a: pytest.fail("encoded a second time")
    )
    raw = drain(raw_results(photo, s, model=structured_model, cache=cache))
    assert len(raw) == 16 * 3
