"""The "SAM boxes" dock widget: a thin adapter between napari and the core.

Layers, named from the image layer's name:

* ``<image> candidates``: Shapes, the candidate boxes (thin rectangles);
* ``<image> picks``: Points, left in add mode: two clicks pick a box;
* ``<image> boxes``: Shapes, the annotations, with ``label`` and ``score``.

Layers are changed only on the main thread, from worker signals.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
)

from .geometry import shapes_from_boxes
from ._reader import BOX_STYLE
from .cache import CandidateCache, cache_key
from .engine import Candidates, RawMasks
from .image import to_rgb8
from .model import find_checkpoint
from .select import select_box

if TYPE_CHECKING:  # pragma: no cover
    import napari
    import napari.layers

    from .model import SamModel

__all__ = ["SamBoxesWidget"]

POINTS_PER_BATCH = 64
#: Multiscale images: the finest level whose longest side is at most this.
MAX_LEVEL_SIDE = 4096


class RunError(Exception):
    """A failure inside a run, as the worker reports it.

    superqt's generator worker takes a ``RuntimeError`` raised by the
    generator for "the worker was deleted" and stops without any signal, so
    runtime errors from torch are re-raised as this type.
    """


def _candidate_run(rgb8: np.ndarray, *args: Any) -> Any:
    """Worker body (runs in a thread): :func:`_candidate_steps`, with
    runtime errors re-raised as :class:`RunError`."""
    try:
        return (yield from _candidate_steps(rgb8, *args))
    except (MemoryError, RuntimeError) as e:
        if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
            h, w = rgb8.shape[:2]
            raise RunError(
                f"out of memory while segmenting the {w} x {h} image ({e}). "
                "Close other programs, use the CPU device, or segment a "
                "downscaled copy."
            ) from e
        raise RunError(str(e)) from e


def _candidate_steps(
    rgb8: np.ndarray,
    checkpoint: str,
    device: str,
    points_per_side: int,
    points_per_batch: int,
    model: SamModel | None,
    cache: CandidateCache,
) -> Any:
    from . import engine
    from .model import load_model

    if model is None:
        model = load_model(checkpoint, device=device)
    yield ("model", model)
    key = cache_key(rgb8, model.digest, points_per_side)
    raw = cache.load(key)
    if raw is not None:
        yield ("cached", raw)
        return raw
    parts: list[RawMasks] = []
    for bi, n, part in engine.iter_raw_batches(
        rgb8,
        model,
        points_per_side=points_per_side,
        points_per_batch=points_per_batch,
    ):
        parts.append(part)
        yield ("batch", bi, n, part)
    raw = RawMasks.concat(parts)
    cache.save(key, raw)
    return raw


class SamBoxesWidget(Container):
    """Segment everything with MobileSAM, then pick boxes with two clicks.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer (napari passes it).
    cache : CandidateCache, optional
        Where candidates are cached (default: the user cache).
    """

    def __init__(
        self, viewer: napari.viewer.Viewer, cache: CandidateCache | None = None
    ) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self._cache = cache if cache is not None else CandidateCache()
        self._worker: Any = None
        self._model: SamModel | None = None
        self._model_key: tuple[str, float, str] | None = None
        self._raw: RawMasks | None = None
        self._raw_parts: list[RawMasks] = []
        self._candidates = Candidates.empty()
        self._cand_layer_name: str | None = None
        self._cand_image: Any = None  # the image layer the candidates belong to
        self._cand_scale = (1.0, 1.0)
        self._pending_scale = (1.0, 1.0)
        self._abort_reason = ""
        self._closed = False
        self._run_image: Any = None
        self._cand_slice: tuple[int, ...] = ()
        self._snapshot: tuple[Any, ...] | None = None
        self._picking = False
        self._picks_layer: Any = None
        self._points_per_batch = POINTS_PER_BATCH

        found = find_checkpoint()
        self.extend(
            [
                ComboBox(name="image", label="image", choices=self._image_choices),
                FileEdit(
                    name="checkpoint",
                    label="checkpoint",
                    mode="r",  # type: ignore[arg-type]
                    filter="*.pt",
                    value=str(found) if found else "",  # type: ignore[arg-type]
                ),
                PushButton(name="download", text="Download weights"),
                ComboBox(
                    name="device",
                    label="device",
                    choices=["auto", "cpu", "cuda", "mps"],
                ),
                SpinBox(
                    name="points_per_side",
                    label="points per side",
                    value=32,
                    min=1,
                    max=128,
                ),
                FloatSpinBox(
                    name="pred_iou_thresh",
                    label="pred IoU thresh",
                    value=0.88,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                ),
                FloatSpinBox(
                    name="stability_score_thresh",
                    label="stability thresh",
                    value=0.95,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                ),
                FloatSpinBox(
                    name="box_nms_thresh",
                    label="box NMS thresh",
                    value=0.7,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                ),
                LineEdit(name="box_label", label="label", value="object"),
                PushButton(name="run", text="Run"),
                PushButton(name="cancel", text="Cancel", enabled=False),
                Label(name="status", label="", value=""),
            ]
        )
        self._add_callbacks()
        self._update_checkpoint_status()
        self._on_active_layer()

    # ------------------------------------------------------------------
    def _add_callbacks(self) -> None:
        self.run.changed.connect(self._on_run)
        self.cancel.changed.connect(self._on_cancel)
        self.download.changed.connect(self._on_download)
        self.checkpoint.changed.connect(self._update_checkpoint_status)
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"):
            self[name].changed.connect(self._on_thresholds)
        layers = self._viewer.layers
        layers.events.inserted.connect(self._reset_images)
        layers.events.removed.connect(self._reset_images)
        layers.events.removed.connect(self._on_layer_removed)
        self.native.destroyed.connect(self._on_closed)
        layers.selection.events.active.connect(self._on_active_layer)

    def _image_choices(self, _: Any = None) -> list[tuple[str, Any]]:
        from napari.layers import Image

        return [(la.name, la) for la in self._viewer.layers if isinstance(la, Image)]

    def _reset_images(self, event: Any = None) -> None:
        self.image.reset_choices()

    def _on_active_layer(self, event: Any = None) -> None:
        from napari.layers import Image

        active = self._viewer.layers.selection.active
        if isinstance(active, Image) and active in [
            c[1] for c in self._image_choices()
        ]:
            self.image.value = active

    def _update_checkpoint_status(self, event: Any = None) -> None:
        path = Path(str(self.checkpoint.value)) if str(self.checkpoint.value) else None
        if path is None or str(path) in ("", ".") or not path.is_file():
            self.status.value = (
                "No MobileSAM checkpoint: choose mobile_sam.pt or press "
                "'Download weights' (about 39 MB)."
            )
            self.download.enabled = True
        else:
            self.status.value = f"checkpoint: {path.name}"

    # ------------------------------------------------------------------
    # layers
    def _layer(self, name: str) -> Any:
        return self._viewer.layers[name] if name in self._viewer.layers else None  # noqa: SIM401

    def _geometry(self, image: napari.layers.Image) -> dict[str, Any]:
        return {"scale": image.scale, "translate": image.translate}

    def _candidates_layer(self, image: napari.layers.Image) -> Any:
        name = f"{image.name} candidates"
        layer = self._layer(name)
        if layer is None:
            layer = self._viewer.add_shapes(
                ndim=image.ndim,
                name=name,
                shape_type="rectangle",
                edge_color="cyan",
                face_color="transparent",
                edge_width=1,
                opacity=0.6,
                **self._geometry(image),
            )
        return layer

    def _boxes_layer(self, image: napari.layers.Image) -> Any:
        name = f"{image.name} boxes"
        layer = self._layer(name)
        if layer is None:
            style = {k: v for k, v in BOX_STYLE.items() if k != "shape_type"}
            layer = self._viewer.add_shapes(
                ndim=image.ndim,
                name=name,
                features=pd.DataFrame(
                    {"label": pd.Series(dtype=object), "score": pd.Series(dtype=float)}
                ),
                **style,
                **self._geometry(image),
            )
            if (
                self._picks_layer is not None
                and self._picks_layer in self._viewer.layers
            ):
                # adding a layer selects it: keep clicks going to the picks
                self._viewer.layers.selection.active = self._picks_layer
                self._picks_layer.mode = "add"
        return layer

    def _picks_layer_for(self, image: napari.layers.Image) -> Any:
        name = f"{image.name} picks"
        layer = self._layer(name)
        if layer is None:
            layer = self._viewer.add_points(
                ndim=image.ndim,
                name=name,
                size=max(3.0, 0.01 * float(np.ptp(image.extent.data[:, -2:], 0).max())),
                face_color="red",
                **self._geometry(image),
            )
        if layer is not self._picks_layer:
            if self._picks_layer is not None:
                try:
                    self._picks_layer.events.data.disconnect(self._on_picks_data)
                except (TypeError, ValueError, RuntimeError):
                    pass
            layer.events.data.connect(self._on_picks_data)
            self._picks_layer = layer
        self._viewer.layers.selection.active = layer
        layer.mode = "add"
        return layer

    def _show_candidates(self) -> None:
        image = self._cand_image
        if image is None or image not in self._viewer.layers:
            return
        layer = self._candidates_layer(image)
        self._cand_layer_name = layer.name
        verts = shapes_from_boxes(
            self._candidates.boxes,
            np.tile(np.asarray(self._cand_slice, float), (len(self._candidates), 1)),
        )
        layer.data = []
        if verts:
            layer.add_rectangles(
                verts, edge_width=1, edge_color="cyan", face_color="transparent"
            )
        layer.refresh()

    # ------------------------------------------------------------------
    # running
    def _current_plane(
        self, image: napari.layers.Image
    ) -> tuple[np.ndarray, tuple[int, ...], tuple[float, float]]:
        """The plane to segment, its slice index, and its (x, y) scale to
        level-0 pixels (multiscale data: the finest level that fits)."""
        data = image.data
        scale = (1.0, 1.0)
        if getattr(image, "multiscale", False):
            levels = list(data)
            chosen = levels[-1]
            for lvl in levels:
                hw = lvl.shape[-3:-1] if image.rgb else lvl.shape[-2:]
                if max(hw) <= MAX_LEVEL_SIDE:
                    chosen = lvl
                    break
            full = levels[0].shape
            sh = (-3, -2) if image.rgb else (-2, -1)
            scale = (
                full[sh[1]] / chosen.shape[sh[1]],
                full[sh[0]] / chosen.shape[sh[0]],
            )
            data = chosen
        n_lead = image.ndim - 2
        if n_lead <= 0:
            return np.asarray(data), (), scale
        point = image.world_to_data(self._viewer.dims.point[-image.ndim :])
        shape = data.shape
        idx = tuple(
            int(np.clip(round(float(point[i])), 0, shape[i] - 1)) for i in range(n_lead)
        )
        return np.asarray(data[idx]), idx, scale

    def _filtered(self) -> Candidates:
        """Candidates of the raw results at the current thresholds, in the
        image layer's (level-0) pixel coordinates."""
        assert self._raw is not None
        c = self._raw.candidates(*self._thresholds())
        sx, sy = self._cand_scale
        if (sx, sy) != (1.0, 1.0) and len(c):
            b = c.boxes.copy()
            # pixel i of the level covers level-0 pixels i*s .. (i+1)*s - 1
            b[:, 0] *= sx
            b[:, 1] *= sy
            b[:, 2] = (b[:, 2] + 1) * sx - 1
            b[:, 3] = (b[:, 3] + 1) * sy - 1
            c = Candidates(b, c.areas, c.scores, c.stability, c.points)
        return c

    def _thresholds(self) -> tuple[float, float, float]:
        return (
            float(self.pred_iou_thresh.value),
            float(self.stability_score_thresh.value),
            float(self.box_nms_thresh.value),
        )

    def _on_run(self, event: Any = None) -> None:
        from napari.qt.threading import thread_worker
        from napari.utils.notifications import show_error, show_info

        if self._worker is not None:
            show_info("SAM boxes: a run is already going; cancel it first.")
            return
        image = self.image.value
        if image is None:
            show_error("SAM boxes: open or select an image layer first.")
            return
        ckpt = str(self.checkpoint.value) if str(self.checkpoint.value) else ""
        if not ckpt or not Path(ckpt).is_file():
            show_error(
                "SAM boxes: no checkpoint file. Choose mobile_sam.pt or press "
                "'Download weights'."
            )
            return
        shape0 = (image.data[0] if image.multiscale else image.data).shape
        if not image.rgb and image.ndim >= 3 and shape0[-1] in (3, 4):
            from napari.utils.notifications import show_warning

            show_warning(
                f"SAM boxes: '{image.name}' looks like colour data but its layer "
                "has rgb=False; segmenting the current 2D slice. Open it with "
                "rgb=True to segment it in colour."
            )
        try:
            plane, idx, scale = self._current_plane(image)
            rgb8 = to_rgb8(plane, image.contrast_limits, image.rgb)
        except ValueError as e:
            show_error(f"SAM boxes: {e}")
            return
        device = str(self.device.value)
        pps = int(self.points_per_side.value)
        p = Path(ckpt)
        mkey = (str(p.resolve()), p.stat().st_mtime, device)
        model = self._model if self._model_key == mkey else None
        ppb = self._points_per_batch
        n_batches = math.ceil(pps * pps / ppb)

        old = self._layer(f"{image.name} candidates")
        self._snapshot = (
            self._cand_image,
            image.name,
            old is not None,
            [np.array(s) for s in old.data] if old is not None else [],
            self._raw,
            self._candidates,
            self._cand_slice,
            self._cand_scale,
        )
        self._raw_parts = []
        self._run_image = image
        self._pending_slice = idx
        self._pending_scale = scale
        self._abort_reason = ""
        image.events.data.connect(self._on_run_image_data)
        self._pending_key = mkey

        worker = thread_worker(
            _candidate_run,
            progress={"total": n_batches + 1, "desc": "SAM candidates"},
            start_thread=False,
            ignore_errors=True,  # handled by _on_errored
        )(rgb8, ckpt, device, pps, ppb, model, self._cache)
        worker.yielded.connect(self._on_yielded)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.run.enabled = False
        self.cancel.enabled = True
        self.status.value = "loading model and encoding image..."
        worker.start()

    def _on_yielded(self, msg: tuple[Any, ...]) -> None:
        if self._closed or self._abort_reason:
            return
        kind = msg[0]
        if kind == "model":
            self._model = msg[1]
            self._model_key = self._pending_key
            self.status.value = "encoding image..."
            return
        if kind == "cached":
            self._set_raw(msg[1])
            self.status.value = f"{len(self._candidates)} candidates (from cache)"
            self._picks_layer_for(self._cand_image)
            return
        _, bi, n, part = msg
        first = not self._raw_parts
        self._raw_parts.append(part)
        self._set_raw(RawMasks.concat(self._raw_parts))
        self.status.value = f"batch {bi + 1}/{n}: {len(self._candidates)} candidates"
        if first and self._cand_image in self._viewer.layers:
            self._picks_layer_for(self._cand_image)

    def _set_raw(self, raw: RawMasks) -> None:
        self._raw = raw
        self._cand_image = self._run_image
        self._cand_slice = self._pending_slice
        self._cand_scale = self._pending_scale
        self._candidates = self._filtered()
        self._show_candidates()

    def _on_returned(self, raw: RawMasks) -> None:
        if self._closed:
            return
        self._set_raw(raw)
        self._snapshot = None
        if not self.status.value.endswith("(from cache)"):
            self.status.value = f"{len(self._candidates)} candidates"

    def _restore(self) -> None:
        if self._snapshot is None:
            return
        cand_image, name, existed, data, raw, cands, sl, sc = self._snapshot
        self._snapshot = None
        self._raw, self._candidates, self._cand_slice = raw, cands, sl
        self._cand_scale = sc
        self._cand_image = cand_image
        layer = self._layer(f"{name} candidates")
        if layer is None:
            return
        if not existed:
            self._viewer.layers.remove(layer)
        else:
            layer.data = []
            if data:
                layer.add_rectangles(
                    data, edge_width=1, edge_color="cyan", face_color="transparent"
                )

    def _on_errored(self, exc: BaseException) -> None:
        from napari.utils.notifications import show_error

        if self._closed:
            return
        self._restore()
        self.status.value = f"error: {exc}"
        show_error(f"SAM boxes: {exc}")

    def _on_aborted(self) -> None:
        if self._closed:
            return
        self._restore()
        if self._abort_reason:
            from napari.utils.notifications import show_warning

            show_warning(f"SAM boxes: run stopped: {self._abort_reason}.")
            self.status.value = f"stopped: {self._abort_reason}"
        else:
            self.status.value = "cancelled"

    def _on_finished(self) -> None:
        self._worker = None
        if self._run_image is not None:
            try:
                self._run_image.events.data.disconnect(self._on_run_image_data)
            except (TypeError, ValueError, RuntimeError):
                pass
        if self._closed:
            return
        self.run.enabled = True
        self.cancel.enabled = False

    def _stop(self, reason: str) -> None:
        if self._worker is not None:
            self._abort_reason = reason
            self._worker.quit()

    def _on_run_image_data(self, event: Any = None) -> None:
        self._stop("the image data changed during the run; candidates discarded")

    def _on_layer_removed(self, event: Any) -> None:
        layer = event.value
        if layer is self._run_image and self._worker is not None:
            self._stop(f"the image layer '{layer.name}' was removed")
        if layer is self._picks_layer:
            self._picks_layer = None  # recreated by the next run

    def _on_closed(self, *args: Any) -> None:
        """The viewer (and this widget) closes: stop the worker at once."""
        self._closed = True
        if self._worker is not None:
            self._worker.quit()

    def _on_cancel(self, event: Any = None) -> None:
        if self._worker is not None:
            self.status.value = "cancelling..."
            self._worker.quit()

    def _on_thresholds(self, event: Any = None) -> None:
        if self._raw is None or self._cand_layer_name is None:
            return
        self._candidates = self._filtered()
        self._show_candidates()
        self.status.value = f"{len(self._candidates)} candidates"

    def _on_download(self, event: Any = None) -> None:
        from napari.qt.threading import thread_worker
        from napari.utils.notifications import show_error, show_info

        from .model import fetch_weights

        worker = thread_worker(fetch_weights, start_thread=False, ignore_errors=True)()

        def done(path: Path) -> None:
            self.checkpoint.value = str(path)
            show_info(f"SAM boxes: downloaded {path}")

        def failed(exc: BaseException) -> None:
            show_error(
                f"SAM boxes: download failed ({exc}). Download mobile_sam.pt by "
                "hand and choose it as the checkpoint."
            )
            self.download.enabled = True

        worker.returned.connect(done)
        worker.errored.connect(failed)
        self.download.enabled = False
        self.status.value = "downloading weights..."
        self._download_worker = worker
        worker.start()

    # ------------------------------------------------------------------
    # picking
    def _on_picks_data(self, event: Any = None) -> None:
        action = getattr(event, "action", "added")
        if getattr(action, "value", action) != "added" or self._picking:
            return
        layer = self._picks_layer
        if layer is None or len(layer.data) < 2:
            return
        self._picking = True
        try:
            self._pick(np.asarray(layer.data, dtype=np.float64))
        finally:
            layer.data = np.zeros((0, layer.ndim))
            self._picking = False

    def _pick(self, pts: np.ndarray) -> None:
        from napari.utils.notifications import show_info, show_warning

        image = self._cand_image
        if image is None or image not in self._viewer.layers:
            show_warning("SAM boxes: the image of these candidates is gone; press Run.")
            return
        if len(self._candidates) == 0:
            show_warning("SAM boxes: no candidates yet; press Run first.")
            return
        lead = pts[:, :-2]
        if lead.shape[1]:
            sl = tuple(int(v) for v in np.round(lead[0]))
            if sl != tuple(self._cand_slice):
                show_warning(
                    f"SAM boxes: the candidates are for slice {self._cand_slice}, "
                    f"the points on {sl}; press Run on this slice."
                )
                return
        xy = pts[:, [-1, -2]]
        lo = image.extent.data[0, -2:]
        hi = image.extent.data[1, -2:]
        rc = pts[:, -2:]
        if np.any(rc < lo - 0.5) or np.any(rc > hi + 0.5):
            show_info("SAM boxes: a point lies outside the image; pick again.")
            return
        idx = select_box(self._candidates, xy)
        if idx is None:
            show_info("SAM boxes: no candidate box contains both points.")
            return
        box = self._candidates.boxes[idx]
        score = float(self._candidates.scores[idx])
        verts = shapes_from_boxes(box[None], np.asarray(self._cand_slice, float)[None])
        boxes = self._boxes_layer(image)
        boxes.feature_defaults = {"label": str(self.box_label.value), "score": score}
        boxes.add_rectangles(verts)
        boxes.refresh_text()
