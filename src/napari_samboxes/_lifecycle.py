"""The panel's end, and its start on layers that already hold boxes.

Functions of :class:`~napari_samboxes._widget.SamBoxesWidget` (its methods
delegate here).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from ._folder import unwire_layers

if TYPE_CHECKING:  # pragma: no cover
    from ._widget import SamBoxesWidget
    from .boxes import Boxes

__all__ = ["SHUTDOWN_WAIT_MS", "layer_boxes", "shutdown"]

#: How long closing the panel waits for its stopped workers (ms).
SHUTDOWN_WAIT_MS = 15_000


def shutdown(w: SamBoxesWidget, reason: str) -> None:
    """Stop for good: pending boxes saved, runs stopped, layers let go, the
    preview no longer following the mouse, the controls disabled."""
    if w._closed:
        return
    w._closed = True
    if w.folder_mode is not None:
        w.folder_mode.close()
    if w.current_run is not None:
        w.current_run.stop(reason)
    unwire_layers(w)
    with contextlib.suppress(ValueError):
        w.viewer.mouse_move_callbacks.remove(w.preview.on_mouse_move)
    with contextlib.suppress(RuntimeError):  # Qt deleted it already
        w.enabled = False  # its keys press disabled buttons
    # the stopped workers end at their next batch; wait for them, so none
    # emits into deleted Qt objects (an abort at exit)
    from qtpy.QtCore import QThreadPool

    pool = QThreadPool.globalInstance()
    if pool is not None:
        pool.waitForDone(SHUTDOWN_WAIT_MS)


def layer_boxes(w: SamBoxesWidget) -> Boxes | None:
    """Boxes already in the current image's boxes layer (a reopened panel, a
    table opened as that layer): they seed the image's first visit."""
    ls = w.layers
    if ls is None or ls.get("boxes") is None:
        return None
    try:
        return ls.read_boxes(w._hand_defaults())
    except ValueError:  # a shape that is no box: the session starts empty
        return None
