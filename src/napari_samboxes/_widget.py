"""The "SAM boxes" dock widget: controls wired to a :class:`Session`.

Each callback is a few lines: read a control or a layer, call the session
(or a run), render what it returns. State lives in the session; layers are
made and drawn by :mod:`napari_samboxes._layers`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import Container
from psygnal import Signal

from . import _controls, _editing, _keys, _lifecycle
from ._folder import open_folder, watch_dock, wire_layer
from ._layers import LayerSet, layer_key
from ._preview import Preview
from ._runner import CandidateRun
from .boxes import Boxes
from .cache import CandidateCache
from .model import find_checkpoint
from .pipeline import RunRequest
from .session import Change, Session
from .settings import Settings, SettingsError

if TYPE_CHECKING:  # pragma: no cover
    import napari

    from ._folder import FolderMode

__all__ = ["SamBoxesWidget"]


class SamBoxesWidget(Container):
    """Segment everything with MobileSAM, then pick boxes with two clicks.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer (napari passes it).
    cache : CandidateCache, optional
        Where candidates are cached (default: the user cache).
    points_per_batch : int, optional
        Prompts per batch (default: by device, see ``Settings.batch_for``).
    """

    #: Emitted when a run ends, with its outcome (see ``_runner``).
    run_finished = Signal(str)
    #: Emitted after every change of the boxes, with the new boxes.
    boxes_changed = Signal(object)

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        cache: CandidateCache | None = None,
        points_per_batch: int | None = None,
    ) -> None:
        super().__init__(labels=True)
        # napari's plugin proxy makes new layer proxies per access: unwrap (``is``)
        self.viewer = getattr(viewer, "__wrapped__", viewer)
        self.cache = cache if cache is not None else CandidateCache()
        self.session = Session(Settings(points_per_batch=points_per_batch))
        self.current_run: CandidateRun | None = None
        self.layers: LayerSet | None = None
        self._syncing = False
        self._closed = False
        self.current_request: RunRequest | None = None
        self.folder_mode: FolderMode | None = None
        self.extend(_controls.make_controls(self._image_choices, find_checkpoint()))
        self.native.setMaximumWidth(_controls.MAX_DOCK_WIDTH)
        self.preview = Preview(self)
        self._add_callbacks()
        self._update_checkpoint_status()
        self._on_active_layer()

    def _add_callbacks(self) -> None:
        self.run.changed.connect(self._on_run)
        self.cancel.changed.connect(self._on_cancel)
        self.download.changed.connect(lambda: _controls.start_download(self))
        self.checkpoint.changed.connect(self._update_checkpoint_status)
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"):
            self[name].changed.connect(self._on_thresholds)
        self.undo.changed.connect(lambda: self.apply(self.session.undo()))
        self.redo.changed.connect(lambda: self.apply(self.session.redo()))
        self.smaller.changed.connect(lambda: self.apply(self.session.step(-1)))
        self.larger.changed.connect(lambda: self.apply(self.session.step(+1)))
        self.tighten.changed.connect(lambda: _editing.on_tighten(self))
        self.relabel.changed.connect(lambda: _editing.on_relabel(self))
        self.folder.changed.connect(lambda: open_folder(self))
        self.next_image.changed.connect(lambda: self._folder_do("step", 1))
        self.prev_image.changed.connect(lambda: self._folder_do("step", -1))
        self.next_unannotated.changed.connect(
            lambda: self._folder_do("next_unannotated")
        )
        self.show_candidates.changed.connect(self.preview.apply_mode)
        self.box_label.changed.connect(self._on_class)
        self.box_label.classes_added.connect(lambda _: _controls.save_classes(self))
        self.classes_file.changed.connect(lambda: _controls.load_classes(self))
        layers = self.viewer.layers
        layers.events.inserted.connect(self._reset_images)
        layers.events.removed.connect(self._reset_images)
        layers.events.removed.connect(self._on_layer_removed)
        layers.selection.events.active.connect(self._on_active_layer)
        watch_dock(self)
        _keys.bind_viewer(self)

    # -- controls ----------------------------------------------------------
    def _image_choices(self, _: Any = None) -> list[tuple[str, Any]]:
        from napari.layers import Image

        return [(la.name, la) for la in self.viewer.layers if isinstance(la, Image)]

    def _reset_images(self, event: Any = None) -> None:
        self.image.reset_choices()

    def _on_active_layer(self, event: Any = None) -> None:
        active = self.viewer.layers.selection.active
        if active is not None and active in [c[1] for c in self._image_choices()]:
            self.image.value = active

    def _update_checkpoint_status(self, event: Any = None) -> None:
        path = Path(str(self.checkpoint.value or ""))
        found = str(self.checkpoint.value or "") not in ("", ".") and path.is_file()
        self.download.enabled = not found
        self.say(
            f"checkpoint: {path.name}"
            if found
            else "No checkpoint: choose mobile_sam.pt, or press "
            "'Download weights' (39 MB)."
        )

    def say(self, text: str) -> None:
        """Show a status line (wrapped in the dock, never widening it)."""
        if not self._closed:
            self.status.value = text
            self.status.native.setToolTip(text)

    def notify(self, text: str, level: str = "info") -> None:
        """A napari notification (``info``, ``warning`` or ``error``)."""
        from napari.utils import notifications

        getattr(notifications, f"show_{level}")(f"SAM boxes: {text}")

    def _on_class(self, event: Any = None) -> None:
        if self.layers is not None and self.layers.get("boxes") is not None:
            self.layers.boxes().feature_defaults = self._hand_defaults()

    def _hand_defaults(self) -> dict[str, Any]:
        return {"label": str(self.box_label.value), "score": np.nan, "source": "hand"}

    # -- layers --------------------------------------------------------------
    def _layers_for(self, image: Any) -> LayerSet:
        if self.layers is None or self.layers.image is not image:
            self.layers = LayerSet(self.viewer, image, image.name)
            self.session.show_image(layer_key(image), _lifecycle.layer_boxes(self))
        return self.layers

    def render_candidates(self) -> None:
        """Draw the session's candidates (removes the layer when none are
        committed and no run is going)."""
        ls = self.layers
        if ls is None or self._closed:
            return
        s = self.session
        gone = ls.image not in self.viewer.layers
        if gone or (s.committed is None and s.pending is None):
            ls.remove("candidates")
            return
        ls.show_candidates(s.candidates.boxes, s.slice_index)
        self.preview.apply_mode()
        new = ls.get("picks") is None or self.viewer.layers.selection.active is None
        wire_layer(self, ls.picks(activate=new), picks=True)  # one owner per layer

    def apply(self, change: Change) -> Change:
        """Render a change of the boxes and say what it did."""
        if change.message:
            self.say(change.message)
        if change.changed and self.layers is not None and not self._closed:
            self.show_boxes(change.boxes)
            self.boxes_changed.emit(change.boxes)
        return change

    def show_boxes(self, boxes: Boxes) -> None:
        """Render boxes (no undo step, no autosave): the session's own."""
        assert self.layers is not None
        self._syncing = True
        try:
            layer = self.layers.show_boxes(boxes)
            layer.feature_defaults = self._hand_defaults()
            wire_layer(self, layer, picks=False)
        finally:
            self._syncing = False

    # -- running -------------------------------------------------------------
    def _on_run(self, event: Any = None) -> None:
        if self.current_run is not None:
            self.notify("a run is already going; cancel it first.")
            return
        image = self.image.value
        ckpt = str(self.checkpoint.value or "")
        if image is None:
            return self.notify("open or select an image layer first.", "error")
        if ckpt in ("", ".") or not Path(ckpt).is_file():
            return self.notify(
                "no checkpoint file. Choose mobile_sam.pt or press 'Download weights'.",
                "error",
            )
        try:
            request = _controls.run_request(self, image, ckpt)
        except (SettingsError, ValueError) as e:
            return self.notify(str(e), "error")
        if self.folder_mode is not None:  # the foreground goes first
            self.folder_mode.stop_background()
        if self.layers is None or self.layers.image is not image:
            self.session.clear_candidates()
        self._layers_for(image)
        self.current_request = request
        self.current_run = CandidateRun(
            request,
            self.session,
            self.cache,
            self.render_candidates,
            self.say,
            self._on_run_ended,
        )
        image.events.data.connect(self._on_run_image_data)
        self.run.enabled, self.cancel.enabled = False, True
        self.current_run.start()

    def _on_run_ended(self, outcome: str, message: str) -> None:
        run, self.current_run = self.current_run, None
        if self.layers is not None:
            self.layers.image.events.data.disconnect(self._on_run_image_data)
        if self._closed:
            return
        self.run.enabled, self.cancel.enabled = True, False
        if outcome == "error":
            self.notify(message, "error")
        elif outcome == "stopped":
            self.notify(f"run stopped: {message}.", "warning")
        ok = outcome in ("done", "cached")
        if ok and run is not None and run.embedding is not None:
            self.session.embedding = run.embedding
        self.run_finished.emit(outcome)

    def _on_run_image_data(self, event: Any = None) -> None:
        if self.current_run is not None:
            self.current_run.stop("the image data changed during the run")

    def _on_layer_removed(self, event: Any) -> None:
        ls = self.layers
        if ls is not None and event.value is ls.image and self.current_run:
            self.current_run.stop(f"the image layer '{ls.image.name}' was removed")

    def shutdown(self, reason: str = "the viewer was closed") -> None:
        """Stop for good: pending boxes saved, runs stopped, layers let go."""
        _lifecycle.shutdown(self, reason)

    def _on_cancel(self, event: Any = None) -> None:
        if self.current_run is not None:
            self.say("cancelling...")
            self.current_run.stop()

    def _on_thresholds(self, event: Any = None) -> None:
        try:
            self.session.set_thresholds(*_controls.thresholds(self))
        except SettingsError as e:
            return self.notify(str(e), "error")
        if self.session.committed is not None or self.session.running:
            self.render_candidates()
            self.say(f"{len(self.session.candidates)} candidates")

    # -- folder mode -----------------------------------------------------------
    def pick(self, pts: np.ndarray) -> Change | None:
        """Pick with points in the image layer's data coordinates (rows,
        columns, leading slice indices), as two clicks in the picks layer."""
        return _editing.pick(self, pts)

    def _folder_do(self, action: str, *args: Any) -> None:
        if self.folder_mode is None:
            return self.notify("open a folder first (the 'folder' control).")
        getattr(self.folder_mode, action)(*args)
