"""The annotation mode: the plugin's keys and clicks, whatever layer is active.

napari looks a key up in the active layer's keymaps first (its own, then
its class's: a Shapes layer's ``3`` deletes, ``d`` selects), then in the
viewer's. So while a panel is open, :class:`AnnotationMode` binds its keys
on the viewer *and* on every layer of the viewer (layers added later
included), and gives back whatever the layers had bound when it stops.
Keys pressed anywhere in napari's window but a text field reach napari's
keymaps (napari forwards them), so the keys work wherever the mouse is.

* On a layer that is not the plugin's, the keys are the plugin's only
  while that layer is not being edited (``pan_zoom`` mode); in an editing
  mode (a Labels brush, a user's shapes) napari's own key binding acts, so
  the plugin never takes a user's tools away. Closing a panel takes only
  its own bindings out (another panel's stay).
* Clicks: a left click (press and release within :data:`CLICK_SLOP` screen
  pixels, no modifier) on the canvas places a pick point whenever the
  active layer is in ``pan_zoom`` mode (an image, the picks layer, any
  layer not being edited), so two clicks always pick; a drag still pans.
  A layer in an editing mode (napari's shape tools, say) keeps its clicks.
* ``Tab`` moves Qt's keyboard focus before any keymap sees it, so it is
  caught on the canvas itself.
* A mode of the panel (the audit, :mod:`.audit`) can take some actions
  over while it is on (:meth:`AnnotationMode.take`): ``Tab``, ``Enter``
  and ``Escape`` are then its keys, and the annotation's again when it
  releases them. A key whose action no one has (``Enter`` outside the
  audit) goes on to napari's own binding.
* The widget's buttons and drop-downs never take the keyboard focus (see
  :func:`keep_keys_free`); a text field gives it back to the canvas when
  its editing ends.
"""

from __future__ import annotations

import contextlib
import inspect
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from qtpy.QtCore import QEvent, QObject, Qt

from .layers import META

__all__ = ["CLICK_SLOP", "KEYS", "AnnotationMode", "canvas_widget", "keep_keys_free"]

#: Key -> action name (the README's table of keys).
KEYS: dict[str, str] = {
    "a": "prev_image",
    "d": "next_image",
    **{str(n): f"class_{n}" for n in range(1, 10)},
    "[": "smaller",
    "]": "larger",
    "Control-Z": "undo",
    "Control-Shift-Z": "redo",
    "Space": "mark_done",
    "Delete": "delete",
    "Backspace": "delete",
    "Escape": "clear_picks",
    "Enter": "accept",
    "Tab": "next_box",
    "Shift-Tab": "prev_box",
}
#: A press and release closer than this (screen pixels) is a click.
CLICK_SLOP = 4.0


def canvas_widget(viewer: Any) -> Any:
    """napari's canvas as a Qt widget, or None (no window)."""
    try:
        return viewer.window._qt_viewer.canvas.native
    except AttributeError:
        return None


class _TabFilter(QObject):
    """Tab and Shift+Tab on the canvas go to the annotation mode."""

    def __init__(self, mode: AnnotationMode) -> None:
        super().__init__()
        self.mode = mode

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt's)
        if event.type() != QEvent.Type.KeyPress or getattr(self, "mode", None) is None:
            return False
        key, mods = event.key(), event.modifiers()
        if key == Qt.Key.Key_Backtab or (
            key == Qt.Key.Key_Tab and mods & Qt.KeyboardModifier.ShiftModifier
        ):
            self.mode.do("prev_box")
            return True
        if key == Qt.Key.Key_Tab and not mods & ~Qt.KeyboardModifier.KeypadModifier:
            self.mode.do("next_box")
            return True
        return False


class AnnotationMode:
    """The plugin's keys and clicks on a viewer (see the module docstring).

    Parameters
    ----------
    viewer : napari.Viewer
    actions : mapping of str to callable
        Action name (the values of :data:`KEYS`) -> what it does, called
        with the layer (or viewer) the key was pressed on, or None.
    on_click : callable
        Called with a click's position in world coordinates.
    on_move : callable, optional
        Called with the mouse position (world coordinates) as it moves.
    """

    def __init__(
        self,
        viewer: Any,
        actions: Mapping[str, Callable[[Any], Any]],
        on_click: Callable[[np.ndarray], Any],
        on_move: Callable[[np.ndarray], Any] | None = None,
    ) -> None:
        self.viewer = viewer
        self.actions = dict(actions)
        self.on_click = on_click
        self.on_move = on_move
        self.active = False
        self._bound: list[tuple[weakref.ref[Any], str, Any]] = []
        self._tab = _TabFilter(self)
        #: Actions taken over by a mode (:meth:`take`), latest last.
        self._over: list[dict[str, Callable[[Any], Any]]] = []

    # -- modes over the annotation ---------------------------------------------
    def take(self, actions: Mapping[str, Callable[[Any], Any]]) -> None:
        """While a mode is on, its ``actions`` (action name -> what it does)
        act instead of the annotation's (and of an earlier mode's)."""
        self._over.append(dict(actions))

    def release(self, actions: Mapping[str, Callable[[Any], Any]]) -> None:
        """End :meth:`take` of these ``actions`` (the same mapping)."""
        self._over = [o for o in self._over if o != dict(actions)]

    def action(self, name: str) -> Callable[[Any], Any] | None:
        """What the action ``name`` does now (None: nothing of the plugin's)."""
        for over in reversed(self._over):
            if name in over:
                return over[name]
        return self.actions.get(name)

    # -- on and off ------------------------------------------------------------
    def start(self) -> None:
        """Bind the keys and listen to clicks."""
        if self.active:
            return
        self.active = True
        self._bind(self.viewer)
        for layer in list(self.viewer.layers):
            self._bind(layer)
        self.viewer.layers.events.inserted.connect(self._on_inserted)
        self.viewer.mouse_drag_callbacks.append(self._on_drag)
        self.viewer.mouse_move_callbacks.append(self._on_move)
        canvas = canvas_widget(self.viewer)
        if canvas is not None:
            canvas.installEventFilter(self._tab)

    def stop(self) -> None:
        """Give back every key binding and stop listening."""
        if not self.active:
            return
        self.active = False
        with contextlib.suppress(Exception):
            self.viewer.layers.events.inserted.disconnect(self._on_inserted)
        for callbacks, cb in (
            (self.viewer.mouse_drag_callbacks, self._on_drag),
            (self.viewer.mouse_move_callbacks, self._on_move),
        ):
            with contextlib.suppress(ValueError):
                callbacks.remove(cb)
        canvas = canvas_widget(self.viewer)
        if canvas is not None:
            with contextlib.suppress(RuntimeError):
                canvas.removeEventFilter(self._tab)
        for ref, key, handler in reversed(self._bound):
            owner = ref()
            if owner is not None:
                with contextlib.suppress(Exception):
                    _unbind(owner, key, handler)
        self._bound = []

    def _on_inserted(self, event: Any) -> None:
        self._bind(event.value)

    def _bind(self, owner: Any) -> None:
        for key, name in KEYS.items():
            if key in ("Tab", "Shift-Tab"):
                continue  # Qt takes them first: see _TabFilter
            handler = _handler(self, name, key)
            handler.before = owner.bind_key(key, handler, overwrite=True)
            self._bound.append((weakref.ref(owner), key, handler))

    def do(self, name: str, source: Any = None) -> None:
        """Run the action ``name`` (if the panel has it) for a key pressed
        on ``source`` (a layer, the viewer, or None)."""
        action = self.action(name)
        if self.active and action is not None:
            action(source)

    # -- clicks ------------------------------------------------------------------
    def clicks_pick(self) -> bool:
        """Whether a click on the canvas is a pick now."""
        active = self.viewer.layers.selection.active
        return active is None or str(getattr(active, "mode", "pan_zoom")) == "pan_zoom"

    def _on_drag(self, viewer: Any, event: Any) -> Any:
        if event.button != 1 or event.modifiers or not self.clicks_pick():
            return
        start = np.asarray(event.pos, dtype=float)
        world = np.asarray(event.position, dtype=float)
        moved = False
        yield
        while event.type == "mouse_move":
            if np.hypot(*(np.asarray(event.pos, dtype=float) - start)) > CLICK_SLOP:
                moved = True
            yield
        if not moved and self.active:
            self.on_click(world)

    def _on_move(self, viewer: Any, event: Any) -> None:
        if self.active and self.on_move is not None:
            self.on_move(np.asarray(event.position, dtype=float))

    # -- focus -------------------------------------------------------------------
    def focus_canvas(self) -> None:
        """Give the keyboard focus back to the canvas."""
        canvas = canvas_widget(self.viewer)
        if canvas is not None and self.active:
            with contextlib.suppress(RuntimeError):
                canvas.setFocus(Qt.FocusReason.OtherFocusReason)


def _handler(mode: AnnotationMode, name: str, key: str) -> Any:
    """One key of the plugin bound on one layer (or the viewer).

    A key whose action no one has now acts as if the plugin had not bound
    it. On the plugin's own layers and the viewer the key is otherwise the
    plugin's. On any other layer it is the plugin's only while that layer is
    not being edited (``pan_zoom`` mode, or a layer without modes); in an
    editing mode (a Labels brush, napari's shape tools on a user's layer) it
    goes on to what was bound before, else to the layer's own key (napari's
    class keymap), press and release, so napari's keys keep working there.
    A generator function, so that napari drives a key's release too.
    """
    ref = weakref.ref(mode)

    def handler(owner: Any = None) -> Any:
        m = ref()
        if (
            m is not None
            and m.active
            and m.action(name) is not None
            and _plugin_key(owner, key)
        ):
            m.do(name, owner)
            return
        before = handler.before  # type: ignore[attr-defined]
        other = before if before is not None else _class_binding(owner, key)
        if other is None:
            return
        result = other(owner)
        if inspect.isgenerator(result):  # napari's press-and-release keys
            yield from result

    handler.before = None  # type: ignore[attr-defined]
    handler.samboxes = True  # type: ignore[attr-defined]
    return handler


def _plugin_key(owner: Any, key: str) -> bool:
    """Whether ``key`` pressed on ``owner`` is the plugin's (``Escape`` is
    napari's on any layer being edited: it ends a shape being drawn)."""
    if not hasattr(owner, "mode"):
        return True  # the viewer, a layer without modes
    meta = getattr(owner, "metadata", None)
    if isinstance(meta, dict) and META in meta and key != "Escape":
        return True  # a layer of the plugin
    return str(owner.mode) == "pan_zoom"


def _class_binding(owner: Any, key: str) -> Any:
    """napari's own binding of ``key`` for ``owner``'s class, if any."""
    from napari.utils.key_bindings import KeyBinding

    kb = KeyBinding.from_str(key)
    for cls in type(owner).__mro__:
        func = getattr(cls, "class_keymap", {}).get(kb)
        if func is not None and func is not Ellipsis:
            return func
    return None


def _unbind(owner: Any, key: str, handler: Any) -> None:
    """Take ``handler`` out of ``owner``'s chain of bindings for ``key``:
    the binding before it comes back (a panel opened later keeps its own)."""
    from napari.utils.key_bindings import KeyBinding

    current = owner.keymap.get(KeyBinding.from_str(key))
    if current is handler:
        owner.bind_key(key, handler.before, overwrite=True)
        return
    while getattr(current, "samboxes", False):  # a later panel's, on top of us
        if current.before is handler:
            current.before = handler.before
            return
        current = current.before


def keep_keys_free(widget: Any, give_back: Callable[[], Any]) -> None:
    """Buttons, check boxes and drop-downs under ``widget`` never take the
    keyboard focus; text fields and spin boxes hand it back to the canvas
    (``give_back``) when their editing ends."""
    from qtpy.QtWidgets import (
        QAbstractButton,
        QAbstractItemView,
        QAbstractSpinBox,
        QComboBox,
        QLineEdit,
    )

    for child in widget.findChildren(QAbstractButton):
        child.setFocusPolicy(Qt.FocusPolicy.NoFocus)
    for child in widget.findChildren(QComboBox):
        if not child.isEditable():
            child.setFocusPolicy(Qt.FocusPolicy.NoFocus)
    for child in widget.findChildren(QAbstractItemView):
        child.setFocusPolicy(Qt.FocusPolicy.NoFocus)
    # fields take the keyboard only when clicked (not when the dock opens,
    # nor by Tab, nor when code sets their value), and give it back when
    # their editing ends
    stray = _NoStrayFocus(give_back, widget)
    for child in widget.findChildren(QAbstractSpinBox):
        child.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        child.installEventFilter(stray)
        child.editingFinished.connect(give_back)
    for child in widget.findChildren(QLineEdit):
        child.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        child.installEventFilter(stray)
        if isinstance(child.parent(), (QAbstractSpinBox, QComboBox)):
            continue
        child.editingFinished.connect(give_back)


class _NoStrayFocus(QObject):
    """A text field that gets the keyboard other than by a click or a key
    (superqt's spin box takes it when its value is set from code) gives it
    back at once."""

    def __init__(self, give_back: Callable[[], Any], parent: Any) -> None:
        super().__init__(parent)
        self.give_back = give_back

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt's)
        if event.type() == QEvent.Type.FocusIn and event.reason() not in (
            Qt.FocusReason.MouseFocusReason,
            Qt.FocusReason.TabFocusReason,
            Qt.FocusReason.BacktabFocusReason,
            Qt.FocusReason.ShortcutFocusReason,
        ):
            from qtpy.QtCore import QTimer

            QTimer.singleShot(0, self.give_back)
        return False
