"""The napari side of the session: layer styles, get-or-create, rendering.

Everything the widget shows goes through :class:`LayerSet`: one set of
layers (candidates, picks, boxes) for the image being annotated. Each
render is one assignment of the layer's data; no layer is cleared and
filled shape by shape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .boxes import Boxes
from .geometry import boxes_from_shapes, shapes_from_boxes

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["BOX_STYLE", "CANDIDATE_STYLE", "LayerSet", "class_colour", "layer_key"]

CANDIDATE_STYLE: dict[str, Any] = {
    "shape_type": "rectangle",
    "edge_color": "cyan",
    "face_color": "transparent",
    "edge_width": 1,
    "opacity": 0.6,
}
BOX_STYLE: dict[str, Any] = {
    "shape_type": "rectangle",
    "edge_color": "yellow",
    "face_color": "transparent",
    "edge_width": 2,
    "text": {"string": "{label}", "anchor": "upper_left", "color": "white", "size": 10},
}
#: Distinct colours for classes (Okabe-Ito, then tab10-like).
_PALETTE = (
    "#E69F00",
    "#56B4E9",
    "#009E73",
    "#F0E442",
    "#0072B2",
    "#D55E00",
    "#CC79A7",
    "#FFFFFF",
    "#FF6F61",
    "#8DD3C7",
    "#BEBADA",
    "#FB8072",
)


def layer_key(image: Any) -> str:
    """The session's key for the boxes of an image layer (layer mode)."""
    return f"layer:{image.unique_id}"


def class_colour(index: int) -> str:
    """The colour of the ``index``-th class (cycles)."""
    return _PALETTE[index % len(_PALETTE)]


def _features(boxes: Boxes) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "label": pd.Series(list(boxes.labels), dtype=object),
            "score": pd.Series(boxes.scores, dtype=float),
            "source": pd.Series(list(boxes.sources), dtype=object),
        }
    )


def _label_text(value: Any) -> str:
    """A label feature value as text (missing: None, NaN, pd.NA -> "")."""
    missing = value is None or (pd.api.types.is_scalar(value) and pd.isna(value))
    return "" if missing else str(value)


class LayerSet:
    """The candidates, picks and boxes layers of one image layer.

    Parameters
    ----------
    viewer : napari.Viewer
    image : napari.layers.Image
        Layers share its scale and translate and are named after it.
    prefix : str
        Layer names are ``"<prefix> candidates"`` etc.
    """

    def __init__(self, viewer: napari.Viewer, image: Any, prefix: str) -> None:
        self.viewer = viewer
        self.image = image
        self.prefix = prefix
        self.classes: list[str] = []

    def name(self, role: str) -> str:
        """Name of the layer of a role (candidates, picks, boxes)."""
        return f"{self.prefix} {role}"

    def get(self, role: str) -> Any:
        """The layer of a role, or None."""
        layers = self.viewer.layers
        return layers[self.name(role)] if self.name(role) in layers else None  # noqa: SIM401

    def _geometry(self) -> dict[str, Any]:
        return {
            "ndim": self.image.ndim,
            "scale": self.image.scale,
            "translate": self.image.translate,
            "name": None,
        }

    def _ensure(self, role: str, make: Any) -> Any:
        layer = self.get(role)
        if layer is None:
            keep = self.viewer.layers.selection.active
            kw = self._geometry() | {"name": self.name(role)}
            layer = make(**kw)
            if keep is not None and keep in self.viewer.layers:
                self.viewer.layers.selection.active = keep  # adding selects
        return layer

    # -- candidates ------------------------------------------------------
    def show_candidates(self, boxes: np.ndarray, slice_index: tuple[int, ...]) -> Any:
        """Replace the candidates layer's rectangles in one assignment."""
        layer = self._ensure(
            "candidates", lambda **kw: self.viewer.add_shapes(**CANDIDATE_STYLE, **kw)
        )
        sl = np.tile(np.asarray(slice_index, float), (len(boxes), 1))
        verts = shapes_from_boxes(boxes, sl)
        layer.data = [(v, "rectangle") for v in verts]
        layer.edge_color = CANDIDATE_STYLE["edge_color"]
        layer.edge_width = CANDIDATE_STYLE["edge_width"]
        return layer

    def remove(self, role: str) -> None:
        """Remove a role's layer if present."""
        layer = self.get(role)
        if layer is not None:
            self.viewer.layers.remove(layer)

    # -- picks -------------------------------------------------------------
    def picks(self, activate: bool = True) -> Any:
        """The picks Points layer (created when missing), in add mode."""

        def make(**kw: Any) -> Any:
            # a red cross with a white rim, 12 to 28 screen pixels at any zoom
            return self.viewer.add_points(
                face_color="#ff2020",
                border_color="white",
                border_width=0.2,
                size=9,
                symbol="cross",
                canvas_size_limits=(12, 28),
                **kw,
            )

        layer = self._ensure("picks", make)
        if activate:
            self.viewer.layers.selection.active = layer
            layer.mode = "add"
        return layer

    # -- boxes -------------------------------------------------------------
    def boxes(self) -> Any:
        """The boxes layer (created when missing)."""

        def make(**kw: Any) -> Any:
            style = {k: v for k, v in BOX_STYLE.items() if k != "shape_type"}
            return self.viewer.add_shapes(
                features=_features(Boxes()), shape_type="rectangle", **style, **kw
            )

        return self._ensure("boxes", make)

    def show_boxes(self, boxes: Boxes) -> Any:
        """Render the boxes (geometry, features, class colours) at once."""
        layer = self.boxes()
        verts = shapes_from_boxes(boxes.xyxy, boxes.slices)
        with layer.events.data.blocker():
            layer.selected_data = set()
            layer.data = [(v, "rectangle") for v in verts]
            layer.features = _features(boxes)
            if len(boxes):
                layer.edge_color = [self.colour_of(lb) for lb in boxes.labels]
        layer.refresh_text()
        return layer

    def colour_of(self, label: str) -> str:
        """The colour of a class (classes get colours in list order)."""
        if label not in self.classes:
            self.classes.append(label)
        return class_colour(self.classes.index(label))

    def read_labels(self) -> list[str] | None:
        """The boxes layer's ``label`` feature as text, one per shape, or
        None without a boxes layer (or without that feature)."""
        layer = self.get("boxes")
        if layer is None or "label" not in layer.features:
            return None
        return [_label_text(v) for v in layer.features["label"]]

    def read_boxes(self, defaults: dict[str, Any]) -> Boxes:
        """The boxes as the layer holds them now (after a napari edit).

        Rows without features (a hand-drawn shape) take ``defaults``; every
        box is snapped to whole pixels.
        """
        layer = self.boxes()
        xyxy, slices = boxes_from_shapes(layer.data)
        n = len(xyxy)
        feats = layer.features

        def col(name: str) -> list[Any]:
            vals = list(feats[name])[:n] if name in feats else []
            return vals + [defaults.get(name)] * (n - len(vals))

        labels = [_label_text(v) for v in col("label")]
        sources = [s if isinstance(s, str) else "hand" for s in col("source")]
        return Boxes(
            np.round(xyxy),
            tuple(labels),
            np.asarray(col("score"), float),
            tuple(sources),
            np.round(slices),
        )
