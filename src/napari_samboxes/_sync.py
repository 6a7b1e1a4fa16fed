"""Edits made through napari's own UI and API reach the session.

The boxes layer's data edits (:func:`_editing.on_boxes_data`), label edits
(``features`` events, napari's features table), pastes (announced with
``features`` alone) and edits in the boxes layer of an image that is not
the widget's current one (layer mode). ``_folder.wire_layer`` connects
:func:`layer_slots`, one owner per layer.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from ._editing import _take_layer, on_boxes_data, on_picks_data
from .session import Change

if TYPE_CHECKING:  # pragma: no cover
    from ._widget import SamBoxesWidget

__all__ = ["later_on", "layer_slots", "note_shown", "on_layer", "sync_labels"]


# napari changes the ``label`` feature of the boxes layer in three ways:
# ``layer.features = df`` and ``layer.current_properties = ...`` (with
# shapes selected) emit ``events.features``; code that edits
# ``layer.features`` in place may emit it by hand; napari's features table
# widget writes an edited cell into ``layer.features`` in place and emits
# no layer event at all, only its Qt model's ``dataChanged``.


def layer_slots(
    self: SamBoxesWidget, picks: bool
) -> list[tuple[str, Callable[[Any], Any]]]:
    """``(event name, handler)`` pairs that send a layer's edits to ``self``.

    Picks layer: data edits (:func:`on_picks_data`). Boxes layer: data edits
    (:func:`on_boxes_data`) and label edits (:func:`sync_labels`, on
    ``features``); napari's features tables are found when a boxes layer
    is wired and when they take the keyboard focus (an edit needs it: a
    click or Tab into a cell gives it). No event filter on napari's window:
    one there stops napari's close from deleting the plugin's dock widget at
    once, which the flush on close relies on.
    ``_folder.wire_layer`` connects them, one owner per layer.
    """
    if picks:
        return [("data", lambda e: on_picks_data(self, e))]
    _watch_focus()
    _watch_feature_tables(self)
    return [
        ("data", lambda e: on_layer(self, e.source, lambda: on_boxes_data(self, e))),
        ("features", lambda e: on_layer(self, e.source, lambda: sync_labels(self))),
    ]


def on_layer(self: SamBoxesWidget, layer: Any, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on the image ``layer`` last showed: an edit in the boxes
    layer of another image than the widget's current one (layer mode, or
    the folder's layer after a run on another image layer) goes to that
    image's boxes, is autosaved under its key, and is not reverted when
    that image is shown again.
    """
    ls = self.layers
    if ls is None or layer is None or layer is ls.get("boxes"):
        return fn()
    shown = _SHOWN.get(layer)
    if shown is None or shown[0] is not self:
        return None  # not a layer this widget showed boxes in
    _, other, key = shown
    current = self.session.image_key
    self.layers = other
    self.session.show_image(key)
    try:
        return fn()
    finally:
        self.layers = ls
        self.session.show_image(current)


def later_on(self: SamBoxesWidget, fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` for a timer: it runs on the image that is current now."""
    layer = self.layers.get("boxes") if self.layers is not None else None
    return lambda: on_layer(self, layer, fn)


#: boxes layer -> (widget, LayerSet, session key) of its last render
_SHOWN: weakref.WeakKeyDictionary[Any, tuple[Any, Any, str]] = (
    weakref.WeakKeyDictionary()
)


def note_shown(self: SamBoxesWidget, layer: Any) -> None:
    """Remember which image's boxes ``layer`` now shows (``show_boxes``)."""
    _SHOWN[layer] = (self, self.layers, self.session.image_key)


_FOCUS_WATCHED = False


def _watch_focus() -> None:
    """Once per process: a features table that takes the focus is watched."""
    global _FOCUS_WATCHED
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    if _FOCUS_WATCHED or app is None:
        return
    app.focusChanged.connect(_on_focus)  # type: ignore[attr-defined]
    _FOCUS_WATCHED = True


def _on_focus(old: Any, new: Any) -> None:
    w = new
    while w is not None:
        if type(w).__name__ == "FeaturesTable":
            _watch_table(w)
            return
        w = w.parentWidget()


def _watch_feature_tables(self: SamBoxesWidget) -> None:
    """Watch the features tables already open in this window (those opened
    later are found when they take the focus)."""
    window = getattr(getattr(self.viewer, "window", None), "_qt_window", None)
    if window is None or self._closed:
        return
    from qtpy.QtWidgets import QWidget

    for table in window.findChildren(QWidget):
        if type(table).__name__ == "FeaturesTable":
            _watch_table(table)


def _watch_table(table: Any) -> None:
    """Edits in ``table`` reach whichever widget owns the edited layer."""
    from qtpy.QtCore import QTimer

    try:
        model = table.table.model().sourceModel()
    except AttributeError:  # another napari's table
        return
    if getattr(model, "_samboxes_watched", False):
        return
    # the table writes the layer in its own slot: read it afterwards
    model.dataChanged.connect(lambda *_: QTimer.singleShot(0, _sync_owners))
    model._samboxes_watched = True


def _sync_owners() -> None:
    from ._folder import owned_boxes

    for widget, layer in owned_boxes():
        on_layer(widget, layer, partial(sync_labels, widget))


def sync_labels(self: SamBoxesWidget) -> Change | None:
    """Labels in the boxes layer that differ from the session's become one
    undoable relabel; labels that are no class yet join the class list.

    While the layer's shapes differ in number from the session's boxes
    (a data edit, handled by :func:`on_boxes_data`, or a paste, which
    napari announces with ``features`` alone) it leaves the work to
    :func:`_catch_up`.
    """
    if self._syncing or self._closed or self.layers is None:
        return None
    labels = self.layers.read_labels()
    old = self.session.boxes
    if labels is None:
        return None
    if len(labels) != len(old):  # a paste emits only ``features``
        from qtpy.QtCore import QTimer

        QTimer.singleShot(0, later_on(self, lambda: _catch_up(self)))
        return None
    changed = [i for i, label in enumerate(labels) if label != old.labels[i]]
    if not changed:
        return None
    names = list(dict.fromkeys(labels[i] for i in changed))
    self.box_label.add_classes(names)
    if len(names) == 1:
        return self.apply(self.session.relabel(changed, names[0]))
    new = old
    for name in names:
        new = new.relabeled([i for i in changed if labels[i] == name], name)
    msg = f"{len(changed)} box(es) relabelled"
    return self.apply(self.session.replace_all(new, msg))


def _catch_up(self: SamBoxesWidget) -> None:
    """Shapes napari added without a data event (a paste): one change."""
    layer = self.layers.get("boxes") if self.layers is not None else None
    if self._syncing or self._closed or layer is None:
        return
    if getattr(layer, "_is_creating", False):  # drawing: the data event follows
        return
    if len(layer.data) != len(self.session.boxes):
        _take_layer(self, "boxes pasted")
