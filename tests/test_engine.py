"""The engine against mobile_sam's own SamAutomaticMaskGenerator.

Real model (vit_t through the product's loader), real checkpoints, small
images and small grids so the reference stays affordable.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_samboxes import Candidates, propose_boxes
from napari_samboxes.engine import RawMasks, iter_raw_batches
from napari_samboxes.testing import reference_candidates

PPS = 4  # 16 prompts: 48 masks


def assert_same(ref: Candidates, got: Candidates) -> None:
    """Same count, boxes within 1 px, areas within 1 %, same order."""
    assert len(got) == len(ref)
    if len(ref) == 0:
        return
    # both sorted by area; compare as sets of rows to ignore tie order
    r = np.column_stack([ref.areas, ref.boxes])
    g = np.column_stack([got.areas, got.boxes])
    r = r[np.lexsort(r.T[::-1])]
    g = g[np.lexsort(g.T[::-1])]
    assert np.abs(r[:, 1:] - g[:, 1:]).max() <= 1.0
    np.testing.assert_allclose(g[:, 0], r[:, 0], rtol=0.01)
    assert np.all(np.diff(got.areas) >= 0), "not sorted by area"


@pytest.fixture(scope="module")
def raw_photo(structured_model, photo) -> RawMasks:
    parts = [
        p
        for _, _, p in iter_raw_batches(
            photo, structured_model, points_per_side=PPS, order="grid"
        )
    ]
    return RawMasks.concat(parts)


def test_structured_checkpoint_gives_many_localised_nested_boxes(raw_photo, photo):
    c = raw_photo.candidates()
    h, w = photo.shape[:2]
    assert len(c) >= 20
    assert len({tuple(b) for b in c.boxes}) == len(c)  # distinct
    widths = c.boxes[:, 2] - c.boxes[:, 0] + 1
    assert np.median(widths) < 0.5 * w  # localised, not whole-image
    # nesting: some box strictly inside another
    b = c.boxes
    inside = (
        (b[:, None, 0] >= b[None, :, 0])
        & (b[:, None, 2] <= b[None, :, 2])
        & (b[:, None, 1] >= b[None, :, 1])
        & (b[:, None, 3] <= b[None, :, 3])
    )
    np.fill_diagonal(inside, False)
    assert inside.any()


def test_default_thresholds_match_reference(structured_model, photo):
    ref = reference_candidates(photo, structured_model, points_per_side=PPS)
    got = propose_boxes(photo, structured_model, points_per_side=PPS)
    assert len(ref) >= 20
    assert_same(ref, got)
    np.testing.assert_array_equal(got.boxes, ref.boxes)
    np.testing.assert_array_equal(got.areas, ref.areas)


def test_zero_thresholds_match_reference(structured_model, photo, raw_photo):
    kw = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)
    ref = reference_candidates(photo, structured_model, points_per_side=PPS, **kw)
    assert_same(ref, raw_photo.candidates(**kw))
    assert_same(ref, propose_boxes(photo, structured_model, points_per_side=PPS, **kw))


@pytest.mark.parametrize("nms", [0.7, 1.0])
def test_half_pass_thresholds_match_reference(structured_model, photo, raw_photo, nms):
    # thresholds at the medians: about half the masks pass each filter
    iou_t = float(np.median(raw_photo.iou_preds))
    stab_t = float(np.nanmedian(raw_photo.stability))
    kw = dict(pred_iou_thresh=iou_t, stability_score_thresh=stab_t, box_nms_thresh=nms)
    passes = (
        (raw_photo.iou_preds > iou_t).mean(),
        (raw_photo.stability >= stab_t).mean(),
    )
    assert 0.25 <= passes[0] <= 0.75 and 0.25 <= passes[1] <= 0.75
    ref = reference_candidates(photo, structured_model, points_per_side=PPS, **kw)
    assert len(ref) > 0
    assert_same(ref, raw_photo.candidates(**kw))


def test_synthetic_image_and_odd_batch(structured_model, synthetic):
    kw = dict(points_per_side=3, points_per_batch=4, box_nms_thresh=1.0)
    ref = reference_candidates(synthetic, structured_model, **kw)
    assert len(ref) > 5
    assert_same(ref, propose_boxes(synthetic, structured_model, **kw))


def test_portrait_image_matches_reference(structured_model, photo):
    """Taller than wide: the decoder upscales only the valid token columns."""
    portrait = np.ascontiguousarray(photo.transpose(1, 0, 2))  # 256 x 192
    ref = reference_candidates(portrait, structured_model, points_per_side=PPS)
    assert len(ref) > 0
    got = propose_boxes(portrait, structured_model, points_per_side=PPS)
    assert_same(ref, got)
    assert {tuple(b) for b in got.boxes} == {tuple(b) for b in ref.boxes}


def test_random_checkpoint_matches_reference(random_ckpt, photo):
    from napari_samboxes import load_model

    model = load_model(random_ckpt, device="cpu")
    kw = dict(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    ref = reference_candidates(photo, model, **kw)
    assert_same(ref, propose_boxes(photo, model, **kw))


def test_streams_per_batch_and_reports_progress(structured_model, photo):
    seen = []
    got = list(
        iter_raw_batches(
            photo, structured_model, points_per_side=PPS, points_per_batch=5
        )
    )
    assert [(b, n) for b, n, _ in got] == [(0, 4), (1, 4), (2, 4), (3, 4)]
    assert [len(p) for _, _, p in got] == [15, 15, 15, 3]
    propose_boxes(
        photo,
        structured_model,
        points_per_side=2,
        progress=lambda d, n: seen.append((d, n)),
    )
    assert seen == [(1, 1)]


def test_grayscale_and_uint16_inputs(structured_model, photo):
    gray16 = (photo.mean(-1) * 257).astype(np.uint16)
    c = propose_boxes(gray16, structured_model, points_per_side=2)
    assert len(c) > 0 and c.boxes.max() <= max(photo.shape)


@pytest.mark.parametrize("shape", [(4, 4, 3), (15, 12), (10, 3000, 3), (3000, 10)])
def test_tiny_and_extreme_aspect_images(structured_model, shape):
    img = (np.random.default_rng(0).random(shape) * 255).astype(np.uint8)
    c = propose_boxes(
        img,
        structured_model,
        points_per_side=1,
        pred_iou_thresh=0,
        stability_score_thresh=0,
    )
    h, w = shape[:2]
    assert len(c) > 0
    assert (c.boxes[:, [0, 2]] <= w - 1).all() and (c.boxes[:, [1, 3]] <= h - 1).all()
    assert (c.boxes >= 0).all()


def test_settings_object_and_overrides_agree(structured_model, photo, raw_photo):
    from napari_samboxes.settings import DEFAULTS

    t = float(np.median(raw_photo.iou_preds))
    s = DEFAULTS.with_(points_per_side=PPS, pred_iou_thresh=t)
    a = raw_photo.candidates(s)
    b = raw_photo.candidates(t, DEFAULTS.stability_score_thresh)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    c = propose_boxes(photo, structured_model, s)
    np.testing.assert_array_equal(a.boxes, c.boxes)
    assert 0 < len(a) < len(raw_photo.candidates())  # the threshold counts


@pytest.fixture(scope="module")
def small_photo(photo) -> np.ndarray:
    """A 128 x 96 photo: crop layers stay affordable (one encoder run per crop)."""
    from skimage import transform

    img = transform.resize(photo, (96, 128), anti_aliasing=True)
    return (img * 255).round().astype(np.uint8)


@pytest.mark.parametrize(("layers", "crop_nms"), [(1, 0.5), (2, 0.7)])
def test_crop_layers_match_reference(structured_model, small_photo, layers, crop_nms):
    # crop NMS at 0.5 removes about a third of the one-layer candidates here
    kw = dict(
        points_per_side=4,
        crop_n_layers=layers,
        crop_n_points_downscale_factor=2,
        crop_nms_thresh=crop_nms,
        pred_iou_thresh=0.0,
    )
    ref = reference_candidates(small_photo, structured_model, **kw)
    got = propose_boxes(small_photo, structured_model, **kw)
    flat = propose_boxes(small_photo, structured_model, **{**kw, "crop_n_layers": 0})
    # the crops contribute boxes that the whole image alone does not give
    assert {tuple(b) for b in ref.boxes} - {tuple(b) for b in flat.boxes}
    assert_same(ref, got)
    np.testing.assert_array_equal(got.boxes, ref.boxes)
    np.testing.assert_array_equal(got.areas, ref.areas)
    np.testing.assert_array_equal(got.points, ref.points)


@pytest.fixture()
def encoder_calls(structured_model, monkeypatch):
    """Counts the image encoder's runs (the real encoder still runs)."""
    enc = structured_model.sam.image_encoder
    calls = []
    real = enc.forward

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(enc, "forward", counting)
    return calls


def test_embedding_reuse_skips_the_encoder(structured_model, photo, encoder_calls):
    from napari_samboxes.engine import encode_image

    emb = encode_image(photo, structured_model)
    assert len(encoder_calls) == 1
    kw = dict(points_per_side=2)
    with_emb = [
        r
        for _, _, r in iter_raw_batches(
            photo, structured_model, embedding=emb, order="grid", **kw
        )
    ]
    assert len(encoder_calls) == 1  # not run again
    fresh = [
        r for _, _, r in iter_raw_batches(photo, structured_model, order="grid", **kw)
    ]
    assert len(encoder_calls) == 2
    a, b = RawMasks.concat(with_emb), RawMasks.concat(fresh)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.iou_preds, b.iou_preds)


def test_prompt_boxes_match_full_resolution_masks(
    structured_model, photo, encoder_calls
):
    import torch
    from mobile_sam import SamPredictor
    from mobile_sam.utils.amg import batched_mask_to_box

    from napari_samboxes.engine import encode_image, prompt_boxes

    sam = structured_model.sam
    emb = encode_image(photo, structured_model)
    # large boxes with a positive point inside: the structured checkpoint
    # answers points (box corners alone give empty masks)
    boxes = np.array([[10, 20, 120, 150], [100, 30, 250, 180], [0, 0, 255, 191]])
    points = np.array([[[60, 80]], [[170, 90]], [[128, 96]]], dtype=float)
    calls = len(encoder_calls)
    got, ious = prompt_boxes(structured_model, emb, boxes, points=points)
    assert len(encoder_calls) == calls  # no encoder run for prompts
    pred = SamPredictor(sam)
    pred.set_image(photo)
    tr = pred.transform
    with torch.inference_mode():
        masks, ref_iou, _ = pred.predict_torch(
            torch.as_tensor(tr.apply_coords(points, photo.shape[:2])),
            torch.ones(3, 1, dtype=torch.int),
            torch.as_tensor(tr.apply_boxes(boxes, photo.shape[:2])),
            multimask_output=False,
        )
    ref = batched_mask_to_box(masks[:, 0]).numpy()
    assert (masks.sum(dim=(1, 2, 3)) > 0).sum() >= 2  # non-empty masks
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_allclose(ious, ref_iou[:, 0].numpy(), rtol=1e-5)
    empty_b, empty_i = prompt_boxes(structured_model, emb, np.zeros((0, 4)))
    assert empty_b.shape == (0, 4) and empty_i.shape == (0,)
