"""Picking and editing: picks-layer clicks and boxes-layer edits.

Functions of the widget (its methods delegate here), each turning a layer
event into one session operation and rendering the result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .session import Change

if TYPE_CHECKING:  # pragma: no cover
    from ._widget import SamBoxesWidget

__all__ = ["on_boxes_data", "on_picks_data", "on_relabel", "pick"]


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
    result = self.session.pick(pts[:, [-1, -2]], str(self.box_label.value), sl)
    if result.change is None:
        self.notify(result.reason)
        return None
    return self.apply(result.change)


def on_boxes_data(self: SamBoxesWidget, event: Any = None) -> None:
    """A napari edit of the boxes layer becomes one undoable change."""
    action = getattr(getattr(event, "action", ""), "value", "")
    if self._syncing or action not in ("added", "removed", "changed"):
        return
    assert self.layers is not None
    from qtpy.QtCore import QTimer

    new = self.layers.read_boxes(self._hand_defaults())
    change = self.session.replace_all(new, f"boxes {action}")
    # redraw (whole pixels, class colours) once napari has finished
    QTimer.singleShot(0, lambda: _resync(self, change))


def _resync(self: SamBoxesWidget, change: Change) -> None:
    if self.layers is not None and self.layers.get("boxes") is not None:
        self._show_boxes(self.session.boxes)
    if change.changed:
        self.boxes_changed.emit(change.boxes)


def on_relabel(self: SamBoxesWidget, event: Any = None) -> None:
    """Relabel the boxes selected in the boxes layer."""
    layer = self.layers.get("boxes") if self.layers else None
    chosen = sorted(layer.selected_data) if layer is not None else []
    if not chosen:
        return self.notify("select boxes in the boxes layer to relabel them.")
    self.apply(self.session.relabel(chosen, str(self.box_label.value)))
