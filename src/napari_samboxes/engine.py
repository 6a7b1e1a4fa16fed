"""Candidate boxes from MobileSAM's "segment everything": orchestration.

The reference is ``mobile_sam.SamAutomaticMaskGenerator`` (no
small-region postprocessing); this module mirrors its structure
(``generate -> _generate_masks -> _process_crop -> _process_batch``) and
its helpers from ``mobile_sam.utils.amg`` (crop boxes, point grids,
batches), and returns the same candidates with less work:

* the decoder is re-associated (:mod:`~napari_samboxes.decoder`);
* masks are never upsampled to full resolution as a whole: box, area and
  stability come from windowed, batched upsampling
  (:mod:`~napari_samboxes.upsample`); no RLE;
* the raw per-mask results stream per batch (:func:`iter_raw_batches`) and
  thresholds and NMS are applied afterwards
  (:meth:`~napari_samboxes.candidates.RawMasks.candidates`).

The image embedding can be computed once (:func:`encode_image`), cached and
reused for the whole-image crop and for box prompts (:func:`prompt_boxes`).

No napari or Qt imports; torch and mobile_sam are imported lazily.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .candidates import Candidates, RawMasks, near_crop_edge
from .settings import DEFAULTS, Settings

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "Candidates",
    "Embedding",
    "RawMasks",
    "encode_image",
    "iter_raw_batches",
    "prompt_boxes",
]


@dataclass
class Embedding:
    """An image's embedding, as ``SamPredictor.set_image`` leaves it.

    Attributes
    ----------
    features : torch.Tensor
        1 x 256 x 64 x 64 float32, on the model's device.
    input_size : (int, int)
        The image's size after SAM's resize (longest side 1024).
    original_size : (int, int)
        The image's size (height, width).
    """

    features: torch.Tensor
    input_size: tuple[int, int]
    original_size: tuple[int, int]


def _as_sam(model: Any) -> tuple[Any, str]:
    sam = getattr(model, "sam", model)
    return sam, str(next(sam.parameters()).device)


def _amg() -> Any:
    from .model import import_mobile_sam

    return import_mobile_sam().utils.amg


def encode_image(rgb8: np.ndarray, model: Any) -> Embedding:
    """Run the image encoder once (``SamPredictor.set_image``).

    ``rgb8``: H x W x 3 uint8 (see :func:`~napari_samboxes.image.to_rgb8`).
    """
    import torch

    from .model import import_mobile_sam

    sam, _ = _as_sam(model)
    predictor = import_mobile_sam().SamPredictor(sam)
    with torch.inference_mode():
        predictor.set_image(rgb8)
    return Embedding(
        features=predictor.features,
        input_size=tuple(predictor.input_size),
        original_size=tuple(predictor.original_size),
    )


def _transform(sam: Any) -> Any:
    from .model import import_mobile_sam

    ms = import_mobile_sam()
    return ms.utils.transforms.ResizeLongestSide(sam.image_encoder.img_size)


class _Crop:
    """The decoder and windowed statistics of one crop (``_process_crop``)."""

    def __init__(
        self,
        sam: Any,
        emb: Embedding,
        crop_box: list[int],
        image_size: tuple[int, int],
    ) -> None:
        from .decoder import build_decoder
        from .upsample import Upsampler

        self.sam = sam
        self.emb = emb
        self.crop_box = np.asarray(crop_box, dtype=np.int64)
        self.image_size = image_size
        self.device = emb.features.device
        self.transform = _transform(sam)
        self.decoder = build_decoder(
            sam, emb.features, emb.input_size, emb.original_size
        )
        self.upsampler = Upsampler(
            emb.input_size,
            emb.original_size,
            self.device,
            low=4 * emb.features.shape[-2],
            grid=sam.image_encoder.img_size,
        )

    def process_batch(self, points: np.ndarray) -> RawMasks:
        """``_process_batch`` without thresholds: every mask's statistics."""
        import torch

        coords = self.transform.apply_coords(points, self.emb.original_size)
        in_pts = torch.as_tensor(coords, device=self.device)[:, None, :]
        in_lab = torch.ones(len(points), 1, dtype=torch.int, device=self.device)
        sparse, _ = self.sam.prompt_encoder(
            points=(in_pts, in_lab), boxes=None, masks=None
        )
        low, iou = self.decoder.run(sparse)
        stats = self.upsampler.stats(low)
        x0, y0 = self.crop_box[:2]
        boxes = stats.boxes + np.array([x0, y0, x0, y0])
        m = len(boxes)
        return RawMasks(
            boxes=boxes,
            areas=stats.areas,
            iou_preds=iou.float().cpu().numpy(),
            stability=stats.stability,
            points=np.repeat(points, m // max(len(points), 1), axis=0)
            + np.array([x0, y0]),
            crop_boxes=np.tile(self.crop_box, (m, 1)),
            near_edge=near_crop_edge(boxes, self.crop_box, self.image_size),
        )


def _crop_plan(
    image_size: tuple[int, int], settings: Settings
) -> list[tuple[list[int], np.ndarray]]:
    """``(crop_box, point grid in [0, 1])`` per crop, as the reference runs them."""
    amg = _amg()
    s = settings
    boxes, layers = amg.generate_crop_boxes(
        image_size, s.crop_n_layers, s.crop_overlap_ratio
    )
    sides = [
        int(s.points_per_side / s.crop_n_points_downscale_factor**i)
        for i in range(s.crop_n_layers + 1)
    ]
    grids = [amg.build_point_grid(n) if n > 0 else np.zeros((0, 2)) for n in sides]
    return [(b, grids[k]) for b, k in zip(boxes, layers, strict=True)]


def iter_raw_batches(
    rgb8: np.ndarray,
    model: Any,
    settings: Settings = DEFAULTS,
    *,
    embedding: Embedding | None = None,
    **overrides: Any,
) -> Iterator[tuple[int, int, RawMasks]]:
    """Run the model batch by batch; yield raw per-mask results.

    Parameters
    ----------
    rgb8 : numpy.ndarray
        H x W x 3 uint8 RGB (use :func:`napari_samboxes.image.to_rgb8`).
    model : SamModel or mobile_sam Sam
        The loaded model.
    settings : Settings
        Grid, batch size (:meth:`Settings.batch_for` the model's device) and
        crop layers; thresholds are applied later. ``overrides`` change
        single fields (``points_per_side=8``).
    embedding : Embedding, optional
        The whole image's embedding (:func:`encode_image`); given, the
        encoder does not run for the whole-image crop.

    Yields
    ------
    (batch_index, n_batches, RawMasks)
        One item per batch of prompts, crop after crop, as soon as it is
        computed.
    """
    import torch

    s = settings.with_(**overrides) if overrides else settings
    sam, device = _as_sam(model)
    height, width = rgb8.shape[:2]
    plan = [(b, g) for b, g in _crop_plan((height, width), s) if len(g)]
    batch = s.batch_for(device.split(":")[0])
    n_batches = sum(-(-len(g) // batch) for _, g in plan)
    bi = 0
    for crop_box, grid in plan:
        x0, y0, x1, y1 = crop_box
        whole = [x0, y0, x1, y1] == [0, 0, width, height]
        if whole and embedding is not None:
            emb = embedding
        else:
            emb = encode_image(rgb8[y0:y1, x0:x1], sam)
        with torch.inference_mode():
            crop = _Crop(sam, emb, crop_box, (height, width))
        points = grid * np.array([[x1 - x0, y1 - y0]])
        for start in range(0, len(points), batch):
            with torch.inference_mode():  # not around the yield
                raw = crop.process_batch(points[start : start + batch])
            yield bi, n_batches, raw
            bi += 1


def decode_prompts(
    sam: Any,
    embedding: Embedding,
    points: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    multimask: bool = False,
) -> tuple[Any, Any]:
    """One decoder call for K prompts (positive points and/or boxes, image
    coordinates): the low-resolution mask logits (K, M, h, w) and the
    predicted IoUs (K, M), as torch tensors (M = 3 with ``multimask``)."""
    import torch

    tr = _transform(sam)
    dev = embedding.features.device
    size = embedding.original_size
    pts = None
    if points is not None:
        p = np.asarray(points, dtype=np.float64)
        coords = torch.as_tensor(tr.apply_coords(p, size), dtype=torch.float)
        labels = torch.ones(p.shape[:2], dtype=torch.int, device=dev)
        pts = (coords.to(dev), labels)
    box_t = None
    if boxes is not None:
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        box_t = torch.as_tensor(tr.apply_boxes(b, size), dtype=torch.float, device=dev)
    sparse, dense = sam.prompt_encoder(points=pts, boxes=box_t, masks=None)
    return sam.mask_decoder(  # type: ignore[no-any-return]
        image_embeddings=embedding.features,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
    )


def prompt_boxes(
    model: Any,
    embedding: Embedding,
    boxes_xyxy: np.ndarray,
    points: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """SAM prompted with boxes: the box of its single mask, and its IoU.

    Parameters
    ----------
    model : SamModel or mobile_sam Sam
        The loaded model; the encoder does not run.
    embedding : Embedding
        From :func:`encode_image` (or the cache).
    boxes_xyxy : numpy.ndarray
        (K, 4) prompt boxes, image coordinates.
    points : numpy.ndarray, optional
        (K, P, 2) positive points (x, y) added to each box prompt, e.g. the
        two corner clicks a box was drawn with.

    Returns
    -------
    boxes : numpy.ndarray
        (K, 4) int64 xyxy inclusive box of each mask at full resolution
        ([0, 0, 0, 0] for an empty mask).
    ious : numpy.ndarray
        (K,) float32 predicted IoU.
    """
    import torch

    from .upsample import Upsampler

    sam, _ = _as_sam(model)
    dev = embedding.features.device
    size = embedding.original_size
    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    if len(b) == 0:
        return np.zeros((0, 4), dtype=np.int64), np.zeros(0, dtype=np.float32)
    with torch.inference_mode():
        p = None if points is None else np.asarray(points, np.float64)
        low, iou = decode_prompts(
            sam, embedding, p.reshape(len(b), -1, 2) if p is not None else None, b
        )
        up = Upsampler(
            embedding.input_size,
            size,
            dev,
            low=low.shape[-1],
            grid=sam.image_encoder.img_size,
        )
        stats = up.stats(low[:, 0])
        return stats.boxes, iou[:, 0].float().cpu().numpy()
