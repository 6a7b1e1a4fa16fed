"""The panel's Audit mode: the shown image's flagged boxes, one at a time.

:func:`napari_samboxes.audit.audit_boxes` compares every box of the shown
image with the image's candidates and with its own mask's fragments; the
boxes it flags are walked largest problem first
(:func:`napari_samboxes.audit.flagged`). Each is shown as a before and an
after: the box is selected in the boxes layer (and the view centred on
it), the box suggested for it is drawn in the preview layer (magenta).

While the audit is on, it takes these keys over from the annotation mode
(:meth:`~.input.AnnotationMode.take`) and gives them back when it ends:

* ``Tab`` / ``Shift+Tab``: the next / previous flagged box;
* ``Enter``: the box becomes the suggested one (one undo step: ``Ctrl+Z``
  brings it back, and the audit shows it again), then the next;
* ``Escape``: the box stays as it is (not shown again in this audit),
  then the next.

The audit ends after the last flagged box, when it is started again
(:meth:`AuditMode.toggle`, the panel's ``audit`` button) or when another
image is shown. An edit made meanwhile (an undo, a pick, napari's tools)
audits the boxes again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from ..audit import BoxAudit, audit_boxes, flagged
from ..formats.columns import MASK_COLUMN
from ..session import Change
from ..tighten import TIGHTEN_MIN_IOU
from .annotator import Annotator
from .input import AnnotationMode

__all__ = ["AuditMode"]

#: The identity of a flagged box within one audit: its row and its box.
_Key = tuple[int, tuple[float, float, float, float]]


def _key(item: BoxAudit) -> _Key:
    return item.row, item.box


class AuditMode:
    """The Audit mode over an :class:`~.annotator.Annotator` (see the
    module docstring).

    Parameters
    ----------
    annotator : Annotator
        The shown image, its session and layers.
    mode : AnnotationMode
        The keys, taken over while the audit is on.
    min_iou, tolerance_px : float
        As for :func:`~napari_samboxes.audit.audit_boxes`.
    """

    def __init__(
        self,
        annotator: Annotator,
        mode: AnnotationMode,
        min_iou: float = TIGHTEN_MIN_IOU,
        tolerance_px: float = 0.0,
    ) -> None:
        self.a = annotator
        self.mode = mode
        self.min_iou = min_iou
        self.tolerance_px = tolerance_px
        self.active = False
        #: The flagged boxes still to decide, largest problem first.
        self.items: list[BoxAudit] = []
        self.index = 0
        self.accepted = 0
        self.kept: set[_Key] = set()
        self._last_accepted: _Key | None = None
        self._own = False
        #: Audits of boxes seen (box, slice, label, mask -> audit), valid
        #: for the candidates ``_cands``.
        self._cache: dict[tuple[Any, ...], BoxAudit] = {}
        self._cands: Any = None
        self._keys: dict[str, Callable[[Any], Any]] = {
            "next_box": lambda _: self.next(1),
            "prev_box": lambda _: self.next(-1),
            "accept": lambda _: self.accept(),
            "clear_picks": lambda _: self.keep(),
        }
        annotator.attached.connect(self._on_attached)
        annotator.changed.connect(self._on_changed)

    @property
    def say(self) -> Callable[[str], Any]:
        """The panel's status line."""
        return self.a.say

    @property
    def current(self) -> BoxAudit | None:
        """The flagged box shown now (None when the audit is off)."""
        if not self.active or not self.items:
            return None
        return self.items[self.index]

    # -- on and off ------------------------------------------------------------
    def toggle(self, *_: Any) -> None:
        """Start the audit, or end it when it is on."""
        if self.active:
            self.stop()
        else:
            self.start()

    def start(self) -> int:
        """Audit the shown image's boxes and show the largest problem;
        returns the number of flagged boxes (0: the audit stays off)."""
        s = self.a.session
        if self.a.view is None or self.a.closed or s.candidate_set is None:
            self.say("press Run first: the audit compares the boxes with SAM's")
            return 0
        if s.running:
            self.say("the run is still going: audit its boxes when it ends")
            return 0
        self.kept, self.accepted, self._last_accepted = set(), 0, None
        self._cache, self._cands = {}, None
        self._refresh()
        if not self.items:
            self.say(f"audit: none of the {len(s.boxes)} boxes is flagged")
            return 0
        self.active = True
        self.mode.take(self._keys)
        self.index = 0
        self._show()
        return len(self.items)

    def stop(self, message: str = "") -> None:
        """End the audit: the keys go back to the annotation mode."""
        if not self.active:
            return
        self.active = False
        self.mode.release(self._keys)
        self.a.release_preview()
        self.items = []
        self.say(
            message
            or f"audit ended: {self.accepted} box(es) changed, {len(self.kept)} kept"
        )

    # -- the keys ----------------------------------------------------------------
    def next(self, step: int = 1) -> None:
        """Show the next (``step`` 1) or previous (-1) flagged box."""
        if not self.items:
            return self.stop()
        self.index = (self.index + step) % len(self.items)
        self._show()

    def accept(self) -> Change | None:
        """The shown box becomes the suggested one (one undo step)."""
        item = self.current
        if item is None or item.suggestion is None:
            return None
        self._own = True
        try:
            change = self.a.session.move(
                item.row,
                item.suggestion,
                f"box {item.row + 1} '{item.label}': the suggested box "
                f"({item.kind}, {item.problem_px:g} px)",
            )
            self.a.add_with_mask(change)
        finally:
            self._own = False
        self.accepted += 1
        self._last_accepted = _key(item)
        self._decided()
        return change

    def keep(self) -> None:
        """The shown box stays as it is; not shown again in this audit."""
        item = self.current
        if item is None:
            return
        self.kept.add(_key(item))
        self._decided()

    # -- inside --------------------------------------------------------------------
    def _refresh(self) -> None:
        """Audit the boxes again: only the rows not audited before with the
        same box, slice, label and mask (a key on an image of hundreds of
        boxes stays quick)."""
        s = self.a.session
        boxes, cands = s.boxes, s.candidates
        if cands is not self._cands:
            self._cache, self._cands = {}, cands
        keys = [
            (
                tuple(boxes.xyxy[i]),
                tuple(boxes.slices[i]),
                boxes.labels[i],
                boxes.cell(MASK_COLUMN, i),
            )
            for i in range(len(boxes))
        ]
        todo = [i for i, k in enumerate(keys) if k not in self._cache]
        if todo:
            got = audit_boxes(
                boxes.subset(todo),
                cands,
                min_iou=self.min_iou,
                tolerance_px=self.tolerance_px,
                slice_index=s.slice_index if boxes.slices.shape[1] else None,
            )
            self._cache.update((keys[i], x) for i, x in zip(todo, got, strict=True))
        audits = [replace(self._cache[k], row=i) for i, k in enumerate(keys)]
        self.items = [x for x in flagged(audits) if _key(x) not in self.kept]

    def _decided(self) -> None:
        """The shown box was accepted or kept: on to the next."""
        at = self.index
        self._refresh()
        if not self.items:
            return self.stop(
                f"audit done: {self.accepted} box(es) changed, {len(self.kept)} kept"
            )
        self.index = min(at, len(self.items) - 1)
        self._show()

    def _show(self) -> None:
        item = self.items[self.index]
        boxes = self.a.session.boxes
        sl = tuple(int(v) for v in boxes.slices[item.row])
        self.a.select([item.row])
        self.a.hold_preview(np.asarray(item.suggestion, dtype=np.float64), sl)
        self.say(
            f"audit {self.index + 1} of {len(self.items)}: box {item.row + 1} "
            f"'{item.label}', {item.kind} by {item.problem_px:g} px (IoU "
            f"{item.iou:.2f}); Enter: take the magenta box, Esc: keep it, "
            "Tab: next"
        )

    def _on_changed(self, change: Change) -> None:
        """An edit not made by the audit (an undo, a pick): audit again; the
        box shown stays shown, and a box whose change was undone comes back."""
        if not self.active or self._own or change.key != self.a.session.image_key:
            return
        now = self.current
        self._refresh()
        if not self.items:
            return self.stop("audit done: no flagged box is left")
        keys = [_key(x) for x in self.items]
        for want in (self._last_accepted, None if now is None else _key(now)):
            if want in keys:
                self.index = keys.index(want)
                break
        else:
            self.index = min(self.index, len(self.items) - 1)
        if self._last_accepted in keys:  # its change was undone
            self._last_accepted = None
            self.accepted -= 1
        self._show()

    def _on_attached(self) -> None:
        self.stop("another image is shown: the audit ended")
