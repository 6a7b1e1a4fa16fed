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
from .order import PromptQueue
from .settings import DEFAULTS, Settings

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "Candidates",
    "DecodedBatch",
    "Embedding",
    "PromptPlan",
    "RawMasks",
    "encode_image",
    "iter_prompt_batches",
    "iter_raw_batches",
    "prompt_plan",
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


@dataclass
class PromptPlan:
    """Every prompt of a run: the crops, as the reference runs them, and
    each crop's point grid. Global prompt index: crop after crop, grid
    order (row by row) within a crop."""

    crop_boxes: list[list[int]]
    grids: list[np.ndarray]  # (K, 2) in [0, 1]
    sides: list[int]

    @property
    def sizes(self) -> list[int]:
        """Prompts per crop."""
        return [len(g) for g in self.grids]

    def points(self, k: int) -> np.ndarray:
        """Crop ``k``'s prompts (x, y), in the crop's coordinates."""
        x0, y0, x1, y1 = self.crop_boxes[k]
        return self.grids[k] * np.array([[x1 - x0, y1 - y0]])  # type: ignore[no-any-return]

    def image_points(self) -> np.ndarray:
        """(N, 2) every prompt (x, y) in image coordinates."""
        if not self.grids:
            return np.zeros((0, 2))
        return np.concatenate(
            [
                self.points(k) + np.array([self.crop_boxes[k][:2]])
                for k in range(len(self.grids))
            ]
        )

    def starts(self) -> np.ndarray:
        """Global index of each crop's first prompt."""
        return np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)

    def queue(
        self, batch: int, coarse: bool = True, done: np.ndarray | None = None
    ) -> PromptQueue:
        """The prompts to run (less ``done``), coarse to fine or in grid
        order, ``batch`` at a time."""
        return PromptQueue(
            self.sizes,
            self.image_points(),
            self.sides if coarse else None,
            batch,
            crop_boxes=np.asarray(self.crop_boxes).reshape(-1, 4),
            done=done,
        )


def prompt_plan(image_size: tuple[int, int], settings: Settings) -> PromptPlan:
    """The crops and point grids the reference runs for an image of
    ``image_size`` (height, width); crops without points are left out."""
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
    keep = [(list(b), grids[k], sides[k]) for b, k in zip(boxes, layers, strict=True)]
    keep = [t for t in keep if len(t[1])]
    return PromptPlan([t[0] for t in keep], [t[1] for t in keep], [t[2] for t in keep])


@dataclass
class DecodedBatch:
    """One decoded batch: its place in the run, its prompts, its masks.

    ``prompts`` are global prompt indices (see :class:`PromptPlan`);
    ``raw`` holds three masks per prompt, prompt after prompt; ``served``
    is :attr:`~napari_samboxes.order.Batch.served`.
    """

    index: int
    total: int
    prompts: np.ndarray
    raw: RawMasks
    served: int = 0

    @property
    def rows(self) -> np.ndarray:
        """The global prompt index of each mask of ``raw``."""
        per = len(self.raw) // max(len(self.prompts), 1)
        return np.repeat(self.prompts, per)


def iter_prompt_batches(
    rgb8: np.ndarray,
    model: Any,
    settings: Settings = DEFAULTS,
    *,
    embedding: Embedding | None = None,
    queue: PromptQueue | None = None,
    plan: PromptPlan | None = None,
) -> Iterator[DecodedBatch]:
    """Decode a run's prompts batch by batch, in ``queue``'s order.

    ``queue`` defaults to every prompt of ``plan`` (default:
    :func:`prompt_plan`) coarse to fine; a queue made with ``done``
    prompts resumes a run. Each crop's encoder runs when its first batch
    comes (the whole image's not at all when ``embedding`` is given).
    A prompt's masks do not depend on the batch it came in.
    """
    import torch

    sam, device = _as_sam(model)
    height, width = rgb8.shape[:2]
    if plan is None:
        plan = prompt_plan((height, width), settings)
    batch = settings.batch_for(device.split(":")[0])
    if queue is None:
        queue = plan.queue(batch)
    starts = plan.starts()
    full = sum(-(-n // queue.batch) for n in plan.sizes)
    bi = full - queue.remaining_batches()  # batches done before (resumed)
    crops: dict[int, _Crop] = {}
    while True:
        b = queue.next_batch()
        if b is None:
            return
        k = b.crop
        crop = crops.get(k)
        if crop is None:
            x0, y0, x1, y1 = plan.crop_boxes[k]
            whole = [x0, y0, x1, y1] == [0, 0, width, height]
            if whole and embedding is not None:
                emb = embedding
            else:
                emb = encode_image(rgb8[y0:y1, x0:x1], sam)
            with torch.inference_mode():
                crop = crops[k] = _Crop(sam, emb, plan.crop_boxes[k], (height, width))
        pts = plan.points(k)[b.prompts - starts[k]]
        with torch.inference_mode():  # not around the yield
            raw = crop.process_batch(pts)
        if queue.left(k) == 0:  # done with this crop: its embedding goes
            del crops[k]
        total = bi + 1 + queue.remaining_batches()
        yield DecodedBatch(bi, total, b.prompts, raw, b.served)
        bi += 1


def iter_raw_batches(
    rgb8: np.ndarray,
    model: Any,
    settings: Settings = DEFAULTS,
    *,
    embedding: Embedding | None = None,
    order: str = "coarse",
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
    order : str
        ``"coarse"``: coarse to fine (:func:`~napari_samboxes.order.
        coarse_to_fine`), every batch spread over the image; ``"grid"``:
        the reference's order, row by row. The masks of a prompt are the
        same either way; concatenated in grid order, the batches give the
        reference's order (:func:`iter_prompt_batches` says which prompts
        each batch holds).

    Yields
    ------
    (batch_index, n_batches, RawMasks)
        One item per batch of prompts, crop after crop, as soon as it is
        computed.
    """
    if order not in ("coarse", "grid"):
        raise ValueError(f"order must be 'coarse' or 'grid', not {order!r}")
    s = settings.with_(**overrides) if overrides else settings
    _, device = _as_sam(model)
    plan = prompt_plan(rgb8.shape[:2], s)
    batch = s.batch_for(device.split(":")[0])
    queue = plan.queue(batch, coarse=order == "coarse")
    for b in iter_prompt_batches(
        rgb8, model, s, embedding=embedding, queue=queue, plan=plan
    ):
        yield b.index, b.total, b.raw


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
