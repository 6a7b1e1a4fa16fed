"""What the next click would give, drawn under the mouse.

After the first pick, the box the second click would choose follows the
cursor (thick magenta edge, dashed look from a white inner rim); with no
pick placed and ``show_candidates`` set to "under cursor", the smallest
candidate under the cursor is shown the same way. Neither is ever added to
the boxes. An update is one vectorised selection plus one layer assignment,
skipped when the box did not change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .geometry import shapes_from_boxes

if TYPE_CHECKING:  # pragma: no cover
    from ._widget import SamBoxesWidget

__all__ = ["DISPLAY_MODES", "Preview"]

#: Choices of the ``show_candidates`` control. "under cursor" is the
#: default: with hundreds of candidates, drawing them all hides the image.
DISPLAY_MODES = ("under cursor", "all", "none")


class Preview:
    """The preview layer of a widget and the mouse callback feeding it."""

    def __init__(self, widget: SamBoxesWidget) -> None:
        self.w = widget
        self._last: tuple[float, ...] | None = None
        widget.viewer.mouse_move_callbacks.append(self.on_mouse_move)

    def _layer(self) -> Any:
        ls = self.w.layers
        assert ls is not None
        return ls._ensure(
            "preview",
            lambda **kw: self.w.viewer.add_shapes(
                shape_type="rectangle",
                edge_color="magenta",
                face_color="transparent",
                edge_width=3,
                opacity=0.9,
                **kw,
            ),
        )

    def on_mouse_move(self, viewer: Any, event: Any) -> None:
        """napari mouse-move callback: update the preview."""
        ls = self.w.layers
        if ls is None or ls.image not in viewer.layers:
            return
        pos = np.asarray(ls.image.world_to_data(event.position), dtype=np.float64)
        self.update(pos)

    def update(self, cursor: np.ndarray) -> np.ndarray | None:
        """Show the preview for a cursor in the image's data coordinates;
        return the box shown (xyxy) or None."""
        ls = self.w.layers
        assert ls is not None
        picks = ls.get("picks")
        mode = str(self.w.show_candidates.value)
        pts = cursor[None, -2:]
        if picks is not None and len(picks.data) == 1:
            pts = np.vstack([np.asarray(picks.data)[0, -2:], pts])
        elif mode != "under cursor":
            return self._show(None)
        return self._show(self.w.session.preview(pts[:, ::-1]))

    def _show(self, box: np.ndarray | None) -> np.ndarray | None:
        key = None if box is None else tuple(box)
        if key == self._last:
            return box
        self._last = key
        layer = self._layer()
        if box is None:
            layer.data = []
        else:
            sl = np.asarray(self.w.session.slice_index, float)[None]
            layer.data = [(shapes_from_boxes(box[None], sl)[0], "rectangle")]
        return box

    def apply_mode(self) -> None:
        """Show or hide the candidates layer for the display mode."""
        ls = self.w.layers
        layer = ls.get("candidates") if ls is not None else None
        if layer is not None:
            layer.visible = str(self.w.show_candidates.value) == "all"
        self._last = ()  # force the next update
