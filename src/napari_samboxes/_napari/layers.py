"""The plugin's layers: each owned by one :class:`LayerBinding`.

* A :class:`LayerBinding` owns one layer the plugin created and the image
  key it belongs to. It keeps the layer by reference (renaming it changes
  nothing; a user's own layer of the same name is never taken over), wires
  the layer's events, and lets go of them when the panel closes. Layers a
  closed panel let go of are marked in their metadata, so that a panel
  opened later on the same image takes them up again (their boxes kept).
* :class:`ImageLayers` are the layers of one image layer being annotated:
  candidates, picks, boxes, labels and preview. Every redraw goes through
  it, and the boxes are redrawn by difference (a pick adds one shape, an
  undo of it removes one), never by recomputing every shape: napari's
  Shapes layer does per-shape Python work.
* Box labels are text in a Points layer of their own (napari's Shapes text
  is quadratic in the number of shapes), black or white by the brightness
  of the image under them, and hidden above :data:`LABELS_MAX` boxes (the
  edge colour still tells the class).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd

from ..boxes import Boxes
from ..classes import ClassList
from ..geometry import boxes_from_shapes, shapes_from_boxes

__all__ = [
    "BOX_STYLE",
    "CANDIDATE_STYLE",
    "LABELS_MAX",
    "META",
    "ImageLayers",
    "LayerBinding",
    "box_features",
    "label_text",
]

#: The metadata entry marking the plugin's layers.
META = "napari_samboxes"
#: Box labels are drawn for at most this many boxes of an image.
LABELS_MAX = 300
#: Edits of the boxes layer redrawn shape by shape up to this many rows;
#: more are one assignment of the whole layer.
_PATCH_MAX = 8

CANDIDATE_STYLE: dict[str, Any] = {
    "shape_type": "rectangle",
    "edge_color": "cyan",
    "face_color": "transparent",
    "edge_width": 1,
    "opacity": 0.6,
}
#: The boxes layer's style (also what the box-table reader opens a table
#: with, there with its labels as text).
BOX_STYLE: dict[str, Any] = {
    "shape_type": "rectangle",
    "edge_color": "yellow",
    "face_color": "transparent",
    "edge_width": 2,
    "text": {"string": "{label}", "anchor": "upper_left", "color": "white", "size": 12},
}


def box_features(boxes: Boxes) -> pd.DataFrame:
    """The boxes layer's features table for ``boxes``."""
    return pd.DataFrame(
        {
            "label": pd.Series(list(boxes.labels), dtype=object),
            "score": pd.Series(boxes.scores, dtype=float),
            "source": pd.Series(list(boxes.sources), dtype=object),
        }
    )


def label_text(value: Any) -> str:
    """A label feature value as text (missing: None, NaN, pd.NA -> "")."""
    missing = value is None or (pd.api.types.is_scalar(value) and pd.isna(value))
    return "" if missing else str(value)


class LayerBinding:
    """One layer of the plugin, the image key it belongs to, its events.

    Parameters
    ----------
    viewer : napari.Viewer
    role : str
        ``candidates``, ``picks``, ``boxes``, ``labels`` or ``preview``.
    make : callable
        Adds the layer to the viewer and returns it.
    image_id : str
        The ``unique_id`` of the image layer it belongs to (in metadata).
    """

    def __init__(
        self, viewer: Any, role: str, make: Callable[[], Any], image_id: str
    ) -> None:
        self.viewer = viewer
        self.role = role
        self.image_id = image_id
        self._make = make
        self.layer: Any = None
        #: The session key of the image whose data the layer shows.
        self.key = ""
        self._handlers: list[tuple[str, Callable[[Any], Any]]] = []

    def get(self) -> Any:
        """The layer, or None when there is none (or the user removed it)."""
        layer = self.layer
        if layer is not None and layer in self.viewer.layers:
            return layer
        return None

    def ensure(self) -> Any:
        """The layer, created (without changing the active layer) if missing."""
        layer = self.get()
        if layer is None:
            self._disconnect()
            keep = self.viewer.layers.selection.active
            layer = self._make()
            if keep is not None and keep in self.viewer.layers:
                self.viewer.layers.selection.active = keep  # adding selects
            self._take(layer)
        return layer

    def adopt(self, layer: Any) -> None:
        """Own an existing layer (one a closed panel let go of)."""
        self._disconnect()
        self._take(layer)

    def _take(self, layer: Any) -> None:
        self.layer = layer
        layer.metadata[META] = {"role": self.role, "image": self.image_id, "own": 1}
        for name, handler in self._handlers:
            _emitter(layer, name).connect(handler)

    def on(self, event: str, handler: Callable[[Any], Any]) -> None:
        """Call ``handler`` on the layer's ``event`` (now and after a
        re-creation); ``"selection"`` is a change of its selected shapes."""
        self._handlers.append((event, handler))
        if self.layer is not None:
            _emitter(self.layer, event).connect(handler)

    def _disconnect(self) -> None:
        if self.layer is None:
            return
        for name, handler in self._handlers:
            with contextlib.suppress(Exception):
                _emitter(self.layer, name).disconnect(handler)
        self.layer = None

    def release(self) -> None:
        """Stop listening and mark the layer free for a later panel."""
        layer = self.layer
        self._disconnect()
        if layer is not None and isinstance(layer.metadata.get(META), dict):
            layer.metadata[META] = {**layer.metadata[META], "own": 0}

    def remove(self) -> None:
        """Remove the layer from the viewer (after letting go of it)."""
        layer = self.get()
        self.release()
        if layer is not None:
            self.viewer.layers.remove(layer)


def _emitter(layer: Any, event: str) -> Any:
    if event == "selection":
        return layer.selected_data.events.items_changed
    return getattr(layer.events, event)


class ImageLayers:
    """The layers of one image layer being annotated (see the module docstring).

    Parameters
    ----------
    viewer : napari.Viewer
    image : napari.layers.Image
        Layers share its scale and translate, and are named after it.
    key : str
        The session key of the image shown.
    """

    def __init__(self, viewer: Any, image: Any, key: str) -> None:
        self.viewer = viewer
        self.image = image
        self.key = key
        self.prefix = image.name
        iid = str(image.unique_id)
        make = {
            "candidates": self._make_candidates,
            "picks": self._make_picks,
            "boxes": self._make_boxes,
            "labels": self._make_labels,
            "preview": self._make_preview,
        }
        self.bindings = {r: LayerBinding(viewer, r, f, iid) for r, f in make.items()}
        #: What the boxes layer shows (row i is shape i).
        self.shown = Boxes()
        self._rendering = 0
        self._preview: tuple[float, ...] | None = None
        self._adopt_released(iid)

    # -- layers ------------------------------------------------------------------
    def _adopt_released(self, image_id: str) -> None:
        for layer in self.viewer.layers:
            meta = layer.metadata.get(META)
            if not isinstance(meta, dict) or meta.get("image") != image_id:
                continue
            binding = self.bindings.get(str(meta.get("role")))
            if binding is not None and not meta.get("own") and binding.layer is None:
                binding.adopt(layer)

    def _geometry(self, role: str) -> dict[str, Any]:
        return {
            "ndim": self.image.ndim,
            "scale": self.image.scale,
            "translate": self.image.translate,
            "name": f"{self.prefix} {role}",
        }

    def _make_candidates(self) -> Any:
        return self.viewer.add_shapes(**CANDIDATE_STYLE, **self._geometry("candidates"))

    def _make_picks(self) -> Any:
        # a red cross with a white rim, 12 to 28 screen pixels at any zoom
        layer = self.viewer.add_points(
            face_color="#ff2020",
            border_color="white",
            border_width=0.2,
            size=9,
            symbol="cross",
            canvas_size_limits=(12, 28),
            **self._geometry("picks"),
        )
        layer.mode = "pan_zoom"  # clicks pick (see input.py), drags pan
        return layer

    def _make_boxes(self) -> Any:
        style = {k: v for k, v in BOX_STYLE.items() if k not in ("shape_type", "text")}
        return self.viewer.add_shapes(
            features=box_features(Boxes()),
            shape_type="rectangle",
            **style,
            **self._geometry("boxes"),
        )

    def _make_labels(self) -> Any:
        layer = self.viewer.add_points(
            features=pd.DataFrame(
                {
                    "label": pd.Series([], dtype=object),
                    "ink": pd.Series([], dtype=object),
                }
            ),
            size=1,
            face_color="transparent",
            border_width=0,
            text={
                "string": "{label}",
                "anchor": "upper_left",
                "size": 12,
                "color": {"feature": "ink"},
            },
            blending="translucent_no_depth",
            **self._geometry("labels"),
        )
        layer.editable = False
        return layer

    def _make_preview(self) -> Any:
        return self.viewer.add_shapes(
            shape_type="rectangle",
            edge_color="magenta",
            face_color="transparent",
            edge_width=3,
            opacity=0.9,
            **self._geometry("preview"),
        )

    def rename(self, prefix: str) -> None:
        """Name the layers after another image (a folder shown in them)."""
        self.prefix = prefix
        for role, binding in self.bindings.items():
            layer = binding.get()
            if layer is not None:
                layer.name = f"{prefix} {role}"

    def layer(self, role: str) -> Any:
        """The layer of a role, or None."""
        return self.bindings[role].get()

    def ensure(self, role: str) -> Any:
        """The layer of a role, created if missing."""
        return self.bindings[role].ensure()

    def release(self) -> None:
        """Let go of every layer (a closed panel)."""
        for b in self.bindings.values():
            b.release()

    @property
    def rendering(self) -> bool:
        """True while the plugin itself changes its layers (their events are
        not user edits then)."""
        return self._rendering > 0

    @contextlib.contextmanager
    def render_guard(self) -> Iterator[None]:
        """Mark layer changes made inside as the plugin's own."""
        self._rendering += 1
        try:
            yield
        finally:
            self._rendering -= 1

    # -- candidates and preview ----------------------------------------------
    def show_candidates(
        self, boxes: np.ndarray, slice_index: tuple[int, ...], visible: bool
    ) -> None:
        """Draw the candidates (only while they are visible: hidden ones
        cost nothing)."""
        layer = self.layer("candidates")
        if not visible:
            if layer is not None:
                layer.visible = False
            return
        layer = self.ensure("candidates")
        sl = np.tile(np.asarray(slice_index, float), (len(boxes), 1))
        with self.render_guard():
            layer.data = [(v, "rectangle") for v in shapes_from_boxes(boxes, sl)]
            layer.visible = True

    def set_preview(self, box: np.ndarray | None, slice_index: tuple[int, ...]) -> None:
        """Show one box in the preview layer (None: show nothing)."""
        key = None if box is None else (*box, *slice_index)
        if key == self._preview and self.layer("preview") is not None:
            return
        self._preview = key
        if box is None:
            layer = self.layer("preview")
            if layer is not None and len(layer.data):
                layer.data = []
            return
        layer = self.ensure("preview")
        sl = np.asarray(slice_index, float)[None]
        layer.data = [(shapes_from_boxes(np.asarray(box)[None], sl)[0], "rectangle")]

    def clear_picks(self) -> None:
        """Remove pending picks (another image is shown)."""
        picks = self.layer("picks")
        if picks is not None and len(picks.data):
            with self.render_guard():
                picks.data = np.zeros((0, picks.ndim))

    # -- boxes -----------------------------------------------------------------
    def show_boxes(self, boxes: Boxes, classes: ClassList) -> Any:
        """Make the boxes layer show ``boxes``, changing only what differs."""
        layer = self.ensure("boxes")
        old = self.shown
        with self.render_guard():
            if len(layer.data) != len(old):  # napari changed it behind us
                self._reset(layer, boxes, classes)
            elif boxes is not old and boxes != old:
                self._patch(layer, old, boxes, classes)
            self.shown = boxes
            self._show_labels(boxes)
        return layer

    def _reset(self, layer: Any, boxes: Boxes, classes: ClassList) -> None:
        layer.selected_data = set()
        verts = shapes_from_boxes(boxes.xyxy, boxes.slices)
        layer.data = [(v, "rectangle") for v in verts]
        layer.features = box_features(boxes)
        if len(boxes):
            layer.edge_color = [classes.colour(lb) for lb in boxes.labels]
            layer.edge_width = [BOX_STYLE["edge_width"]] * len(boxes)

    def _patch(self, layer: Any, old: Boxes, new: Boxes, classes: ClassList) -> None:
        same = _same_rows(old, new)
        k = int(np.argmin(same)) if not same.all() else len(same)  # common prefix
        if len(old) == len(new) and _same_geometry(old, new):  # labels, scores
            layer.features = box_features(new)
            if any(a != b for a, b in zip(old.labels, new.labels, strict=True)):
                layer.edge_color = [classes.colour(lb) for lb in new.labels]
            return
        gone = _removed_rows(old, new)
        if gone is not None:
            layer.selected_data = set()
            layer.remove(gone)
            layer.features = box_features(new)
            return
        if (len(old) - k) + (len(new) - k) > _PATCH_MAX:
            return self._reset(layer, new, classes)
        if k < len(old):
            layer.selected_data = set()
            layer.remove(list(range(k, len(old))))
        tail = new.subset(np.arange(k, len(new)))
        if len(tail):
            layer.add_rectangles(
                shapes_from_boxes(tail.xyxy, tail.slices),
                edge_color=[classes.colour(lb) for lb in tail.labels],
                edge_width=BOX_STYLE["edge_width"],
                face_color="transparent",
            )
        layer.features = box_features(new)

    def mark_selected(self) -> None:
        """Draw the selected boxes with thick edges (napari outlines a
        selection only in its select tools)."""
        layer = self.layer("boxes")
        if layer is None or len(layer.data) != len(self.shown):
            return
        chosen = set(layer.selected_data)
        width = BOX_STYLE["edge_width"]
        widths = [2 * width if i in chosen else width for i in range(len(layer.data))]
        if list(layer.edge_width) != widths:
            with self.render_guard():
                layer.edge_width = widths

    def recolour(self, classes: ClassList) -> None:
        """Give every box its class's colour again (the class list changed)."""
        layer = self.layer("boxes")
        if layer is not None and len(self.shown) == len(layer.data) > 0:
            with self.render_guard():
                layer.edge_color = [classes.colour(lb) for lb in self.shown.labels]

    def _show_labels(self, boxes: Boxes) -> None:
        n = len(boxes)
        layer = self.layer("labels")
        if n == 0 or n > LABELS_MAX:
            if layer is not None and len(layer.data):
                layer.data = np.zeros((0, layer.ndim))
            return
        layer = self.ensure("labels")
        corner = np.column_stack([boxes.xyxy[:, 1] - 0.5, boxes.xyxy[:, 0] - 0.5])
        pts = np.hstack([boxes.slices, corner]) if boxes.slices.size else corner
        ink = _ink(self.image, boxes)
        layer.data = pts
        layer.features = pd.DataFrame(
            {
                "label": pd.Series(list(boxes.labels), dtype=object),
                "ink": pd.Series(ink, dtype=object),
            }
        )
        layer.text.refresh(layer.features)

    def read_boxes(self, defaults: dict[str, Any]) -> Boxes:
        """The boxes as the layer holds them now (after a napari edit).

        Rows without features (a hand-drawn shape) take ``defaults``; every
        box is snapped to whole pixels. Raises ``ShapeError`` (a
        ``ValueError``) for a shape that is no box.
        """
        layer = self.ensure("boxes")
        xyxy, slices = boxes_from_shapes(layer.data)
        n = len(xyxy)
        feats = layer.features

        def col(name: str) -> list[Any]:
            vals = list(feats[name])[:n] if name in feats else []
            return vals + [defaults.get(name)] * (n - len(vals))

        labels = [label_text(v) for v in col("label")]
        sources = [s if isinstance(s, str) else "hand" for s in col("source")]
        return Boxes(
            np.round(xyxy),
            tuple(labels),
            np.asarray(col("score"), float),
            tuple(sources),
            np.round(slices),
        )

    def read_labels(self) -> list[str] | None:
        """The boxes layer's ``label`` feature as text, or None."""
        layer = self.layer("boxes")
        if layer is None or "label" not in layer.features:
            return None
        return [label_text(v) for v in layer.features["label"]]


def _same_rows(a: Boxes, b: Boxes) -> np.ndarray:
    """(min(len)) bool: rows equal in every field."""
    n = min(len(a), len(b))
    same = np.all(a.xyxy[:n] == b.xyxy[:n], axis=1)
    same &= np.all(a.slices[:n] == b.slices[:n], axis=1) if a.slices.shape[1] else True
    same &= (a.scores[:n] == b.scores[:n]) | (
        np.isnan(a.scores[:n]) & np.isnan(b.scores[:n])
    )
    same &= np.array(
        [x == y for x, y in zip(a.labels[:n], b.labels[:n], strict=True)], dtype=bool
    ).reshape(n)
    same &= np.array(
        [x == y for x, y in zip(a.sources[:n], b.sources[:n], strict=True)], dtype=bool
    ).reshape(n)
    return np.asarray(same, dtype=bool).reshape(n)


def _same_geometry(a: Boxes, b: Boxes) -> bool:
    return bool(np.array_equal(a.xyxy, b.xyxy) and np.array_equal(a.slices, b.slices))


def _removed_rows(old: Boxes, new: Boxes) -> list[int] | None:
    """The rows of ``old`` whose removal gives ``new``, if that is all."""
    if len(new) >= len(old):
        return None
    keep, j = [], 0
    for i in range(len(old)):
        if j < len(new) and _row_equal(old, i, new, j):
            keep.append(i)
            j += 1
    if j != len(new):
        return None
    kept = set(keep)
    return [i for i in range(len(old)) if i not in kept]


def _row_equal(a: Boxes, i: int, b: Boxes, j: int) -> bool:
    sa, sb = a.scores[i], b.scores[j]
    return bool(
        np.array_equal(a.xyxy[i], b.xyxy[j])
        and np.array_equal(a.slices[i], b.slices[j])
        and a.labels[i] == b.labels[j]
        and a.sources[i] == b.sources[j]
        and (sa == sb or (np.isnan(sa) and np.isnan(sb)))
    )


def _ink(image: Any, boxes: Boxes) -> list[str]:
    """ "white" or "black" per box: the label's colour, by the brightness of
    the image just above the box's top-left corner, where it is drawn."""
    ink = ["white"] * len(boxes)
    data: Any = getattr(image, "data", None)
    if not isinstance(data, np.ndarray) or getattr(image, "multiscale", False):
        return ink  # lazy or multiscale data: not read on the UI thread
    rgb = bool(getattr(image, "rgb", False))
    lo, hi = (float(v) for v in image.contrast_limits)
    span = hi - lo if hi > lo else 1.0
    h, w = data.shape[-3:-1] if rgb else data.shape[-2:]
    for i, (x0, y0, _, _) in enumerate(boxes.xyxy):
        r0, r1 = int(max(0, y0 - 14)), int(max(1, y0))
        c0, c1 = int(max(0, x0)), int(min(w, x0 + 40))
        if r0 >= h or c0 >= c1:
            continue
        lead = tuple(int(v) for v in boxes.slices[i]) if boxes.slices.size else ()
        try:
            where: tuple[Any, ...] = (*lead, slice(r0, r1), slice(c0, c1))
            patch: Any = np.asarray(data[where], float)
        except (IndexError, ValueError):
            continue
        if rgb:
            patch = patch[..., :3] @ np.array([0.299, 0.587, 0.114])
        if patch.size and (np.nanmean(patch) - lo) / span > 0.55:
            ink[i] = "black"
    return ink
