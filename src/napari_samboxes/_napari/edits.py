"""Edits made with napari's own tools reach the session (``LayerEdits``).

The boxes layer of an image changes in ways the plugin did not make:
napari's shape tools (draw, move, resize, delete: ``data`` events), label
edits (``layer.features = df``, ``current_properties`` on a selection, an
in-place edit announced with ``events.features``: ``features`` events),
pastes (announced with ``features`` alone) and napari's features table
widget (which writes the cell in place and emits no layer event, only its
Qt model's ``dataChanged``). Each becomes one undoable change of the image
that layer shows (its :class:`~.layers.ImageLayers` key), which need not be
the image shown now.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer

from ..boxes import Boxes
from ..classes import ClassList
from ..session import Change, Session
from .layers import ImageLayers

__all__ = ["LayerEdits"]


class LayerEdits:
    """Turns napari's edits of the boxes layers into session changes.

    Parameters
    ----------
    session : Session
    classes : ClassList
    apply : callable
        Renders a :class:`Change` (and saves it); returns it.
    defaults : callable
        The features of a hand-drawn box (``label``, ``score``, ``source``).
    warn : callable
        Shows a warning.
    classes_added : callable
        Called with the labels that became classes.
    redraw : callable
        Redraws a view's boxes layer from the session (whole pixels, class
        colours, the features of hand-drawn boxes).
    """

    def __init__(
        self,
        session: Session,
        classes: ClassList,
        apply: Callable[[Change], Change],
        defaults: Callable[[], dict[str, Any]],
        warn: Callable[[str], Any],
        classes_added: Callable[[list[str]], Any],
        redraw: Callable[[ImageLayers], Any],
    ) -> None:
        self.session = session
        self.classes = classes
        self.apply = apply
        self.redraw = redraw
        self.defaults = defaults
        self.warn = warn
        self.classes_added = classes_added
        self.views: weakref.WeakSet[ImageLayers] = weakref.WeakSet()
        self._tables: weakref.WeakSet[Any] = weakref.WeakSet()
        self.closed = False

    def watch(self, view: ImageLayers) -> None:
        """Listen to the edits of ``view``'s boxes layer (now and after it
        is re-created)."""
        self.views.add(view)
        boxes = view.bindings["boxes"]
        boxes.on("data", lambda e: self.on_data(view, e))
        boxes.on("features", lambda e: self.on_features(view))

    # -- shapes drawn, moved, removed ------------------------------------------
    def on_data(self, view: ImageLayers, event: Any) -> None:
        """A napari edit of the boxes layer becomes one undoable change."""
        action = getattr(getattr(event, "action", ""), "value", "")
        if (
            self.closed
            or view.rendering
            or action not in ("added", "removed", "changed")
        ):
            return
        self.take_layer(view, f"boxes {action}")

    def take_layer(self, view: ImageLayers, what: str) -> None:
        """The boxes layer as it is now becomes the boxes of its image."""
        old = self.session.boxes_of(view.key)
        try:  # the further columns (flags, prompts, masks) are kept
            new = view.read_boxes(self.defaults()).carrying(old)
        except ValueError as e:  # a shape that is no box (NaN, several slices)
            self.warn(f"{e}; the edit is undone.")
            view.shown = _unknown(view.layer("boxes"))  # redraw every shape
            QTimer.singleShot(0, lambda: self._redraw(view))
            return
        layer = view.layer("boxes")
        view.shown = _as_layer_shows(layer, new)
        new, dots = _without_dots(old, new)
        if dots:
            self.warn(
                "a click in napari's rectangle tool makes no box: press, drag "
                "and release to draw one (or leave the tool to pick with clicks)"
            )
        self.apply(self.session.replace_all(_moved_by_hand(old, new), what, view.key))
        # snap to whole pixels and recolour once napari has finished
        QTimer.singleShot(0, lambda: self._redraw(view))

    def _redraw(self, view: ImageLayers) -> None:
        if not self.closed and view.layer("boxes") is not None:
            self.redraw(view)

    # -- labels ------------------------------------------------------------------
    def on_features(self, view: ImageLayers) -> Change | None:
        """Labels in the layer that differ from the session's become one
        undoable relabel; labels that are no class yet join the classes.

        While the layer's shapes differ in number from the session's boxes
        (a data edit, or a paste, which napari announces with ``features``
        alone) the work is left to :meth:`on_data` or to a catch-up.
        """
        if self.closed or view.rendering:
            return None
        labels = view.read_labels()
        old = self.session.boxes_of(view.key)
        if labels is None:
            return None
        if len(labels) != len(old):  # a paste emits only ``features``
            QTimer.singleShot(0, lambda: self._catch_up(view))
            return None
        changed = [i for i, label in enumerate(labels) if label != old.labels[i]]
        if not changed:
            return None
        names = list(dict.fromkeys(labels[i] for i in changed))
        added = self.classes.add(names)
        if added:
            self.classes_added(added)
        new = old
        for name in names:
            new = new.relabeled([i for i in changed if labels[i] == name], name)
        msg = (
            f"{len(changed)} box(es) now '{names[0]}'"
            if len(names) == 1
            else f"{len(changed)} box(es) relabelled"
        )
        return self.apply(self.session.replace_all(new, msg, key=view.key))

    def _catch_up(self, view: ImageLayers) -> None:
        """Shapes napari added without a data event (a paste): one change."""
        layer = view.layer("boxes")
        if self.closed or view.rendering or layer is None:
            return
        if getattr(layer, "_is_creating", False):  # drawing: a data event follows
            return
        if len(layer.data) != len(self.session.boxes_of(view.key)):
            self.take_layer(view, "boxes pasted")

    # -- napari's features table -----------------------------------------------
    def watch_tables(self, window: Any) -> None:
        """Watch napari's features tables open in ``window`` now; those
        opened later are found when they take the keyboard focus (an edit
        needs it)."""
        from qtpy.QtWidgets import QApplication, QWidget

        app = QApplication.instance()
        if app is not None:
            app.focusChanged.connect(self._on_focus)  # type: ignore[attr-defined]
        if window is not None:
            for table in window.findChildren(QWidget):
                self._watch_table(table)

    def _on_focus(self, old: Any, new: Any) -> None:
        w = new
        while w is not None:
            if self._watch_table(w):
                return
            w = w.parentWidget()

    def _watch_table(self, table: Any) -> bool:
        if type(table).__name__ != "FeaturesTable":
            return False
        try:
            model = table.table.model().sourceModel()
        except AttributeError:  # another napari's table
            return True
        if model not in self._tables:
            self._tables.add(model)
            # the table writes the layer in its own slot: read it afterwards
            model.dataChanged.connect(self._on_table_edit)
        return True

    def _on_table_edit(self, *_: Any) -> None:
        if not self.closed:
            QTimer.singleShot(0, self._sync_all)

    def _sync_all(self) -> None:
        for view in list(self.views):
            if view.layer("boxes") is not None:
                self.on_features(view)

    def close(self) -> None:
        """Stop listening (the panel closed)."""
        self.closed = True
        from qtpy.QtWidgets import QApplication

        app = QApplication.instance()
        if app is not None:
            with contextlib.suppress(TypeError, RuntimeError):
                app.focusChanged.disconnect(self._on_focus)  # type: ignore[attr-defined]
        for model in list(self._tables):
            with contextlib.suppress(TypeError, RuntimeError):
                model.dataChanged.disconnect(self._on_table_edit)


def _as_layer_shows(layer: Any, snapped: Boxes) -> Boxes:
    """The boxes the layer shows now, unsnapped (so that the redraw only
    touches the rows that snapping moves); a shape that is no rectangle (an
    ellipse, a polygon) counts as changed, so that it is redrawn as its box."""
    from ..geometry import boxes_from_shapes

    xyxy, slices = boxes_from_shapes(layer.data)
    kinds = list(getattr(layer, "shape_type", []))
    for i, kind in enumerate(kinds[: len(xyxy)]):
        if kind != "rectangle":
            xyxy[i] = np.nan
    return Boxes(xyxy, snapped.labels, snapped.scores, snapped.sources, slices)


#: A hand-drawn box with both sides at most this many pixels came from a
#: click in napari's rectangle tool, not from a drag: it is not added.
DOT_SIDE = 2


def _without_dots(old: Boxes, new: Boxes) -> tuple[Boxes, int]:
    """``new`` without the hand boxes it added that are mere dots."""
    if len(new) <= len(old):
        return new, 0
    side = new.xyxy[:, 2:] - new.xyxy[:, :2] + 1
    dot = np.zeros(len(new), dtype=bool)
    dot[len(old) :] = np.all(side[len(old) :] <= DOT_SIDE, axis=1)
    dot &= np.array([src == "hand" for src in new.sources], dtype=bool)
    if not dot.any():
        return new, 0
    return new.subset(np.flatnonzero(~dot)), int(dot.sum())


def _moved_by_hand(old: Boxes, new: Boxes) -> Boxes:
    """A box napari's tools moved or resized is a hand box from then on
    (no score, source ``hand``)."""
    if len(old) != len(new) or not len(new):
        return new
    moved = np.flatnonzero(np.any(old.xyxy != new.xyxy, axis=1))
    for i in moved:
        if new.sources[i] != "hand":
            new = new.replaced(int(i), new.xyxy[i], float("nan"), "hand")
    return new


def _unknown(layer: Any) -> Boxes:
    """Boxes that match no shape of ``layer`` (so that a redraw replaces
    them all)."""
    n = len(layer.data) if layer is not None else 0
    return Boxes(np.full((n, 4), np.nan), ("",) * n, np.zeros(n), ("hand",) * n)
