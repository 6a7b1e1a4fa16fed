"""Keyboard shortcuts, bound in code (napari manifests cannot bind keys).

* Any of the plugin's layers, and the viewer when no layer claims the key:
  ``Control-Z`` undo, ``Control-Shift-Z`` redo (Cmd on macOS; napari maps
  ``Control`` to Cmd there).
* The picks layer only (the layer annotators click in; its points are
  transient, so the Points keys it shadows lose nothing: Delete and
  Backspace still delete points):

  - ``1`` .. ``9``: choose the n-th class;
  - ``[`` / ``]``: the next smaller / larger box around the last pick;
  - ``d`` / ``a``: next / previous image of a folder (LabelImg's keys).

The boxes and candidates layers keep napari's own keys (``3`` still
deletes selected shapes, ``a`` still selects all).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ._widget import SamBoxesWidget

__all__ = ["KEYS", "bind_layer", "bind_viewer"]

#: Key -> what it does (for the README and the tooltip).
KEYS = {
    "Control-Z": "undo",
    "Control-Shift-Z": "redo",
    "1-9": "choose class 1-9 (picks layer)",
    "[": "smaller box around the last pick (picks layer)",
    "]": "larger box around the last pick (picks layer)",
    "d": "next image (picks layer, folder mode)",
    "a": "previous image (picks layer, folder mode)",
}


def _undo_keys(w: SamBoxesWidget) -> dict[str, Callable[[], Any]]:
    return {
        "Control-Z": partial(_press, w, "undo"),
        "Control-Shift-Z": partial(_press, w, "redo"),
    }


def _picks_keys(w: SamBoxesWidget) -> dict[str, Callable[[], Any]]:
    keys: dict[str, Callable[[], Any]] = {
        "[": partial(_press, w, "smaller"),
        "]": partial(_press, w, "larger"),
        "d": partial(_press, w, "next_image"),
        "a": partial(_press, w, "prev_image"),
    }
    for n in range(1, 10):
        keys[str(n)] = partial(choose_class, w, n)
    return keys


def _press(w: SamBoxesWidget, name: str) -> None:
    """Do what the button ``name`` does (keys and buttons share one path)."""
    try:
        button = w[name]
    except (KeyError, AttributeError):
        return
    if button.enabled:
        button.changed.emit(True)


def choose_class(w: SamBoxesWidget, n: int) -> None:
    """Make the n-th class (1-based) the current one, if it exists."""
    choices = list(w.box_label.choices)
    if 1 <= n <= len(choices):
        w.box_label.value = choices[n - 1]
        w.say(f"class {n}: {choices[n - 1]}")


def _bind(target: Any, keys: dict[str, Callable[[], Any]]) -> None:
    for key, action in keys.items():

        def handler(_: Any = None, action: Callable[[], Any] = action) -> None:
            action()

        target.bind_key(key, handler, overwrite=True)


def bind_layer(w: SamBoxesWidget, layer: Any, picks: bool) -> None:
    """Bind the plugin's keys on one of its layers (undo and redo in a
    boxes layer act on the image it shows, which may not be the current)."""
    keys = _undo_keys(w)
    if picks:
        keys |= _picks_keys(w)
    else:
        from ._sync import on_layer

        keys = {k: partial(on_layer, w, layer, act) for k, act in keys.items()}
    _bind(layer, keys)


def bind_viewer(w: SamBoxesWidget) -> None:
    """Undo/redo for the viewer (layers without a binding of their own)."""
    _bind(w.viewer, _undo_keys(w))
