"""Folder mode: one image of a folder at a time, autosaved, precomputed.

* One image layer (named after the folder) and one set of candidates,
  picks and boxes layers are reused from image to image.
* Showing an image loads its box table (``DIR/annotations``) into the
  session and starts its run at once (served from the cache when the
  background precomputation already did it).
* Every change of the boxes is written within :data:`AUTOSAVE_DELAY_MS`
  (batched, atomic); leaving an image or closing flushes at once.
* After a run, the next :data:`PRECOMPUTE_AHEAD` images are computed into
  the cache in the background, one at a time, stopped when the user moves.
  Each image is shown with the contrast limits the look-ahead reads it with
  (its full range), so that its run finds the look-ahead's cache entry.
* At most one folder mode per folder: opening a folder closes (flushes)
  the folder mode that had it open, in any widget.
* The dock (see :func:`watch_dock`): hiding it flushes at once and pauses
  the look-ahead, showing it resumes; taking it out of the window (its
  close button) or deleting it shuts the widget down; quitting the
  application flushes every folder (:func:`flush_all`).
"""

from __future__ import annotations

import weakref
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import QApplication

from . import _keys, _sync
from ._layers import LayerSet
from .boxes import Boxes
from .dataset import Dataset, read_classes

if TYPE_CHECKING:  # pragma: no cover
    from ._widget import SamBoxesWidget

__all__ = [
    "AUTOSAVE_DELAY_MS",
    "PRECOMPUTE_AHEAD",
    "FolderMode",
    "flush_all",
    "open_folder",
    "watch_dock",
    "wire_layer",
]

AUTOSAVE_DELAY_MS = 250
PRECOMPUTE_AHEAD = 2
_NAVIGATION = ("prev_image", "next_image", "next_unannotated")

#: The open folder mode of each folder (resolved path).
_OPEN: weakref.WeakValueDictionary[Path, FolderMode] = weakref.WeakValueDictionary()
#: The widget each picks or boxes layer reports to, and its handler.
_WIRING: weakref.WeakKeyDictionary[Any, tuple[Any, Any]] = weakref.WeakKeyDictionary()


def flush_all() -> None:
    """Write the pending boxes of every open folder (at application quit)."""
    for mode in list(_OPEN.values()):
        mode.flush()


class FolderMode:
    """The folder workflow of a widget (see the module docstring)."""

    def __init__(self, widget: SamBoxesWidget, folder: str | Path) -> None:
        self.w = widget
        self.dataset = Dataset(folder)
        if len(self.dataset.images) == 0:
            raise ValueError(f"{folder}: no images (png, jpg, tif, bmp, gif, webp)")
        self.key = self.dataset.folder.resolve()
        other = _OPEN.get(self.key)
        if other is not None:  # its pending boxes reach the disk before we read
            other.close()
            other.w.say("the folder was opened in another SAM boxes panel")
        _OPEN[self.key] = self
        app = QApplication.instance()
        if app is not None and not getattr(app, "_samboxes_flush_all", False):
            app.aboutToQuit.connect(flush_all)
            app._samboxes_flush_all = True  # type: ignore[attr-defined]
        #: True while the dock is hidden: no look-ahead then.
        self.paused = False
        self.index = -1
        self.target = 0
        self.image: Any = None
        self._dirty: dict[Path, Boxes] = {}
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.flush)
        self._background: Any = None
        #: Images of the look-ahead computed so far (for tests and status).
        self.background_done = 0
        self._after_run: Any = None
        self.name = Path(folder).resolve().name or "folder"
        widget.boxes_changed.connect(self._on_boxes_changed)
        widget.run_finished.connect(self._on_run_finished)
        widget.session.forget([str(p) for p in self.dataset.images])
        # the folder's class list replaces the drop-down's (saved to its file)
        with widget.classes_file.changed.blocked():
            widget.classes_file.value = str(self.dataset.classes_path)
        try:
            classes = self.dataset.classes()
        except ValueError as e:  # a broken table: its image is refused later
            widget.notify(f"{e}", "warning")
            path = self.dataset.classes_path
            classes = read_classes(path) if path.is_file() else []
        if classes:
            widget.box_label.choices = tuple(classes)

    # -- navigation ----------------------------------------------------------
    def show(self, index: int) -> None:
        """Show image ``index`` (clipped), its boxes and its candidates."""
        index = int(np.clip(index, 0, len(self.dataset.images) - 1))
        self.target = index
        self.flush()
        self.stop_background()
        w = self.w
        if w.current_run is not None:  # finish leaving first; then come here
            self._after_run = lambda: self.show(self.target)
            w.current_run.stop()
            return
        path = self.dataset.images[index]
        try:  # read everything first: a failure changes nothing
            data = _read(path)
            table = self.dataset.load_boxes(path)
        except (OSError, ValueError) as e:
            w.notify(f"{path.name}: not shown: {e}", "error")
            return
        self.index = index
        picks = w.layers.get("picks") if w.layers is not None else None
        if picks is not None:
            picks.data = np.zeros((0, picks.ndim))  # a pending pick stays behind
        self._set_image(data)
        w.session.clear_candidates()
        w.render_candidates()
        boxes = w.session.show_image(str(path), Boxes.from_table(table))
        w.box_label.add_classes(list(boxes.labels))
        w.show_boxes(boxes)
        self.update_progress()
        w.viewer.reset_view()
        w.run.changed.emit(True)  # candidates without pressing Run

    def step(self, delta: int) -> None:
        """Go ``delta`` images forward or back (from where a move is going)."""
        base = self.target if self.w.current_run is not None else self.index
        self.show(base + delta)

    def next_unannotated(self) -> None:
        """Go to the next image without boxes (wrapping around)."""
        self.flush()
        nxt = self.dataset.next_unannotated(self.index)
        if nxt is None:
            self.w.notify("every image of the folder has boxes.")
        else:
            self.show(nxt)

    def update_progress(self) -> None:
        """'image k of N, m annotated' in the widget."""
        done, n = self.dataset.progress()
        name = self.dataset.images[self.index].name
        self.w.folder_progress.value = (
            f"image {self.index + 1} of {n}, {done} annotated: {name}"
        )

    def _set_image(self, data: np.ndarray) -> None:
        w = self.w
        rgb = data.ndim == 3
        limits = full_range(data, rgb)
        img = self.image
        if img is None or img not in w.viewer.layers or bool(img.rgb) != rgb:
            if img is not None and img in w.viewer.layers:
                w.viewer.layers.remove(img)
            img = w.viewer.add_image(
                data, name=self.name, rgb=rgb, contrast_limits=limits
            )
            w.viewer.layers.move(w.viewer.layers.index(img), 0)
            self.image = img
            w.layers = LayerSet(w.viewer, img, self.name)
        else:
            img.data = data
            img.contrast_limits = limits
        if w.layers is None or w.layers.image is not img:
            w.layers = LayerSet(w.viewer, img, self.name)
        w.image.value = img

    # -- autosave ----------------------------------------------------------
    def _on_boxes_changed(self, boxes: Boxes) -> None:
        # the image the session is on, never "the image shown now"
        path = Path(self.w.session.image_key)
        if path in self.dataset.images:
            self._dirty[path] = boxes
            self._timer.start(AUTOSAVE_DELAY_MS)

    def flush(self) -> None:
        """Write every pending change now (atomic writes)."""
        try:
            self._timer.stop()
        except RuntimeError:  # Qt already deleted it (the viewer closes)
            pass
        dirty, self._dirty = self._dirty, {}
        for path, boxes in dirty.items():
            try:
                self.dataset.save_boxes(path, boxes.to_table())
            except (OSError, ValueError) as e:
                self._dirty[path] = boxes  # keep it; try again on the next change
                self.w.notify(f"could not save {path.name}'s boxes: {e}", "error")
        if dirty and self.index >= 0 and not self.w._closed:
            self.update_progress()

    # -- runs and precomputation --------------------------------------------
    def _on_run_finished(self, outcome: str) -> None:
        after, self._after_run = self._after_run, None
        if after is not None:
            after()
        elif outcome in ("done", "cached") and not self.paused:
            self._start_background()

    def _start_background(self) -> None:
        from napari.qt.threading import thread_worker

        from .pipeline import precompute

        todo = self.dataset.images[self.index + 1 : self.index + 1 + PRECOMPUTE_AHEAD]
        request = self.w.current_request
        if not todo or request is None:
            return
        worker = thread_worker(precompute, start_thread=False, ignore_errors=True)(
            todo, request, self.w.cache
        )
        worker.yielded.connect(self._on_background_event)
        worker.finished.connect(partial(self._on_background_finished, worker))
        self._background = worker
        worker.start()

    def _on_background_finished(self, worker: Any) -> None:
        if self._background is worker:
            self._background = None

    @property
    def looking_ahead(self) -> bool:
        """Whether the look-ahead is computing (or about to)."""
        return self._background is not None

    def _on_background_event(self, ev: Any) -> None:
        from .pipeline import Precomputed

        if isinstance(ev, Precomputed):
            self.background_done += 1

    def stop_background(self) -> None:
        """Stop the look-ahead (at its next batch)."""
        if self._background is not None:
            self._background.quit()
            self._background = None

    def pause(self) -> None:
        """The dock was hidden: write pending boxes, stop the look-ahead."""
        self.paused = True
        self.flush()
        self.stop_background()

    def resume(self) -> None:
        """The dock is shown again: look ahead again if a run is done."""
        self.paused = False
        w = self.w
        done = w.current_run is None and w.session.committed is not None
        if done and self.index >= 0 and self._background is None:
            self._start_background()

    def close(self) -> None:
        """Flush, stop background work, stop listening to the widget, let
        go of the folder (the widget leaves folder mode)."""
        self.flush()
        self.stop_background()
        self._after_run = None
        for signal, slot in (
            (self.w.boxes_changed, self._on_boxes_changed),
            (self.w.run_finished, self._on_run_finished),
        ):
            signal.disconnect(slot)
        if _OPEN.get(self.key) is self:
            del _OPEN[self.key]
        if self.w.folder_mode is self:
            self.w.folder_mode = None
            if not self.w._closed:
                for name in _NAVIGATION:
                    self.w[name].enabled = False


def full_range(data: np.ndarray, rgb: bool) -> tuple[float, float] | None:
    """The contrast limits :func:`~napari_samboxes.image.to_rgb8` reads an
    image file with (what the look-ahead caches); None for a constant
    image (napari cannot show equal limits)."""
    from .image import default_limits

    lo, hi = default_limits(data[..., :3] if rgb else data)
    return (lo, hi) if hi > lo else None


def _read(path: Path) -> np.ndarray:
    from .imread import read_image

    return read_image(path)


def open_folder(self: SamBoxesWidget) -> None:
    """Open the folder of the widget's ``folder`` control (folder mode)."""

    path = Path(str(self.folder.value or ""))
    if not path.is_dir():
        return self.notify(f"{path} is not a folder.", "error")
    if self.folder_mode is not None:
        self.folder_mode.close()
    try:
        self.folder_mode = FolderMode(self, path)
    except (OSError, ValueError) as e:
        self.folder_mode = None
        return self.notify(str(e), "error")
    for name in _NAVIGATION:
        self[name].enabled = True
    self.folder_mode.show(0)


# -- the widget's life in the window ------------------------------------------
class _DockWatcher(QObject):
    """Hide, show and removal of the widget (see the module docstring)."""

    def __init__(self, widget: SamBoxesWidget) -> None:
        super().__init__(widget.native)
        self.w = widget

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt's)
        kind, mode = event.type(), self.w.folder_mode
        if kind == QEvent.Type.ParentChange and obj.parent() is None:
            self.w.shutdown("the SAM boxes panel was closed")
        elif mode is not None and not event.spontaneous():
            if kind == QEvent.Type.Hide:
                mode.pause()
            elif kind == QEvent.Type.Show:
                mode.resume()
        return False


def watch_dock(widget: SamBoxesWidget) -> None:
    """Follow the widget's dock (hidden, shown, closed) and its deletion."""
    widget.native.installEventFilter(_DockWatcher(widget))
    widget.native.destroyed.connect(lambda *_: widget.shutdown())


def wire_layer(widget: SamBoxesWidget, layer: Any, picks: bool) -> None:
    """Send a picks or boxes layer's edits and keys to ``widget``, taking
    the layer from the widget that had it (one owner per layer)."""
    if not picks:
        _sync.note_shown(widget, layer)
    owner, slots = _WIRING.get(layer, (None, []))
    if owner is widget:
        return
    _disconnect(layer, slots)
    slots = _sync.layer_slots(widget, picks)
    for name, slot in slots:
        getattr(layer.events, name).connect(slot)
    _keys.bind_layer(widget, layer, picks=picks)
    _WIRING[layer] = (widget, slots)


def _disconnect(layer: Any, slots: list[tuple[str, Any]]) -> None:
    for name, slot in slots:
        getattr(layer.events, name).disconnect(slot)


def owned_boxes() -> list[tuple[SamBoxesWidget, Any]]:
    """(widget, boxes layer) of every boxes layer an open widget owns."""
    return [
        (w, layer)
        for layer, (w, slots) in list(_WIRING.items())
        if not w._closed and len(slots) > 1  # a boxes layer (data, features)
    ]


def unwire_layers(widget: SamBoxesWidget) -> None:
    """Let go of the layers ``widget`` owns (their edits reach it no more)."""
    for layer, (owner, slots) in list(_WIRING.items()):
        if owner is widget:
            _disconnect(layer, slots)
            del _WIRING[layer]
