"""The tightness audit: every box against SAM's candidates and its mask.

No napari or Qt here (the widget's Audit panel and ``napari-samboxes
audit DIR`` are adapters over these functions).

For each box :func:`audit_boxes` finds its **nearest candidate** (the
candidate with the highest IoU; among equal IoUs the one whose edges are
closest) and measures

* ``iou``: the IoU of the box with that candidate (inclusive pixel boxes,
  as :func:`~napari_samboxes.tighten.iou_matrix`);
* ``edge_px``: the largest distance, in pixels, between one edge of the
  box and the same edge of the candidate (``max |box - candidate|`` over
  ``x_min, y_min, x_max, y_max``);
* for a box with a ``mask`` cell whose mask fits it: whether the mask has
  detached fragments (8-connected parts other than the largest) that make
  the box larger than the box of its **largest connected part**, and by
  how much (``fragment_px``: largest edge distance between the two boxes;
  ``fragment_gain``: the box's area over the part's box area, minus 1).

A box is **flagged** when a better box can be suggested:

* ``"off-candidate"``: its nearest candidate has IoU >= ``min_iou``
  (default :data:`~napari_samboxes.tighten.TIGHTEN_MIN_IOU`, the IoU at
  which ``tighten`` snaps) and an edge more than ``tolerance_px`` away;
  the suggestion is that candidate;
* ``"fragments"``: its mask's fragments enlarge it by more than
  ``tolerance_px``; the suggestion is the largest part's box.

When both apply, the larger problem gives the suggestion. Boxes with no
candidate at IoU >= ``min_iou`` are reported (``kind="no candidate"``)
but not flagged: there is nothing to suggest. :func:`flagged` sorts the
flagged boxes largest problem first (``problem_px``, then lower IoU).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .boxes import Boxes
from .candidates import Candidates
from .formats.columns import MASK_COLUMN
from .formats.errors import FormatError
from .formats.rle import cell_box, decode_cell
from .select import largest_part
from .settings import DEFAULTS, Settings
from .tighten import TIGHTEN_MIN_IOU, iou_matrix

__all__ = [
    "AUDIT_COLUMNS",
    "AuditReport",
    "BoxAudit",
    "Fragments",
    "audit_boxes",
    "audit_folder",
    "flagged",
    "largest_part_box",
    "mask_fragments",
]

#: Columns of the audit report CSV, in order.
AUDIT_COLUMNS = (
    "image",
    "row",
    "label",
    "kind",
    "problem_px",
    "iou",
    "edge_px",
    "fragment_px",
    "fragment_gain",
    "x_min",
    "y_min",
    "x_max",
    "y_max",
    "suggested_x_min",
    "suggested_y_min",
    "suggested_x_max",
    "suggested_y_max",
)

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Fragments:
    """What a box's mask says about detached fragments.

    ``parts`` is the number of 8-connected parts of the mask;
    ``part_box`` the inclusive xyxy box of the largest part (by pixels;
    the first in row-major order among equals); ``mask_box`` the box of
    the whole mask; ``px`` the largest edge distance between the two and
    ``gain`` ``area(mask_box) / area(part_box) - 1`` (0 for one part).
    """

    parts: int
    part_box: Box
    mask_box: Box
    px: float
    gain: float

    @property
    def enlarges(self) -> bool:
        """Whether the fragments make the mask's box larger than the part's."""
        return self.px > 0


@dataclass(frozen=True)
class BoxAudit:
    """The audit of one box.

    Attributes
    ----------
    row : int
        The box's index in its :class:`~napari_samboxes.boxes.Boxes`.
    label : str
    box : tuple of float
        The box (inclusive xyxy pixels).
    candidate : tuple of float or None
        The nearest candidate's box (None when there are no candidates).
    iou : float
        IoU of the box with ``candidate`` (0 without one).
    edge_px : float
        Largest edge distance to ``candidate`` in pixels (inf without one).
    fragments : Fragments or None
        For a box whose mask cell fits it; None otherwise.
    kind : str
        ``"off-candidate"``, ``"fragments"``, ``"no candidate"`` or ``"ok"``.
    suggestion : tuple of float or None
        The box to replace it with (None unless flagged).
    problem_px : float
        How far the suggestion moves an edge (0 unless flagged): the sort key.
    """

    row: int
    label: str
    box: Box
    candidate: Box | None
    iou: float
    edge_px: float
    fragments: Fragments | None = None
    kind: str = "ok"
    suggestion: Box | None = None
    problem_px: float = 0.0

    @property
    def flagged(self) -> bool:
        """Whether a better box is suggested."""
        return self.suggestion is not None


def largest_part_box(mask: np.ndarray) -> tuple[Box, int] | None:
    """The inclusive xyxy box of a mask's largest 8-connected part, and
    the number of parts (None for an empty mask)."""
    got = largest_part(mask)
    if got is None:
        return None
    part, n = got
    rows = np.flatnonzero(part.any(axis=1))
    cols = np.flatnonzero(part.any(axis=0))
    box = (float(cols[0]), float(rows[0]), float(cols[-1]), float(rows[-1]))
    return box, n


def _area(b: Sequence[float]) -> float:
    return float((b[2] - b[0] + 1) * (b[3] - b[1] + 1))


def mask_fragments(cell: str) -> Fragments | None:
    """:class:`Fragments` of a box table ``mask`` cell (None for "" or a
    malformed cell)."""
    if not cell:
        return None
    try:
        x0, y0, crop = decode_cell(cell)
    except FormatError:
        return None
    got = largest_part_box(crop)
    if got is None:
        return None
    (a, b, c, d), n = got
    part = (a + x0, b + y0, c + x0, d + y0)
    whole = cell_box(cell)
    assert whole is not None
    mbox = tuple(float(v) for v in whole)
    px = float(np.max(np.abs(np.subtract(mbox, part))))
    gain = _area(mbox) / _area(part) - 1.0
    return Fragments(n, part, mbox, px, gain)  # type: ignore[arg-type]


def _box(v: Any) -> Box:
    a = np.asarray(v, dtype=np.float64).reshape(4)
    return (float(a[0]), float(a[1]), float(a[2]), float(a[3]))


def audit_boxes(
    boxes: Boxes,
    candidates: Candidates,
    *,
    min_iou: float = TIGHTEN_MIN_IOU,
    tolerance_px: float = 0.0,
    slice_index: tuple[int, ...] | None = None,
) -> list[BoxAudit]:
    """Audit every box of one image against its candidates and masks.

    Parameters
    ----------
    boxes : Boxes
        The image's boxes (``mask`` cells are used where they fit the box).
    candidates : Candidates
        The image's candidates, in the same (level-0) pixels.
    min_iou : float
        The least IoU at which the nearest candidate is suggested.
    tolerance_px : float
        Edge distances up to this are not flagged (0: any difference is).
    slice_index : tuple of int, optional
        For nD images: only boxes on this slice (the candidates' slice)
        are compared with candidates; the others get no candidate.

    Returns
    -------
    list of BoxAudit
        One per box, in the boxes' order.
    """
    n = len(boxes)
    xyxy = boxes.xyxy
    comparable = np.ones(n, dtype=bool)
    if slice_index is not None and n and boxes.slices.shape[1]:
        comparable = np.all(boxes.slices == np.asarray(slice_index, float), axis=1)
    best = np.full(n, -1)
    ious = np.zeros(n)
    edges = np.full(n, np.inf)
    if n and len(candidates):
        iou = iou_matrix(xyxy, candidates.boxes)
        dist = np.abs(xyxy[:, None, :] - candidates.boxes[None]).max(axis=2)
        # highest IoU, then the closest edges (lexsort: last key first)
        for k in np.flatnonzero(comparable):
            j = int(np.lexsort((dist[k], -iou[k]))[0])
            best[k], ious[k], edges[k] = j, iou[k, j], dist[k, j]
    out = []
    for i in range(n):
        box = _box(xyxy[i])
        cand = _box(candidates.boxes[best[i]]) if best[i] >= 0 else None
        frag = None
        cell = boxes.cell(MASK_COLUMN, i)
        if cell and cell_box(cell) == tuple(int(v) for v in box):
            frag = mask_fragments(cell)
        options: list[tuple[float, str, Box]] = []
        if cand is not None and ious[i] >= min_iou and edges[i] > tolerance_px:
            options.append((float(edges[i]), "off-candidate", cand))
        if frag is not None and frag.px > tolerance_px:
            options.append((frag.px, "fragments", frag.part_box))
        if options:
            px, kind, sugg = max(options, key=lambda o: o[0])
        else:
            px, sugg = 0.0, None
            kind = "ok" if cand is not None and ious[i] >= min_iou else "no candidate"
        out.append(
            BoxAudit(
                i,
                boxes.labels[i],
                box,
                cand,
                float(ious[i]),
                float(edges[i]),
                frag,
                kind,
                sugg,
                px,
            )
        )
    return out


def flagged(audits: Sequence[BoxAudit]) -> list[BoxAudit]:
    """The flagged audits, largest problem first (then lower IoU, then row)."""
    return sorted(
        (a for a in audits if a.flagged),
        key=lambda a: (-a.problem_px, a.iou, a.row),
    )


@dataclass
class AuditReport:
    """What :func:`audit_folder` found: audits per image name (its path in
    the folder, ``/``-separated)."""

    images: dict[str, list[BoxAudit]] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)

    def rows(self) -> list[tuple[str, BoxAudit]]:
        """(image, audit) of every box, flagged ones first, largest problem
        first; then the others in image and row order."""
        every = [(name, a) for name, audits in self.images.items() for a in audits]
        return sorted(
            every,
            key=lambda t: (
                not t[1].flagged,
                -t[1].problem_px,
                t[1].iou,
                t[0],
                t[1].row,
            ),
        )

    @property
    def boxes(self) -> int:
        """Number of boxes audited."""
        return sum(len(a) for a in self.images.values())

    def count(self, kind: str) -> int:
        """Number of boxes of one ``kind``."""
        return sum(a.kind == kind for audits in self.images.values() for a in audits)

    def csv_text(self) -> str:
        """The report as CSV text (:data:`AUDIT_COLUMNS`)."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(AUDIT_COLUMNS)
        for name, a in self.rows():
            sugg = a.suggestion or ("",) * 4
            frag_px = a.fragments.px if a.fragments else ""
            frag_gain = f"{a.fragments.gain:.4f}" if a.fragments else ""
            w.writerow(
                [
                    name,
                    a.row,
                    a.label,
                    a.kind,
                    f"{a.problem_px:g}",
                    f"{a.iou:.4f}",
                    "" if not np.isfinite(a.edge_px) else f"{a.edge_px:g}",
                    frag_px if frag_px == "" else f"{frag_px:g}",
                    frag_gain,
                    *(f"{v:g}" for v in a.box),
                    *(v if v == "" else f"{v:g}" for v in sugg),
                ]
            )
        return buf.getvalue()

    def write_csv(self, path: str | Path) -> Path:
        """Write :meth:`csv_text` atomically; returns the path."""
        from .atomic import atomic_write_text

        return atomic_write_text(path, self.csv_text())

    def summary(self) -> str:
        """A few lines for the terminal: counts per kind and the worst boxes."""
        n = self.boxes
        off, frag = self.count("off-candidate"), self.count("fragments")
        none = self.count("no candidate")
        lines = [
            f"{n} box(es) in {len(self.images)} image(s): {off + frag} flagged "
            f"({off} off their candidate, {frag} enlarged by mask fragments), "
            f"{none} with no candidate at IoU >= the threshold"
        ]
        worst = [(name, a) for name, a in self.rows() if a.flagged][:5]
        for name, a in worst:
            lines.append(
                f"  {name} box {a.row} '{a.label}': {a.kind}, {a.problem_px:g} px "
                f"(IoU {a.iou:.2f})"
            )
        return "\n".join(lines)


def audit_folder(
    folder: str | Path,
    checkpoint: str | Path | None = None,
    device: str = "auto",
    settings: Settings = DEFAULTS,
    cache: Any = None,
    *,
    min_iou: float = TIGHTEN_MIN_IOU,
    tolerance_px: float = 0.0,
    model: Any = None,
    progress: Callable[[str, list[BoxAudit]], Any] | None = None,
) -> AuditReport:
    """Audit the boxes of every annotated image of a folder (read only).

    Each image's candidates come from the cache, else a run at
    ``settings`` (then cached). Box tables are not changed.

    Parameters
    ----------
    folder : str or Path
        A dataset folder (``DIR/annotations/<stem>.csv``).
    checkpoint, device : as for :func:`~napari_samboxes.load_model`
    settings : Settings
    cache : CandidateCache, optional
    min_iou, tolerance_px : as for :func:`audit_boxes`
    model : loaded model, optional
        Used instead of loading ``checkpoint``.
    progress : callable, optional
        Called with each image's name (its path in the folder) and audits.

    Returns
    -------
    AuditReport
        Images that cannot be read are named in ``messages``.
    """
    from .dataset import Dataset
    from .formats.boxtable import BoxTableError
    from .image import ImageError, to_rgb8
    from .imread import ImageReadError, read_image
    from .pipeline import drain, raw_results

    ds = Dataset(folder)
    report = AuditReport()
    for name, path in zip(ds.names, ds.images, strict=True):
        if ds.find_annotation(name) is None:
            continue
        try:
            boxes = Boxes.from_table(ds.load_boxes(name))
        except (BoxTableError, FormatError, OSError) as e:
            report.messages.append(f"{name}: cannot read its boxes ({e})")
            continue
        if not len(boxes):
            report.images[name] = []
            continue
        try:
            rgb = to_rgb8(read_image(path))
        except (ImageReadError, ImageError, OSError, ValueError) as e:
            report.messages.append(f"{name}: cannot read the image ({e})")
            continue
        raw = drain(
            raw_results(rgb, settings, checkpoint, device, cache=cache, model=model)
        )
        audits = audit_boxes(
            boxes,
            raw.candidates(settings),
            min_iou=min_iou,
            tolerance_px=tolerance_px,
            slice_index=(),
        )
        report.images[name] = audits
        if progress is not None:
            progress(name, audits)
    return report
