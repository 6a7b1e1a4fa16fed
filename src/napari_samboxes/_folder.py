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
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._layers import LayerSet
from .boxes import Boxes
from .dataset import Dataset, read_classes

if TYPE_CHECKING:  # pragma: no cover
    from ._widget import SamBoxesWidget

__all__ = ["AUTOSAVE_DELAY_MS", "PRECOMPUTE_AHEAD", "FolderMode", "open_folder"]

AUTOSAVE_DELAY_MS = 250
PRECOMPUTE_AHEAD = 2


class FolderMode:
    """The folder workflow of a widget (see the module docstring)."""

    def __init__(self, widget: SamBoxesWidget, folder: str | Path) -> None:
        from qtpy.QtCore import QTimer

        self.w = widget
        self.dataset = Dataset(folder)
        if len(self.dataset.images) == 0:
            raise ValueError(f"{folder}: no images (png, jpg, tif, bmp, gif, webp)")
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
        img = self.image
        if img is None or img not in w.viewer.layers or bool(img.rgb) != rgb:
            if img is not None and img in w.viewer.layers:
                w.viewer.layers.remove(img)
            img = w.viewer.add_image(data, name=self.name, rgb=rgb)
            w.viewer.layers.move(w.viewer.layers.index(img), 0)
            self.image = img
            w.layers = LayerSet(w.viewer, img, self.name)
        else:
            img.data = data
            img.reset_contrast_limits()
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
        elif outcome in ("done", "cached"):
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
        self._background = worker
        worker.start()

    def _on_background_event(self, ev: Any) -> None:
        from .pipeline import Precomputed

        if isinstance(ev, Precomputed):
            self.background_done += 1

    def stop_background(self) -> None:
        """Stop the look-ahead (at its next batch)."""
        if self._background is not None:
            self._background.quit()
            self._background = None

    def close(self) -> None:
        """Flush, stop background work, stop listening to the widget."""
        self.flush()
        self.stop_background()
        self._after_run = None
        for signal, slot in (
            (self.w.boxes_changed, self._on_boxes_changed),
            (self.w.run_finished, self._on_run_finished),
        ):
            signal.disconnect(slot)


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
    for name in ("prev_image", "next_image", "next_unannotated"):
        self[name].enabled = True
    self.folder_mode.show(0)
