"""SAM masks of boxes: computed from each box's prompt, stored with it.

No napari or Qt; torch and mobile_sam are imported lazily.

A box picked from a candidate keeps the candidate's grid point, a box from
a box prompt keeps that box, in its ``prompt`` column
(:mod:`napari_samboxes.formats.columns`). Its mask is recomputed from that
prompt and the image embedding (the stored one, else one encode) with one
decoder call for all boxes of an image that need one: the multimask output
of a point prompt whose bounding box is the box (the very mask the
candidate was measured from), or the single mask of a box prompt. A mask
whose bounding box is not the box (the box was edited, the image changed)
is not stored. Masks go into the ``mask`` column as ``x0 y0 w h counts``
(:mod:`napari_samboxes.formats.rle`): about 20 bytes plus 1 to 2 bytes per
column of the box for a blob-like mask (both edges of each column are one
run each).

- :func:`fill_masks` fills the masks of :class:`~napari_samboxes.boxes.Boxes`
  (the widget calls it after a pick, in a worker);
- :func:`fill_folder` does it for every box table of a folder
  (``napari-samboxes masks DIR``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .boxes import Boxes
from .formats.columns import MASK_COLUMN, PROMPT_COLUMN, Prompt
from .formats.errors import FormatError
from .formats.rle import cell_box, encode_cell
from .settings import DEFAULTS, Settings

if TYPE_CHECKING:  # pragma: no cover
    from .cache import CandidateCache
    from .engine import Embedding

__all__ = ["MaskReport", "compute_masks", "fill_folder", "fill_masks", "needs_mask"]


def needs_mask(boxes: Boxes) -> list[int]:
    """Rows with a prompt and no mask that fits their box (2D rows only)."""
    rows = []
    for i in range(len(boxes)):
        if not boxes.cell(PROMPT_COLUMN, i) or boxes.slices.shape[1]:
            continue
        box = tuple(int(v) for v in boxes.xyxy[i])
        if cell_box(boxes.cell(MASK_COLUMN, i)) != box:
            rows.append(i)
    return rows


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def _decode(sam: Any, emb: Embedding, prompts: list[Prompt], multimask: bool) -> Any:
    """One decoder call for prompts of one kind; low-res masks (K, M, h, w)."""
    from .engine import decode_prompts

    points = (
        np.array([pr.points for pr in prompts], float) if prompts[0].points else None
    )
    boxes = (
        np.array([pr.box for pr in prompts], float)
        if prompts[0].box is not None
        else None
    )
    low, _ = decode_prompts(sam, emb, points, boxes, multimask)
    return low


def compute_masks(
    model: Any, embedding: Embedding, prompts: Sequence[str], boxes: np.ndarray
) -> list[str]:
    """Mask cells for boxes from their prompts ("" where none fits).

    Parameters
    ----------
    model : SamModel or mobile_sam Sam
    embedding : Embedding
        The image's (:func:`~napari_samboxes.engine.encode_image`, or the
        cache's).
    prompts : sequence of str
        ``prompt`` cells (:class:`~napari_samboxes.formats.columns.Prompt`).
    boxes : numpy.ndarray
        (K, 4) inclusive xyxy boxes the masks must fit.

    Raises
    ------
    FormatError
        For a malformed prompt cell.
    """
    import torch

    sam = getattr(model, "sam", model)
    parsed = [Prompt.parse(p) for p in prompts]
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).astype(int)
    out = [""] * len(parsed)
    groups: dict[tuple[bool, int], list[int]] = {}
    for i, p in enumerate(parsed):
        if p is not None:
            groups.setdefault((p.box is not None, len(p.points)), []).append(i)
    with torch.inference_mode():
        for (has_box, _), rows in groups.items():
            ps = [parsed[i] for i in rows]
            low = _decode(sam, embedding, ps, multimask=not has_box)  # type: ignore[arg-type]
            for k, i in enumerate(rows):
                up = sam.postprocess_masks(
                    low[k : k + 1], embedding.input_size, embedding.original_size
                )[0]
                masks = (up > sam.mask_threshold).cpu().numpy()
                want = tuple(int(v) for v in b[i])
                fit = [m for m in masks if _bbox(m) == want]
                out[i] = encode_cell(fit[0]) if fit else ""
    return out


def fill_masks(
    boxes: Boxes, model: Any, embedding: Embedding, rows: Sequence[int] | None = None
) -> Boxes:
    """``boxes`` with masks for ``rows`` (default: :func:`needs_mask`).

    Rows whose prompt gives no mask that fits their box keep an empty
    ``mask`` cell.
    """
    rows = needs_mask(boxes) if rows is None else list(rows)
    if not rows:
        return boxes
    cells = compute_masks(
        model,
        embedding,
        [boxes.cell(PROMPT_COLUMN, i) for i in rows],
        boxes.xyxy[rows],
    )
    for i, c in zip(rows, cells, strict=True):
        boxes = boxes.with_cells(i, {MASK_COLUMN: c})
    return boxes


@dataclass
class MaskReport:
    """What :func:`fill_folder` did."""

    images: int = 0
    masks: int = 0
    unmatched: int = 0
    messages: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.masks} masks stored in {self.images} images, "
            f"{self.unmatched} prompts gave no mask that fits their box"
        )


def fill_folder(
    folder: str | Path,
    model: Any,
    *,
    cache: CandidateCache | None = None,
    settings: Settings = DEFAULTS,
    progress: Callable[[str], Any] | None = None,
) -> MaskReport:
    """Compute and store the missing masks of a folder's box tables.

    The image embedding is the cache's (an entry of ``settings``' grid),
    else one encode per image (then stored in the cache).
    """
    from .cache import cache_key
    from .dataset import Dataset
    from .engine import encode_image
    from .formats.boxtable import read_box_table
    from .image import to_rgb8
    from .imread import read_image

    ds = Dataset(folder)
    report = MaskReport()
    for image in ds.images:
        path = ds.find_annotation(image)
        boxes = Boxes.from_table(read_box_table(path)) if path else Boxes()
        rows = needs_mask(boxes)
        if not rows:
            continue
        try:
            rgb8 = to_rgb8(read_image(image))
        except (OSError, ValueError) as e:
            report.messages.append(f"{image}: cannot read the image ({e})")
            continue
        key = cache_key(rgb8, getattr(model, "digest", ""), settings)
        emb = cache.load_embedding(key, model.device) if cache else None
        if emb is None:
            emb = encode_image(rgb8, model)
            if cache is not None:
                cache.save_embedding(key, emb)
        try:
            new = fill_masks(boxes, model, emb, rows)
        except FormatError as e:
            report.messages.append(f"{path}: {e}")
            continue
        got = sum(bool(new.cell(MASK_COLUMN, i)) for i in rows)
        report.masks += got
        report.unmatched += len(rows) - got
        report.images += 1
        ds.save_boxes(image, new.to_table())
        if progress is not None:
            progress(f"{image.name}: {got} of {len(rows)} masks")
    return report
