"""The annotation of the shown image: layers, candidates, picks, edits.

:class:`Annotator` joins the Qt-free :class:`~napari_samboxes.session.Session`
to napari: every image layer being annotated has its
:class:`~.layers.ImageLayers`; runs of the pipeline fill the session's
candidates (:class:`~.runs.CandidateRun`); picks, steps, undo, relabel and
delete are session operations whose :class:`Change` is drawn in the layers
of the image it changed. Edits made with napari's own tools come in
through :class:`~.edits.LayerEdits`; questions to SAM after the run (the
prompt fallback, tighten, masks) go through :class:`~.prompts.SamPrompts`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
from psygnal import Signal
from qtpy.QtCore import QTimer

from ..boxes import Boxes
from ..cache import CandidateCache
from ..classes import DEFAULT_CLASS, ClassList
from ..pipeline import RunRequest
from ..session import Change, Session
from .edits import LayerEdits
from .layers import ImageLayers
from .prompts import SamPrompts
from .runs import CandidateRun, RunController

__all__ = ["DISPLAY_MODES", "Annotator", "layer_key"]

#: Choices of the ``show_candidates`` control. "under cursor" is the
#: default: with hundreds of candidates, drawing them all hides the image.
DISPLAY_MODES = ("under cursor", "all", "none")
#: While a run streams, "all" candidates are redrawn at most this often (ms).
_REDRAW_MS = 300


def layer_key(image: Any) -> str:
    """The session key of an image layer's boxes (outside folder mode)."""
    return f"layer:{image.unique_id}"


class Annotator:
    """The shown image and every image layer annotated so far.

    Parameters
    ----------
    viewer : napari.Viewer
    session : Session
    classes : ClassList
    runs : RunController
    cache : CandidateCache
    say, notify : callable
        Status line text; napari notification ``(text, level)``.
    """

    #: Every change of some image's boxes (a :class:`Change`).
    changed = Signal(object)
    #: The shown image's boxes after each redraw (a :class:`Boxes`).
    shown = Signal(object)
    #: A run ended, with its outcome.
    run_finished = Signal(str)
    #: The number of pending picks changed.
    picks_changed = Signal(int)
    #: Labels became classes (a list of names).
    classes_added = Signal(list)
    #: Another image is shown (keys and clicks are for it now).
    attached = Signal()
    #: The boxes selected in the shown image's boxes layer changed (rows).
    selection_changed = Signal(list)

    def __init__(
        self,
        viewer: Any,
        session: Session,
        classes: ClassList,
        runs: RunController,
        cache: CandidateCache,
        say: Callable[[str], Any],
        notify: Callable[..., Any],
    ) -> None:
        self.viewer = viewer
        self.session = session
        self.classes = classes
        self.runs = runs
        self.cache = cache
        self.say, self.notify = say, notify
        #: The class of new boxes.
        self.label = DEFAULT_CLASS
        #: How candidates are shown (one of :data:`DISPLAY_MODES`).
        self.display = DISPLAY_MODES[0]
        self.views: dict[str, ImageLayers] = {}
        self._preparing: set[str] = set()
        self.view: ImageLayers | None = None
        self.run: CandidateRun | None = None
        self.request: RunRequest | None = None
        self.closed = False
        #: A pick waiting for the prompts around its clicks (points, label,
        #: request number, image key); see :meth:`pick`.
        self._waiting: tuple[np.ndarray, str, int, str] | None = None
        #: A pick made while the run streamed (image key, row, box): made
        #: the complete run's pick when the run ends (Session.refine).
        self._provisional: tuple[str, int, np.ndarray] | None = None
        #: A box held in the preview layer (box, slice; see
        #: :meth:`hold_preview`): the cursor's preview waits meanwhile.
        self.held: tuple[np.ndarray, tuple[int, ...]] | None = None
        self._redraw = QTimer()
        self._redraw.setSingleShot(True)
        self._redraw.timeout.connect(self._draw_candidates)
        self.edits = LayerEdits(
            session,
            classes,
            self.apply,
            self.hand_defaults,
            lambda text: self.notify(text, "warning"),
            self.classes_added.emit,
            self.draw_boxes,
        )
        self.prompts = SamPrompts(self)

    # -- images ------------------------------------------------------------------
    def view_of(self, key: str) -> ImageLayers | None:
        """The layers showing image ``key``, if any."""
        for view in self.views.values():
            if view.key == key:
                return view
        return None

    def prepare(self, image: Any, delay_ms: int = 0) -> None:
        """Make the plugin's layers for ``image`` ahead of its first
        :meth:`attach`, each on its own later pass of the event loop (napari
        builds a layer's visual, shaders included, when it is added: a
        tenth of a second or more each in software OpenGL)."""
        self._view(image, "")
        uid = str(image.unique_id)
        self._preparing.add(uid)

        def next_layer() -> None:
            alive = not self.closed and image in self.viewer.layers
            if alive and self.make_next_layer(image):
                QTimer.singleShot(delay_ms, next_layer)
            else:
                self._preparing.discard(uid)

        QTimer.singleShot(delay_ms, next_layer)

    def preparing(self, image: Any) -> bool:
        """Whether :meth:`prepare` is still making layers for ``image``."""
        return str(image.unique_id) in self._preparing

    #: The layers :meth:`prepare` makes before an image is attached.
    PREPARED = ("boxes", "picks", "labels", "preview")

    def make_next_layer(self, image: Any) -> bool:
        """Make one of the layers of ``image`` still missing (see
        :attr:`PREPARED`); False when there was none to make."""
        view = self._view(image, "")
        for role in self.PREPARED:
            if view.layer(role) is None:
                view.ensure(role)
                return True
        return False

    def _view(self, image: Any, key: str) -> ImageLayers:
        """The layers of ``image``, made (and wired) on first use."""
        view = self.views.get(str(image.unique_id))
        if view is None:
            view = ImageLayers(self.viewer, image, key)
            self.views[str(image.unique_id)] = view
            self.edits.watch(view)
            view.bindings["picks"].on("data", lambda e: self._on_picks(view, e))
            view.bindings["boxes"].on("selection", lambda *_: self._on_selection(view))
        return view

    def has_layers(self, image: Any) -> bool:
        """Whether ``image`` already has its plugin layers."""
        view = self.views.get(str(image.unique_id))
        return view is not None and all(view.layer(r) for r in self.PREPARED)

    def attach(self, image: Any, key: str, seed: Boxes | None = None) -> ImageLayers:
        """Show image ``key`` in the layers of ``image`` (created, or taken
        up from a closed panel, when missing); ``seed`` gives its boxes on a
        first visit. Candidates of another image are dropped."""
        new = str(image.unique_id) not in self.views
        view = self._view(image, key)
        if new and seed is None and view.layer("boxes") is not None:
            seed = self._boxes_in_layer(view)
        moved = self.view is not view or view.key != key
        if moved:
            self.held = None
            for v in {self.view, view} - {None}:
                v.clear_picks()  # type: ignore[union-attr]
                v.set_preview(None, ())  # type: ignore[union-attr]
            self.session.clear_candidates()
            view.key = key
        self.view = view
        boxes = self.session.show_image(key, seed)
        self.draw_boxes(view)
        self.draw_candidates()
        self.activate_picks()
        self.shown.emit(boxes)
        if moved:
            self.picks_changed.emit(0)
            self.attached.emit()
        return view

    def drop_image(self, image: Any) -> None:
        """``image`` left the viewer for good (folder mode): its plugin
        layers are removed as well."""
        view = self.views.pop(str(image.unique_id), None)
        if view is None:
            return
        if self.run is not None and self.run.image is image:
            self.run.quiet = True
            self.run.stop(f"the image layer '{image.name}' was removed")
        for binding in view.bindings.values():
            binding.remove()
        if self.view is view:
            self.view = None
            self.session.clear_candidates()
            self.shown.emit(Boxes())

    def release_image(self, image: Any) -> None:
        """Let go of the layers of ``image`` (a later panel takes them up)."""
        if self.run is not None and self.run.image is image:
            self.run.stop("the folder was closed")
            self.run.quiet = True
        view = self.views.pop(str(image.unique_id), None)
        if view is not None:
            view.release()
            if self.view is view:
                self.view = None
                self.session.clear_candidates()

    def _boxes_in_layer(self, view: ImageLayers) -> Boxes | None:
        try:  # boxes a closed panel left in the layer seed the first visit
            return view.read_boxes(self.hand_defaults())
        except ValueError:
            return None

    def activate_picks(self) -> None:
        """Select the picks layer (clicks pick, drags pan)."""
        if self.view is None or self.closed:
            return
        picks = self.view.ensure("picks")
        self.viewer.layers.selection.active = picks
        if picks.mode != "pan_zoom":
            picks.mode = "pan_zoom"

    def hand_defaults(self) -> dict[str, Any]:
        """Features of a box drawn with napari's tools."""
        return {"label": self.label, "score": np.nan, "source": "hand"}

    def set_label(self, name: str) -> None:
        """The class of new boxes (and of boxes drawn by hand)."""
        self.label = name
        for view in self.views.values():
            layer = view.layer("boxes")
            if layer is not None:
                layer.feature_defaults = self.hand_defaults()

    # -- drawing -------------------------------------------------------------------
    def apply(self, change: Change) -> Change:
        """Draw a change of the boxes where its image is shown; say it."""
        if change.message and not self.closed:
            self.say(change.message)
        if change.changed and not self.closed:
            view = self.view_of(change.key)
            if view is not None:
                self.draw_boxes(view)
            self.changed.emit(change)
        return change

    def draw_boxes(self, view: ImageLayers) -> None:
        """Make ``view``'s boxes layer show its image's boxes."""
        boxes = self.session.boxes_of(view.key)
        layer = view.show_boxes(boxes, self.classes)
        layer.feature_defaults = self.hand_defaults()
        if view is self.view:
            self.shown.emit(boxes)

    def draw_candidates(self) -> None:
        """Draw the candidates now (display "all"), or hide them."""
        self._redraw.stop()
        self._draw_candidates()

    def _draw_candidates(self) -> None:
        view = self.view
        if view is None or self.closed:
            return
        s = self.session
        visible = self.display == "all" and s.candidate_set is not None
        view.show_candidates(s.candidates.boxes, s.slice_index, visible)

    def candidates_changed(self) -> None:
        """New candidates streamed in: redrawn at most every few hundred ms."""
        if self.display != "all":
            return
        if not self._redraw.isActive():
            self._redraw.start(_REDRAW_MS)

    def set_display(self, mode: str) -> None:
        """Show all candidates, the one under the cursor, or none."""
        self.display = mode
        self.draw_candidates()
        if self.view is not None and self.held is None:
            self.view.set_preview(None, ())

    # -- runs --------------------------------------------------------------------
    def start_run(self, image: Any, key: str, request: RunRequest) -> bool:
        """Run the pipeline for ``image`` (shown as ``key``); refused while
        a run is going."""
        if self.run is not None:
            self.notify("a run is already going; cancel it first.")
            return False
        self.attach(image, key)
        self.request = request
        self.run = CandidateRun(
            request,
            self.session,
            self.cache,
            self.candidates_changed,
            self.say,
            self._run_ended,
        )
        self.run.image = image
        self.run.progressed = self._retry_waiting
        image.events.data.connect(self._on_image_data)
        self.run.start(self.runs)
        return True

    def stop_run(self, reason: str = "", quiet: bool = False) -> None:
        """Stop the run at its next batch (``quiet``: no notification)."""
        if self.run is not None:
            self.run.quiet = quiet
            self.run.stop(reason)

    def _run_ended(self, run: CandidateRun, outcome: str, message: str) -> None:
        self.run = None
        if run.image is not None:
            run.image.events.data.disconnect(self._on_image_data)
        if self.closed:
            return
        self.draw_candidates()
        if outcome in ("done", "cached") and run.embedding is not None:
            self.session.embedding = run.embedding  # for the picks below
        if outcome in ("done", "cached"):
            self._retry_waiting()
        elif self._waiting is not None:  # cancelled, stopped, failed
            self._waiting = None
            self.say("the run ended before your clicks got a box: pick again")
        self._refine_provisional(outcome)
        if not getattr(run, "quiet", False):
            if outcome == "error":
                self.notify(message, "error")
            elif outcome == "stopped":
                self.notify(f"run stopped: {message}.", "warning")
        self.run_finished.emit(outcome)

    def _on_image_data(self, event: Any = None) -> None:
        if self.run is not None and self.run.live:
            self.run.stop("the image data changed during the run")

    def image_removed(self, image: Any) -> None:
        """An image layer left the viewer: its run stops; its layers stay."""
        if self.run is not None and self.run.image is image:
            self.run.stop(f"the image layer '{image.name}' was removed")

    # -- picking ---------------------------------------------------------------------
    def click(self, world: np.ndarray) -> None:
        """A click on the canvas: one pick point on the shown image."""
        view = self.view
        if view is None or self.closed:
            return self.notify("open a folder or press Run first.")
        picks = view.ensure("picks")
        picks.add(np.asarray(picks.world_to_data(world), dtype=float))

    def _on_picks(self, view: ImageLayers, event: Any) -> None:
        action = getattr(getattr(event, "action", ""), "value", "added")
        layer = view.layer("picks")
        if view.rendering or self.closed or action != "added" or layer is None:
            return
        n = len(layer.data)
        self.picks_changed.emit(n)
        if n < 2:
            if n == 1 and view is self.view:
                self._steer(np.asarray(layer.data, dtype=np.float64)[:, -2:])
            return
        pts = np.asarray(layer.data, dtype=np.float64)
        with view.render_guard():
            layer.data = np.zeros((0, layer.ndim))
        self.picks_changed.emit(0)
        if view is not self.view:
            self.notify(
                f"'{view.image.name}' is not the image being annotated; "
                "press Run on it first."
            )
            return
        self.pick(pts)

    def clear_picks(self) -> None:
        """Forget a pending first click (and a pick waiting for prompts)."""
        self._waiting = None
        if self.view is not None:
            self.view.clear_picks()
            self.view.set_preview(None, ())
            self.picks_changed.emit(0)

    def _steer(self, rows_cols: np.ndarray) -> int | None:
        """A click no candidate holds yet, during a run with prompts left:
        the prompts nearest it run next. Returns the request's number."""
        run, s = self.run, self.session
        xy = np.asarray(rows_cols, dtype=np.float64)[:, ::-1]
        if run is None or not run.live or not run.prompts_left:
            return None
        if s.pending is None or s.preview(xy) is not None:
            return None  # the run's pixels are not known yet, or no need
        sx, sy = s.pending.scale
        return run.prefer(xy / [sx, sy])

    def _refine_provisional(self, outcome: str) -> None:
        """The run ended: a pick made while it streamed becomes the pick the
        complete candidates give (the same points), unless it was changed."""
        p, self._provisional = self._provisional, None
        if p is None or outcome != "done" or p[0] != self.session.image_key:
            return
        change = self.session.refine(p[1], p[2])
        if change is not None:
            self.add_with_mask(change)
            self.say(
                "the run is complete: your last box is now its pick at your "
                "clicks (Ctrl+Z: the box before)"
            )

    def _retry_waiting(self) -> None:
        """A pick waiting for the prompts around its clicks: made as soon as
        a candidate holds both points, else (once those prompts ran, or the
        run ended) it falls back to a SAM prompt."""
        w = self._waiting
        if w is None or self.closed:
            return
        pts, label, request, key = w
        if self.session.image_key != key:
            self._waiting = None
            return
        run = self.run
        if request == 0 and run is not None and run.live:  # steer it now
            request = self._steer(pts[:, -2:]) or 0
            self._waiting = (pts, label, request, key)
        if run is not None and run.embedding is None:
            return self.say("waiting for the image embedding to pick...")
        ended = run is None or not run.live or 0 < request <= run.served
        if not ended and self.session.preview(pts[:, [-1, -2]]) is None:
            return
        self._waiting = None
        self.pick(pts, label, wait=False)

    def pick(
        self, pts: np.ndarray, label: str | None = None, wait: bool = True
    ) -> Change | None:
        """Pick with points in the image layer's data coordinates (rows,
        columns, leading slice indices).

        During a run, when no candidate holds the points yet, the pick
        waits (``wait``): the prompts nearest the points run next, and the
        pick is made when they are done (see :meth:`_retry_waiting`)."""
        view = self.view
        if view is None or view.image not in self.viewer.layers:
            self.notify("the image of these candidates is gone; press Run.", "warning")
            return None
        pts = np.asarray(pts, dtype=np.float64).reshape(len(pts), -1)
        lo, hi = view.image.extent.data[0, -2:], view.image.extent.data[1, -2:]
        if np.any(pts[:, -2:] < lo - 0.5) or np.any(pts[:, -2:] > hi + 0.5):
            self.notify("a point lies outside the image; pick again.")
            return None
        if wait and self._waiting is not None:
            # an earlier pick still waits: it gets its box now (the best the
            # run has so far, else SAM's prompt), so boxes come in the order
            # they were picked and [ / ] act on the latest
            earlier, self._waiting = self._waiting, None
            if earlier[3] == view.key:
                self.pick(earlier[0], earlier[1], wait=False)
        sl = tuple(int(round(v)) for v in pts[0, :-2])
        label = self.label if label is None else label
        result = self.session.pick(pts[:, [-1, -2]], label, sl)
        if result.change is None:
            run = self.run
            if (
                wait
                and (result.prompt or self.session.candidate_set is None)
                and run is not None
                and run.live
                and (run.prompts_left or run.embedding is None)
            ):
                request = self._steer(pts[:, -2:])
                if request is not None or run.embedding is None:
                    self._waiting = (pts, label, request or 0, view.key)
                    self.say(
                        "waiting for the image embedding to pick..."
                        if run.embedding is None
                        else "looking for a box at your clicks: the prompts "
                        "near them run next..."
                    )
                    return None
            if result.prompt and result.span is not None:
                self.prompts.fallback(result.span, pts[:, [-1, -2]], label)
            else:
                self.notify(result.reason)
            return None
        change = self.add_with_mask(result.change)
        last = self.session.last_pick
        if self.session.running and last is not None:  # a streaming run's pick
            self._provisional = (self.session.image_key, *last)
        return change

    def preview(self, cursor: np.ndarray) -> np.ndarray | None:
        """Show the box a pick would give for a cursor in the image's data
        coordinates (after one pick, or under the cursor)."""
        view = self.view
        if view is None or self.closed or self.held is not None:
            return None
        picks = view.layer("picks")
        pts = np.asarray(cursor, dtype=float)[None, -2:]
        if picks is not None and len(picks.data) == 1:
            pts = np.vstack([np.asarray(picks.data)[0, -2:], pts])
        elif self.display != "under cursor":
            view.set_preview(None, ())
            return None
        box = self.session.preview(pts[:, ::-1])
        view.set_preview(box, self.session.slice_index)
        return box

    def hold_preview(
        self, box: np.ndarray | None, slice_index: tuple[int, ...] = ()
    ) -> None:
        """Show ``box`` in the preview layer until :meth:`release_preview`
        (the preview of the box under the cursor waits meanwhile)."""
        self.held = None if box is None else (np.asarray(box), tuple(slice_index))
        if self.view is not None and not self.closed:
            self.view.set_preview(box, tuple(slice_index))

    def release_preview(self) -> None:
        """End :meth:`hold_preview`; the preview layer is cleared."""
        if self.held is not None:
            self.held = None
            if self.view is not None and not self.closed:
                self.view.set_preview(None, ())

    # -- changes of the boxes -------------------------------------------------------
    def view_for(self, source: Any = None) -> ImageLayers | None:
        """The layers a key acts on: those whose boxes layer the key was
        pressed on (or is active), else the shown image's."""
        layer = source if source is not None else self.viewer.layers.selection.active
        for view in self.views.values():
            if layer is not None and layer is view.layer("boxes"):
                return view
        return self.view

    def target_key(self, source: Any = None) -> str:
        """The image a key acts on (see :meth:`view_for`)."""
        view = self.view_for(source)
        return view.key if view is not None else self.session.image_key

    def undo(self, source: Any = None) -> Change:
        """Undo the last change (of the image whose boxes layer the key was
        pressed on, else of the shown image)."""
        return self.apply(self.session.undo(self.target_key(source)))

    def redo(self, source: Any = None) -> Change:
        """Redo the last undone change."""
        return self.apply(self.session.redo(self.target_key(source)))

    def step(self, direction: int) -> Change:
        """The next larger (+1) or smaller (-1) box around the last pick."""
        return self.add_with_mask(self.session.step(direction))

    def add_with_mask(self, change: Change) -> Change:
        """Draw a change that made a box from SAM; its mask is computed in
        the background (:meth:`SamPrompts.fill_masks`)."""
        self.apply(change)
        self.prompts.fill_masks(change)
        return change

    def _on_selection(self, view: ImageLayers) -> None:
        if self.closed:
            return
        view.mark_selected()
        if view is self.view:
            self.selection_changed.emit(self.selected())

    def selected(self, source: Any = None) -> list[int]:
        """The boxes selected in the boxes layer a key acts on (see
        :meth:`view_for`; default: the shown image's)."""
        view = self.view_for(source) if source is not None else self.view
        layer = view.layer("boxes") if view is not None else None
        if layer is None or view is None:
            return []
        n = len(self.session.boxes_of(view.key))
        return sorted(i for i in layer.selected_data if 0 <= i < n)

    def select(self, rows: list[int], centre: bool = True) -> None:
        """Select boxes of the shown image (and centre the view on them)."""
        view = self.view
        layer = view.layer("boxes") if view is not None else None
        boxes = self.session.boxes
        rows = [r for r in rows if 0 <= r < len(boxes)]
        if layer is None or view is None:
            return
        layer.selected_data = set(rows)
        layer.refresh()
        if centre and rows:
            b = boxes.xyxy[rows]
            cx = (b[:, 0].min() + b[:, 2].max()) / 2
            cy = (b[:, 1].min() + b[:, 3].max()) / 2
            world = view.image.data_to_world([*boxes.slices[rows[0]], cy, cx])
            self.viewer.camera.center = tuple(world[-2:])

    def select_next(self, step: int = 1) -> None:
        """Select the next (or previous) box and centre the view on it."""
        n = len(self.session.boxes)
        if n == 0:
            return self.say("no boxes on this image yet")
        now = self.selected()
        start = (now[-1] if step > 0 else now[0]) if now else -1 if step > 0 else 0
        i = (start + step) % n
        self.select([i])
        self.say(f"box {i + 1} of {n}: '{self.session.boxes.labels[i]}'")

    def relabel_selected(
        self, label: str | None = None, source: Any = None
    ) -> Change | None:
        """Give the selected boxes (of the boxes layer the key was pressed
        on, else of the shown image) the current class, or ``label``."""
        chosen = self.selected(source)
        if not chosen:
            self.notify(
                "select boxes first (Tab, the box list, or napari's select tool)."
            )
            return None
        key = self.target_key(source)
        return self.apply(self.session.relabel(chosen, label or self.label, key))

    def delete_selected(self, source: Any = None) -> Change | None:
        """Delete the selected boxes (one undo step), of the boxes layer the
        key was pressed on, else of the shown image."""
        chosen = self.selected(source)
        if not chosen:
            self.say("select boxes to delete them (Tab, or the box list)")
            return None
        return self.apply(self.session.delete(chosen, self.target_key(source)))

    def tighten(self) -> None:
        """Snap the selected boxes (or all) to candidates, else to prompts."""
        self.prompts.tighten()

    # -- the end ---------------------------------------------------------------------
    def close(self, reason: str) -> None:
        """Stop the run, let go of every layer, stop listening."""
        if self.closed:
            return
        if self.run is not None:
            self.run.stop(reason)
        self.closed = True
        with contextlib.suppress(RuntimeError):  # deleted by Qt at exit
            self._redraw.stop()
        self.edits.close()
        for view in self.views.values():
            view.release()
