"""Picking and editing: picks-layer clicks and boxes-layer edits.

Functions of the widget (its methods delegate here), each turning a layer
event into one session operation and rendering the result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .session import Change
from .tighten import PROMPT_WITH_POINTS, Prompter, is_empty, tighten_boxes

if TYPE_CHECKING:  # pragma: no cover
    from ._widget import SamBoxesWidget

__all__ = [
    "INLINE_PROMPT_S",
    "on_boxes_data",
    "on_picks_data",
    "on_relabel",
    "on_tighten",
    "pick",
    "prompt_fallback",
]

#: A prompt runs on the UI thread when the last one on the device took less
#: than this (seconds) and no encode is needed; else in a thread worker.
INLINE_PROMPT_S = 0.05
_last_prompt_s: dict[str, float] = {}


def on_picks_data(self: SamBoxesWidget, event: Any = None) -> None:
    """Two points in the picks layer: pick, then clear the picks."""
    action = getattr(event, "action", "added")
    layer = event.source if event is not None else None
    if getattr(action, "value", action) != "added" or self._syncing:
        return
    if layer is None or len(layer.data) < 2:
        return
    pts = np.asarray(layer.data, dtype=np.float64)
    self._syncing = True
    try:
        layer.data = np.zeros((0, layer.ndim))
    finally:
        self._syncing = False
    pick(self, pts)


def pick(self: SamBoxesWidget, pts: np.ndarray) -> Change | None:
    """Pick with points in the image layer's data coordinates (rows,
    columns, with leading slice indices)."""
    ls = self.layers
    if ls is None or ls.image not in self.viewer.layers:
        self.notify("the image of these candidates is gone; press Run.", "warning")
        return None
    lo, hi = ls.image.extent.data[0, -2:], ls.image.extent.data[1, -2:]
    if np.any(pts[:, -2:] < lo - 0.5) or np.any(pts[:, -2:] > hi + 0.5):
        self.notify("a point lies outside the image; pick again.")
        return None
    sl = tuple(int(round(v)) for v in pts[0, :-2])
    label = str(self.box_label.value)
    result = self.session.pick(pts[:, [-1, -2]], label, sl)
    if result.change is None:
        if result.prompt and result.span is not None:
            prompt_fallback(self, result.span, pts[:, [-1, -2]], label)
        else:
            self.notify(result.reason)
        return None
    return self.apply(result.change)


def _prompter(self: SamBoxesWidget) -> Prompter | None:
    """Box prompts for the candidates shown, or None without a run."""
    s, req = self.session, self.current_request
    cset = s.candidate_set
    if cset is None or req is None:
        return None
    emb = s.embedding
    if emb is None and self.current_run is not None:
        emb = self.current_run.embedding  # a run still streaming
    return Prompter(req, cset.scale, emb, self.cache)


def _run(
    self: SamBoxesWidget,
    p: Prompter,
    job: Callable[[], Any],
    done: Callable[[Any], Any],
) -> None:
    """``done(job())``: inline when a prompt is known to be quick, else
    ``job`` in a thread worker and ``done`` on the main thread."""
    s, key, cset = self.session, self.session.image_key, self.session.candidate_set

    def finish(result: Any) -> None:
        _last_prompt_s[str(p.request.device)] = p.last_seconds
        if s.embedding is None and s.candidate_set is cset:
            s.embedding = p.embedding  # encoded (or loaded) once, kept
        if s.image_key == key and not self._closed:
            done(result)

    fast = _last_prompt_s.get(str(p.request.device), 1.0) < INLINE_PROMPT_S
    if p.embedding is not None and fast:
        return finish(job())
    from napari.qt.threading import thread_worker

    worker = thread_worker(job, start_thread=False, ignore_errors=True)()
    worker.returned.connect(finish)
    worker.errored.connect(lambda e: self.notify(f"SAM prompt failed: {e}", "error"))
    self.say("asking SAM for a box...")
    worker.start()


def prompt_fallback(
    self: SamBoxesWidget,
    span: tuple[float, float, float, float],
    points_xy: np.ndarray,
    label: str,
) -> None:
    """No candidate holds the points: prompt SAM with the box they span."""
    p = _prompter(self)
    if p is None:
        return self.notify("no candidate box contains both points")
    box = np.asarray(span, dtype=np.float64)[None]
    points = np.asarray(points_xy, dtype=np.float64)[None]

    def job() -> tuple[np.ndarray, np.ndarray]:
        return p(box, points if PROMPT_WITH_POINTS else None)

    def done(result: tuple[np.ndarray, np.ndarray]) -> None:
        got, ious = result
        if is_empty(got)[0]:
            return self.notify(
                "no candidate holds both points and SAM found no object in "
                "their box; draw it by hand."
            )
        self.apply(self.session.add_prompted(got[0], float(ious[0]), label))
        self.notify(f"no candidate held both points: box from SAM (IoU {ious[0]:.2f})")

    _run(self, p, job, done)


def on_tighten(self: SamBoxesWidget, event: Any = None) -> None:
    """Snap the selected boxes (or all) to candidates, else to box prompts."""
    s = self.session
    p = _prompter(self)
    if p is None:
        return self.notify("press Run first: tighten snaps boxes to SAM's boxes.")
    layer = self.layers.get("boxes") if self.layers else None
    chosen = sorted(layer.selected_data) if layer is not None else []
    before = s.boxes
    asked: list[np.ndarray] = []

    def probe(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        asked.append(b)
        return np.zeros_like(b), np.zeros(len(b))

    cands, sl = s.candidates, s.slice_index  # read here, not in the worker

    def tighten(prompt: Any) -> Any:
        return tighten_boxes(before, cands, chosen or None, prompt, slice_index=sl)

    def done(result: Any) -> None:
        if s.boxes is not before:
            return self.notify("the boxes changed while tightening; tighten again.")
        self.apply(s.replace_all(result.boxes, result.message))
        self.notify(result.message)

    quick = tighten(probe)
    if not asked:
        return done(quick)
    _run(self, p, lambda: tighten(p), done)


def on_boxes_data(self: SamBoxesWidget, event: Any = None) -> None:
    """A napari edit of the boxes layer becomes one undoable change."""
    action = getattr(getattr(event, "action", ""), "value", "")
    if self._closed or self._syncing or action not in ("added", "removed", "changed"):
        return
    _take_layer(self, f"boxes {action}")


def _take_layer(self: SamBoxesWidget, what: str) -> None:
    """The boxes layer as it is now becomes the session's boxes."""
    assert self.layers is not None
    from qtpy.QtCore import QTimer

    from ._sync import later_on

    try:
        new = self.layers.read_boxes(self._hand_defaults())
    except ValueError as e:  # a shape that is no box (NaN, several slices)
        self.notify(f"{e}; the edit is undone.", "warning")
        QTimer.singleShot(0, later_on(self, lambda: _resync(self)))
        return
    change = self.session.replace_all(new, what)
    if change.changed:  # now, while this image is still the current one
        self.boxes_changed.emit(change.boxes)
    # redraw (whole pixels, class colours) once napari has finished
    QTimer.singleShot(0, later_on(self, lambda: _resync(self)))


def _resync(self: SamBoxesWidget) -> None:
    if self._closed:
        return
    if self.layers is not None and self.layers.get("boxes") is not None:
        self.show_boxes(self.session.boxes)


def on_relabel(self: SamBoxesWidget, event: Any = None) -> None:
    """Relabel the boxes selected in the boxes layer."""
    layer = self.layers.get("boxes") if self.layers else None
    chosen = sorted(layer.selected_data) if layer is not None else []
    if not chosen:
        return self.notify("select boxes in the boxes layer to relabel them.")
    self.apply(self.session.relabel(chosen, str(self.box_label.value)))
