"""Folder mode in napari (``FolderController`` over a ``FolderSession``).

* One image layer (named after the folder, always RGB: a greyscale image is
  shown as three equal channels) and one set of candidates, picks, boxes,
  labels and preview layers are reused from image to image: moving never
  adds or removes a layer (a removal costs napari a garbage collection).
* Moving to an image reads its box table at once (a broken table refuses
  the move, nothing changed) and reads the image file in the panel's
  ``run`` worker, never on the UI thread; then the image is shown, its
  boxes drawn, and its candidates run (from the cache when the look-ahead
  made them). Moves pressed faster than images load skip the images in
  between.
* Every change of the boxes is written within :data:`AUTOSAVE_DELAY_MS`
  (batched, atomic); leaving an image, hiding the dock, closing the panel
  and quitting the application write at once.
* After a run, the next :data:`PRECOMPUTE_AHEAD` images are computed into
  the cache in the panel's ``lookahead`` worker, stopped when the user
  moves or hides the dock.
* One panel per folder: opening a folder closes (and flushes) the panel
  that had it open. The open folders are known to an object the
  application owns (:class:`_OpenFolders`), not to a module.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, QTimer
from qtpy.QtWidgets import QApplication

from ..boxes import Boxes
from ..folder import FolderSession
from ..image import default_limits
from ..pipeline import Precomputed, RunRequest, precompute
from .annotator import Annotator
from .layers import META
from .runs import RunController, without_collection

__all__ = [
    "AUTOSAVE_DELAY_MS",
    "PRECOMPUTE_AHEAD",
    "FolderController",
    "full_range",
    "left_folder",
    "read_for_display",
]

AUTOSAVE_DELAY_MS = 250
PRECOMPUTE_AHEAD = 2
#: Work deferred to a later pass of the event loop waits this long (ms), so
#: that the repaint and the user's input come in between.
_LATER_MS = 15
#: The plugin's layers are made this far apart (ms), so that the repaint
#: each one asks for comes between two of them.
_LAYER_MS = 60


def full_range(data: np.ndarray, rgb: bool) -> tuple[float, float] | None:
    """The contrast limits :func:`~napari_samboxes.image.to_rgb8` reads an
    image file with (what the look-ahead caches); None for a constant
    image (napari cannot show equal limits)."""
    lo, hi = default_limits(data[..., :3] if rgb else data)
    return (lo, hi) if hi > lo else None


def read_for_display(path: Path) -> tuple[np.ndarray, tuple[float, float] | None]:
    """An image file as the folder's RGB layer shows it (grey as three equal
    channels), and its contrast limits. Runs in a worker."""
    from ..imread import read_image

    data = read_image(path)
    rgb = data.ndim == 3
    limits = full_range(data, rgb)
    if not rgb:
        data = np.repeat(data[..., None], 3, axis=-1)
    return data, limits


def left_folder(viewer: Any) -> dict[str, Any] | None:
    """What a closed panel left with its folder's image layer in ``viewer``
    (the folder, the image shown, the run settings), or None."""
    for layer in viewer.layers:
        meta = layer.metadata.get(META)
        if (
            isinstance(meta, dict)
            and meta.get("role") == "folder"
            and not meta.get("own")
            and Path(str(meta.get("folder"))).is_dir()
        ):
            return dict(meta)
    return None


class _OpenFolders(QObject):
    """The folders open in this application's panels, one panel each."""

    NAME = "napari_samboxes_open_folders"

    def __init__(self, app: QObject) -> None:
        super().__init__(app)
        self.setObjectName(self.NAME)
        self.open: dict[Path, weakref.ref[FolderController]] = {}

    @classmethod
    def of_app(cls) -> _OpenFolders | None:
        app = QApplication.instance()
        if app is None:
            return None
        for child in app.children():
            if isinstance(child, cls):
                return child
        return cls(app)


class FolderController:
    """The folder workflow of a panel (see the module docstring).

    Parameters
    ----------
    viewer : napari.Viewer
    folder : str or Path
    annotator : Annotator
    runs : RunController
    request_for : callable
        The run request for the folder's image layer, or None (the panel
        says why).
    say, notify : callable
    on_progress : callable
        Called with the progress text.

    Raises
    ------
    OSError, ValueError
        When the folder cannot be opened (no images, not a folder).
    """

    def __init__(
        self,
        viewer: Any,
        folder: str | Path,
        annotator: Annotator,
        runs: RunController,
        request_for: Callable[[Any], RunRequest | None],
        say: Callable[[str], Any],
        notify: Callable[..., Any],
        on_progress: Callable[[str], Any],
        session: FolderSession | None = None,
        recursive: bool = True,
    ) -> None:
        self.viewer = viewer
        self.session = (
            session if session is not None else FolderSession(folder, recursive)
        )
        self.annotator = annotator
        self.runs = runs
        self.request_for = request_for
        self.say, self.notify, self.on_progress = say, notify, on_progress
        self.key = self.session.dataset.folder.resolve()
        registry = _OpenFolders.of_app()
        other = registry.open.get(self.key) if registry is not None else None
        if other is not None and other() is not None:
            other().close("the folder was opened in another SAM boxes panel")  # type: ignore[union-attr]
        if registry is not None:
            registry.open[self.key] = weakref.ref(self)
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.flush)  # type: ignore[attr-defined]
        #: The image the user is moving to (shown once it has loaded).
        self.target = 0
        self.image: Any = None
        #: True: ``close`` leaves the layers to the next folder of the panel.
        self.hand_over = False
        #: True while the dock is hidden: no look-ahead then.
        self.paused = False
        #: Images of the look-ahead computed so far (for tests and status).
        self.background_done = 0
        self.closed = False
        #: Called once when the folder is closed (by its panel or another).
        self.on_closed: Callable[[], Any] | None = None
        #: Called when the progress has been counted (a large folder).
        self.on_counted: Callable[[], Any] | None = None
        self._move = 0
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.flush)
        annotator.changed.connect(self._on_change)
        annotator.run_finished.connect(self._on_run_finished)
        self._said_problems = 0
        self._say_problems()
        #: The direction of the last step (+1, -1; 0 for a jump): an image
        #: that cannot be shown is stepped past in that direction.
        self._direction = 0
        #: Images found unshowable in this folder (skipped by Next unannotated).
        self._unshowable: set[int] = set()
        if not self.session.counted:
            self.runs.submit(
                "count",
                without_collection,
                self.session.count,
                on_return=self._counted,
                on_error=lambda e: self.notify(f"could not count the progress: {e}"),
            )

    def _say_problems(self) -> None:
        problems = self.session.problems[self._said_problems :]
        self._said_problems = len(self.session.problems)
        for problem in problems[:5]:
            self.notify(problem, "warning")
        if len(problems) > 5:
            self.notify(f"... and {len(problems) - 5} more problems", "warning")

    def _counted(self, counts: Any) -> None:
        if self.closed:
            return
        self.session.set_counts(counts)
        self._say_problems()
        self.update_progress()
        if self.on_counted is not None:
            self.on_counted()

    @property
    def index(self) -> int:
        """The image shown (-1 before the first has loaded)."""
        return self.session.index

    # -- moving ------------------------------------------------------------------
    def show(self, index: int, direction: int = 0) -> None:
        """Move to image ``index`` (clipped): shown once its file is read.

        An image that cannot be shown (a broken table, an unreadable file)
        is said and, when moving by a step (``direction`` +1 or -1), stepped
        past in that direction.
        """
        s = self.session
        index = s.clip(index)
        self._direction = direction
        self.flush()
        key = s.key(index)
        known = self.annotator.session.knows(key)
        try:  # a broken table refuses the move before anything changes
            other = key != self.annotator.session.image_key
            if known and other and s.changed_on_disk(index):
                self.annotator.session.forget([key])
                known = False
                self.say(f"{s.image_name(index)}: changed on disk; read again")
            seed = None if known else s.read_boxes(index)
        except (OSError, ValueError) as e:
            self.notify(f"{s.image_name(index)}: not shown: {e}", "error")
            self.update_progress()
            self._step_past(index)
            return
        self.target = index
        self._move += 1  # deferred steps of earlier moves see it and stop
        move = self._move
        self.runs.stop("lookahead")
        self.annotator.stop_run("another image is shown", quiet=True)
        self.say(f"opening {s.image_name(index)}...")
        if self.image is None or self.image not in self.viewer.layers:
            QTimer.singleShot(0, self._prepare)  # while the worker reads
        self.runs.submit(
            "run",
            read_for_display,
            s.images[index],
            on_return=partial(self._present, move, seed),
            on_error=partial(self._not_read, move),
        )

    def step(self, delta: int) -> None:
        """Go ``delta`` images forward or back (from where a move is going)."""
        nxt = self.session.clip(self.target + delta)
        if nxt == self.target and self.index == self.target:
            which = "last" if delta > 0 else "first"
            return self.say(f"this is the {which} image of the folder")
        self.show(nxt, 1 if delta > 0 else -1)

    def _step_past(self, index: int) -> bool:
        """After image ``index`` could not be shown: the next one in the
        direction of the step (2: the next unannotated one), if any, on a
        later pass of the event loop; False when there is none."""
        d, s = self._direction, self.session
        self._unshowable.add(index)
        if d == 2:
            nxt: int | None = index
            while nxt is not None and nxt in self._unshowable:
                after = nxt
                nxt = s.next_unannotated(after)
                if nxt == index:
                    nxt = None
        else:
            nxt = index + d
        if d == 0 or nxt is None or not 0 <= nxt < len(s):
            return False
        self.say(f"{s.image_name(index)} cannot be shown; going on")
        QTimer.singleShot(0, lambda: None if self.closed else self.show(nxt, d))
        return True

    def next_unannotated(self) -> None:
        """Go to the next image with no boxes that is not done."""
        self.flush()
        nxt = self.session.next_unannotated(self.target)
        if nxt is None:
            self.notify("every image of the folder has boxes or is done.")
        else:
            self.show(nxt, 2)  # 2: past a broken one to the next unannotated

    def _current(self, move: int) -> bool:
        return move == self._move and not self.closed

    def _not_read(self, move: int, exc: BaseException) -> None:
        if not self._current(move):
            return
        failed = self.target
        name = self.session.image_name(failed)
        self.notify(f"{name}: not shown: {exc}", "error")
        self.target = max(self.index, 0)
        if self._direction and self._step_past(failed):
            return
        s = self.session
        if s.index >= 0 and self.image is not None:  # its run was stopped
            self._move += 1
            run = partial(self._run, self._move, self.image, s.key(s.index))
            QTimer.singleShot(_LATER_MS, run)

    def _present(self, move: int, seed: Boxes | None, loaded: Any) -> None:
        if not self._current(move):
            return  # a later move superseded this one
        data, limits = loaded
        s = self.session
        self.annotator.stop_run("another image is shown", quiet=True)
        self.annotator.clear_picks()
        s.index = self.target
        image = self._show_data(data, limits)
        self.update_progress()
        self.viewer.reset_view(layers=[image])
        # the first image of a folder makes the plugin's layers: that waits
        # for a later pass of the event loop (no old boxes to hide then)
        later = not self.annotator.has_layers(image)
        attach = partial(self._attach, move, image, s.key(s.index), seed)
        QTimer.singleShot(_LATER_MS, attach) if later else attach()

    def _attach(self, move: int, image: Any, key: str, seed: Boxes | None) -> None:
        if not self._current(move):
            return
        a = self.annotator
        if a.preparing(image) or a.make_next_layer(image):  # a layer per pass
            again = partial(self._attach, move, image, key, seed)
            QTimer.singleShot(_LAYER_MS, again)
            return
        self.annotator.attach(image, key, seed)
        self.viewer.reset_view(layers=[image])
        # the run starts on a later pass of the event loop: the image is
        # drawn first, never in the same stall as the run's start
        QTimer.singleShot(_LATER_MS, partial(self._run, move, image, key))

    def _run(self, move: int, image: Any, key: str) -> None:
        if not self._current(move):
            return
        if self.annotator.run is not None:  # the last image's is still stopping
            QTimer.singleShot(4 * _LATER_MS, partial(self._run, move, image, key))
            return
        if self.annotator.session.committed is not None:
            return  # its candidates are there (a move that failed)
        request = self.request_for(image)
        if request is not None:
            self.annotator.start_run(image, key, request)

    def image_removed(self, layer: Any) -> None:
        """The user removed the folder's image layer: its plugin layers go
        too (the boxes are on disk); the next move makes them anew."""
        if layer is self.image:
            self.image = None
            self.annotator.drop_image(layer)

    def take_over(self, image: Any) -> None:
        """Show this folder in the image layer (and plugin layers) of the
        panel's previous folder: no layer is added or removed."""
        if image is None or image not in self.viewer.layers:
            return
        self.image = image
        self._own(image, True)
        image.name = self.session.name
        view = self.annotator.views.get(str(image.unique_id))
        if view is not None:
            view.rename(self.session.name)

    def _prepare(self) -> None:
        """The folder's layers, made while its first image is read: an
        image layer (a closed panel's, or a 1 x 1 placeholder), then the
        plugin's layers, one per pass of the event loop."""
        if self.closed:
            return
        img = self.image if self.image in self.viewer.layers else None
        img = img if img is not None else self._released_image()
        if img is None:
            img = self.viewer.add_image(
                np.zeros((1, 1, 3), np.uint8), name=self.session.name, rgb=True
            )
            self.viewer.layers.move(self.viewer.layers.index(img), 0)
            self._own(img, True)
        self.image = img
        self.annotator.prepare(img, _LAYER_MS)

    def _show_data(self, data: np.ndarray, limits: tuple[float, float] | None) -> Any:
        img = self.image
        if img is None or img not in self.viewer.layers:
            img = self._released_image()
        if img is None:
            kw = {} if limits is None else {"contrast_limits": limits}
            img = self.viewer.add_image(data, name=self.session.name, rgb=True, **kw)
            self.viewer.layers.move(self.viewer.layers.index(img), 0)
            self._own(img, True)
        else:
            img.data = data
            if limits is not None:
                img.contrast_limits_range = limits
                img.contrast_limits = limits
            else:
                img.reset_contrast_limits_range()
                img.reset_contrast_limits()
        self.image = img
        return img

    def _own(self, image: Any, own: bool, **more: Any) -> None:
        image.metadata[META] = {
            "role": "folder",
            "folder": str(self.key),
            "own": int(own),
            "index": max(self.session.index, 0),
            **more,
        }

    def _released_image(self) -> Any:
        """The folder's image layer a closed panel let go of, taken up."""
        for layer in self.viewer.layers:
            meta = layer.metadata.get(META)
            if (
                isinstance(meta, dict)
                and meta.get("role") == "folder"
                and meta.get("folder") == str(self.key)
                and not meta.get("own")
                and getattr(layer, "rgb", False)
            ):
                self._own(layer, True)
                return layer
        return None

    def update_progress(self) -> None:
        """'image k of N, m annotated' in the panel."""
        if not self.closed:
            self.on_progress(self.session.progress_text())

    # -- done flags ------------------------------------------------------------------
    def toggle_done(self) -> bool:
        """Mark the shown image done (or not any more); returns the flag."""
        s = self.session
        if s.index < 0:
            return False
        flag = not s.is_done(s.index)
        try:
            self.flush()
            s.set_done(s.index, flag)
        except (OSError, ValueError) as e:
            self.notify(f"could not mark {s.image_name(s.index)} done: {e}", "error")
            return not flag
        self.update_progress()
        return flag

    # -- autosave --------------------------------------------------------------------
    def _on_change(self, change: Any) -> None:
        if not self.closed and self.session.record(change.key, change.boxes):
            self._timer.start(AUTOSAVE_DELAY_MS)
            self.update_progress()

    def flush(self) -> None:
        """Write every pending change now (atomic writes)."""
        try:
            self._timer.stop()
        except RuntimeError:  # Qt already deleted it (the application ends)
            pass
        if not self.session.pending:
            return
        s = self.session
        for message in s.flush():
            self.notify(message, "error")
        for note in s.take_notes():
            self.notify(note, "warning")
        reloaded, s.reloaded = s.reloaded, {}
        a = self.annotator
        for key, boxes in reloaded.items():  # merged with a changed file
            if a.session.knows(key) and not self.closed:
                a.apply(a.session.replace_all(boxes, "", key=key))
        self.update_progress()

    # -- look-ahead --------------------------------------------------------------------
    def _on_run_finished(self, outcome: str) -> None:
        if outcome in ("done", "cached") and not self.paused:
            self.look_ahead()

    def look_ahead(self) -> None:
        """Compute the next images' candidates into the cache."""
        s, req = self.session, self.annotator.request
        todo = s.images[s.index + 1 : s.index + 1 + PRECOMPUTE_AHEAD]
        if not todo or req is None or self.closed or s.index < 0:
            return
        self.runs.submit(
            "lookahead",
            precompute,
            todo,
            req,
            self.annotator.cache,
            on_yield=self._on_background_event,
        )

    @property
    def looking_ahead(self) -> bool:
        """Whether the look-ahead is computing (or about to)."""
        return self.runs.busy("lookahead")

    def _on_background_event(self, ev: Any) -> None:
        if isinstance(ev, Precomputed):
            self.background_done += 1

    def pause(self) -> None:
        """The dock was hidden: write pending boxes, stop the look-ahead."""
        self.paused = True
        self.flush()
        self.runs.stop("lookahead")

    def resume(self) -> None:
        """The dock is shown again: look ahead again if a run is done."""
        self.paused = False
        done = self.annotator.run is None and self.annotator.session.committed
        if done and self.index >= 0 and not self.looking_ahead:
            self.look_ahead()

    def close(self, reason: str = "", **remember: Any) -> None:
        """Flush, stop the look-ahead, let go of the folder; ``remember``
        (run settings) is kept with its image layer for a later panel."""
        if self.closed:
            return
        self.flush()
        self.closed = True
        self.runs.stop("lookahead")
        for signal, slot in (
            (self.annotator.changed, self._on_change),
            (self.annotator.run_finished, self._on_run_finished),
        ):
            signal.disconnect(slot)
        app = QApplication.instance()
        if app is not None:
            try:
                app.aboutToQuit.disconnect(self.flush)  # type: ignore[attr-defined]
            except (TypeError, RuntimeError):
                pass
        if self.image is not None and not self.hand_over:
            self._own(self.image, False, **remember)  # a later panel's
            self.annotator.release_image(self.image)
        registry = _OpenFolders.of_app()
        if registry is not None:
            ref = registry.open.get(self.key)
            if ref is not None and ref() is self:
                del registry.open[self.key]
        if reason:
            self.say(reason)
        if self.on_closed is not None:
            self.on_closed()
