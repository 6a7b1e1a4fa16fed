"""Candidate boxes and the raw per-mask results they are filtered from.

:class:`RawMasks` holds every mask's box, area, predicted IoU and
stability, before any threshold, in the reference generator's order, with
the crop each mask came from. :meth:`RawMasks.candidates` applies the
reference's filters (``SamAutomaticMaskGenerator._process_batch``), its
per-crop box NMS (``_process_crop``) and its NMS across crops
(``_generate_masks``), so thresholds can change without running the model.

No napari or Qt; torch and torchvision are imported lazily.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from .settings import DEFAULTS, Settings

__all__ = ["EDGE_ATOL", "Candidates", "RawMasks", "near_crop_edge"]

#: ``is_box_near_crop_edge``'s tolerance, in pixels.
EDGE_ATOL = 20.0


@dataclass
class Candidates:
    """Candidate boxes, sorted by area, smallest first.

    Attributes
    ----------
    boxes : numpy.ndarray
        (N, 4) float, ``x_min, y_min, x_max, y_max`` in pixel coordinates of
        the input image (x = column, y = row; inclusive: a mask covering
        columns 3..7 has ``x_min = 3, x_max = 7``).
    areas : numpy.ndarray
        (N,) mask pixel counts.
    scores : numpy.ndarray
        (N,) predicted IoU.
    stability : numpy.ndarray
        (N,) stability score.
    points : numpy.ndarray
        (N, 2) the grid point (x, y) each candidate came from.
    """

    boxes: np.ndarray
    areas: np.ndarray
    scores: np.ndarray
    stability: np.ndarray
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))

    def __len__(self) -> int:
        return len(self.areas)

    @classmethod
    def empty(cls) -> Candidates:
        """Return an empty candidate set."""
        return cls(
            boxes=np.zeros((0, 4)),
            areas=np.zeros(0, dtype=np.int64),
            scores=np.zeros(0, dtype=np.float32),
            stability=np.zeros(0, dtype=np.float32),
            points=np.zeros((0, 2)),
        )

    @classmethod
    def from_unsorted(
        cls,
        boxes: np.ndarray,
        areas: np.ndarray,
        scores: np.ndarray,
        stability: np.ndarray,
        points: np.ndarray | None = None,
    ) -> Candidates:
        """Build a candidate set, sorting by area (stable)."""
        areas = np.asarray(areas)
        order = np.argsort(areas, kind="stable")
        if points is None:
            points = np.full((len(areas), 2), np.nan)
        return cls(
            boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[order],
            areas=areas[order],
            scores=np.asarray(scores)[order],
            stability=np.asarray(stability)[order],
            points=np.asarray(points, dtype=np.float64).reshape(-1, 2)[order],
        )


def near_crop_edge(
    boxes: np.ndarray, crop_box: np.ndarray, image_size: tuple[int, int]
) -> np.ndarray:
    """``is_box_near_crop_edge``: a side within 20 px of an inner crop edge.

    ``boxes`` (M, 4) in image coordinates, ``crop_box`` xyxy (exclusive
    end), ``image_size`` (height, width). A side near the crop's edge
    counts only if it is not also near the image's edge.
    """
    b = np.asarray(boxes, dtype=np.float32)
    crop = np.asarray(crop_box, dtype=np.float32)[None, :]
    h, w = image_size
    orig = np.array([[0, 0, w, h]], dtype=np.float32)
    near_crop = np.abs(b - crop) <= EDGE_ATOL
    near_image = np.abs(b - orig) <= EDGE_ATOL
    return np.any(near_crop & ~near_image, axis=1)


@dataclass
class RawMasks:
    """Per-mask results before any threshold, in the reference's order.

    Three masks per grid point (MobileSAM's multimask output), crop by crop
    and, within a crop, point by point, mask by mask.

    Attributes
    ----------
    boxes : numpy.ndarray
        (M, 4) int64 xyxy inclusive, image coordinates (an empty mask has
        its crop's origin as box, as in the reference).
    areas : numpy.ndarray
        (M,) int64 pixel counts.
    iou_preds : numpy.ndarray
        (M,) float32 predicted IoU.
    stability : numpy.ndarray
        (M,) float32 stability score (nan for an empty mask).
    points : numpy.ndarray
        (M, 2) float64 prompt (x, y), image coordinates.
    crop_boxes : numpy.ndarray
        (M, 4) int64 xyxy (exclusive end) of the crop each mask came from;
        all zeros when the run had no crop layers.
    near_edge : numpy.ndarray
        (M,) bool, box near an inner crop edge (dropped by the reference).
    """

    boxes: np.ndarray
    areas: np.ndarray
    iou_preds: np.ndarray
    stability: np.ndarray
    points: np.ndarray
    crop_boxes: np.ndarray = None  # type: ignore[assignment]
    near_edge: np.ndarray = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        n = len(self.areas)
        if self.crop_boxes is None:
            self.crop_boxes = np.zeros((n, 4), dtype=np.int64)
        if self.near_edge is None:
            self.near_edge = np.zeros(n, dtype=bool)

    def __len__(self) -> int:
        return len(self.areas)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of the array fields, in order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def empty(cls) -> RawMasks:
        """Return an empty set."""
        return cls(
            boxes=np.zeros((0, 4), dtype=np.int64),
            areas=np.zeros(0, dtype=np.int64),
            iou_preds=np.zeros(0, dtype=np.float32),
            stability=np.zeros(0, dtype=np.float32),
            points=np.zeros((0, 2)),
        )

    @classmethod
    def concat(cls, parts: list[RawMasks]) -> RawMasks:
        """Concatenate several sets, keeping their order."""
        if not parts:
            return cls.empty()
        return cls(
            **{
                k: np.concatenate([getattr(p, k) for p in parts])
                for k in cls.field_names()
            }
        )

    def take(self, index: np.ndarray) -> RawMasks:
        """The masks at ``index`` (an index array or a boolean mask)."""
        return RawMasks(**{k: getattr(self, k)[index] for k in self.field_names()})

    def candidates(
        self,
        pred_iou_thresh: float | Settings | None = None,
        stability_score_thresh: float | None = None,
        box_nms_thresh: float | None = None,
        crop_nms_thresh: float | None = None,
        *,
        nms: bool = True,
    ) -> Candidates:
        """Apply the reference's filters and NMS; sort by area.

        Same rules as ``SamAutomaticMaskGenerator``: keep predicted IoU
        ``>`` ``pred_iou_thresh`` (when it is > 0), stability ``>=``
        ``stability_score_thresh`` (when > 0), boxes not near an inner crop
        edge; then, per crop, box NMS ranked by predicted IoU at
        ``box_nms_thresh``; then, if there were several crops, NMS across
        crops at ``crop_nms_thresh`` preferring smaller crops.

        The first argument may be a :class:`~napari_samboxes.settings.Settings`
        (its four thresholds are used); a threshold left ``None`` takes the
        default of :data:`~napari_samboxes.settings.DEFAULTS`.

        ``nms=False`` applies the thresholds only: the candidates of a run
        still streaming (NMS over part of the masks could hide a box that
        the whole set keeps, when the box hiding it is itself hidden by a
        mask still to come; without NMS every mask the final set keeps is
        there as soon as its prompt ran).
        """
        if isinstance(pred_iou_thresh, Settings):
            s = pred_iou_thresh
        else:
            given = {
                "pred_iou_thresh": pred_iou_thresh,
                "stability_score_thresh": stability_score_thresh,
                "box_nms_thresh": box_nms_thresh,
                "crop_nms_thresh": crop_nms_thresh,
            }
            s = DEFAULTS.with_(**{k: v for k, v in given.items() if v is not None})
        sel = self._select(s) if nms else np.flatnonzero(self._passes(s))
        return Candidates.from_unsorted(
            self.boxes[sel],
            self.areas[sel],
            self.iou_preds[sel],
            self.stability[sel],
            self.points[sel],
        )

    def _passes(self, s: Settings) -> np.ndarray:
        """The masks that pass the thresholds and are not near a crop edge."""
        keep = ~self.near_edge
        if s.pred_iou_thresh > 0.0:
            keep &= self.iou_preds > np.float32(s.pred_iou_thresh)
        if s.stability_score_thresh > 0.0:
            keep &= self.stability >= np.float32(s.stability_score_thresh)
        return keep  # type: ignore[no-any-return]

    def _select(self, s: Settings) -> np.ndarray:
        """Indices kept by the reference's filters and NMS, in its order."""
        from .model import avoid_llvm_clash

        avoid_llvm_clash()
        import torch
        from torchvision.ops import batched_nms

        keep = self._passes(s)
        crops, first, inverse = np.unique(
            self.crop_boxes, axis=0, return_index=True, return_inverse=True
        )
        inverse = inverse.reshape(-1)
        kept = []
        for ci in np.argsort(first):  # crops in the order they were run
            idx = np.nonzero(keep & (inverse == ci))[0]
            if len(idx) == 0:
                continue
            k = batched_nms(
                torch.from_numpy(self.boxes[idx]).float(),
                torch.from_numpy(self.iou_preds[idx]),
                torch.zeros(len(idx), dtype=torch.int64),
                s.box_nms_thresh,
            )
            kept.append(idx[k.numpy()])
        if not kept:
            return np.zeros(0, dtype=np.int64)
        sel = np.concatenate(kept)
        if len(crops) > 1:
            cb = torch.from_numpy(self.crop_boxes[sel])
            area = (cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1])
            k = batched_nms(
                torch.from_numpy(self.boxes[sel]).float(),
                1 / area,
                torch.zeros(len(sel), dtype=torch.int64),
                s.crop_nms_thresh,
            )
            sel = sel[k.numpy()]
        return sel
