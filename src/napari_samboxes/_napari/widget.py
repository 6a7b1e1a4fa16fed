"""The "SAM boxes" panel: it composes the owners and wires the controls.

* :class:`~.runs.RunController`: the panel's workers, in a private pool.
* :class:`~.annotator.Annotator`: the shown image, its layers, its
  candidates and boxes (over the Qt-free :class:`Session`).
* :class:`~.folder.FolderController`: folder mode (over the Qt-free
  :class:`~napari_samboxes.folder.FolderSession`), when a folder is open.
* :class:`~.input.AnnotationMode`: the keys and clicks.
* :class:`~.box_list.BoxList`: the box list.
* :class:`~napari_samboxes.classes.ClassList`: the classes and colours.

Each control's callback is one line that calls one of them.
"""

from __future__ import annotations

import contextlib
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import Container
from psygnal import Signal
from qtpy.QtCore import QEvent, QObject, Qt, QTimer

from ..cache import CandidateCache
from ..classes import ClassList
from ..dataset import count_entries
from ..folder import FolderSession
from ..model import find_checkpoint
from ..pipeline import RunRequest
from ..remember import (
    FIELDS,
    FOLDER_FIELDS,
    folder_file,
    global_file,
    load_settings,
    save_settings,
)
from ..session import Session
from ..settings import Settings, SettingsError
from . import controls
from .annotator import Annotator, layer_key
from .audit import AuditMode
from .box_list import BoxList
from .folder import FolderController, left_folder
from .input import AnnotationMode, canvas_widget, keep_keys_free
from .runs import RunController, without_collection

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["SamBoxesWidget"]

#: The start of every notification of the plugin.
_PREFIX = "SAM boxes:"
#: A folder holding this many entries or more (files and subfolders, counted
#: up to it) is listed and counted in workers, never on the UI thread.
SYNC_OPEN_LIMIT = 2000
_FOLDER_BUTTONS = ("prev_image", "next_image", "next_unannotated", "mark_done")
_NO_CHECKPOINT = (
    "No checkpoint: choose mobile_sam.pt, or press 'Download weights' (39 MB)."
)


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

    #: Emitted when a run ends, with its outcome.
    run_finished = Signal(str)
    #: Emitted after every change of the boxes, with the new boxes.
    boxes_changed = Signal(object)

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        cache: CandidateCache | None = None,
        points_per_batch: int | None = None,
    ) -> None:
        super().__init__(labels=False, scrollable=True)  # fits a laptop screen
        # napari's plugin proxy makes new layer proxies per access: unwrap (``is``)
        self.viewer = getattr(viewer, "__wrapped__", viewer)
        self.cache = cache if cache is not None else CandidateCache()
        self.session = Session(Settings(points_per_batch=points_per_batch))
        self.classes = ClassList()
        self.runs = RunController()
        self.annotator = Annotator(
            self.viewer,
            self.session,
            self.classes,
            self.runs,
            self.cache,
            self.say,
            self.notify,
        )
        self.folder_mode: FolderController | None = None
        self._closed = False
        #: Folder mode searches subfolders too (``view DIR --no-recursive``).
        self.recursive = True
        self._opening = 0
        #: Keys of boxes a closed folder mode could not write.
        self._unsaved: set[str] = set()
        self._said = ""
        self._picks = 0
        #: Run settings given on the command line: over the remembered ones.
        self._pinned: dict[str, Any] = {}
        self._applying = False
        self.extend(controls.make_groups(self._image_choices, find_checkpoint()))
        self.box_list = BoxList(
            self.classes,
            self._select_rows,
            self._relabel_row,
            give_back=lambda: self.mode.focus_canvas(),
        )
        self["picking_group"].native.layout().addWidget(self.box_list)
        self.native.setMaximumWidth(controls.MAX_DOCK_WIDTH)
        self.mode = AnnotationMode(
            self.viewer, self._actions(), self.annotator.click, self._on_move
        )
        self.audit_mode = AuditMode(self.annotator, self.mode)
        self._add_callbacks()
        self.apply_run_settings(load_settings(global_file()), remember=False)
        self._update_checkpoint_status()
        self._on_active_layer()
        self.mode.start()
        keep_keys_free(self.native, self.mode.focus_canvas)
        _warm_up_napari()
        _freeze_long_lived()  # napari's objects; torch's after the first run
        self._frozen = False
        self._resume()

    def _resume(self) -> None:
        """A panel opened where a closed one left a folder goes on there."""
        left = left_folder(self.viewer)
        if left is None:
            return
        ckpt = str(left.get("checkpoint") or "")
        if not self._checkpoint_found() and Path(ckpt).is_file():
            self.checkpoint.value = ckpt
        if left.get("points_per_side"):
            self.points_per_side.value = int(left["points_per_side"])
        self.open_folder(start=int(left.get("index", 0)), path=left["folder"])

    # -- controls by name, in whatever group ------------------------------------------
    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("_"):
                raise
            found = controls.find(self, name)
            if found is None:
                raise
            return found

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            found = controls.find(self, key)
            if found is None:
                raise KeyError(key)
            return found
        return super().__getitem__(key)

    def _actions(self) -> dict[str, Any]:
        """What each key does; each gets the layer the key was pressed on."""
        a = self.annotator
        actions: dict[str, Any] = {
            "prev_image": lambda _: self._folder_do("step", -1),
            "next_image": lambda _: self._folder_do("step", 1),
            "smaller": lambda _: a.step(-1),
            "larger": lambda _: a.step(+1),
            "undo": a.undo,
            "redo": a.redo,
            "mark_done": lambda _: self.toggle_done(),
            "delete": a.delete_selected,
            "clear_picks": lambda _: a.clear_picks(),
            "next_box": lambda _: a.select_next(1),
            "prev_box": lambda _: a.select_next(-1),
        }
        for n in range(1, 10):
            actions[f"class_{n}"] = lambda source, n=n: self.choose_class(n, source)
        return actions

    def _add_callbacks(self) -> None:
        a = self.annotator
        self["audit"].changed.connect(self.audit_mode.toggle)
        self.run.changed.connect(self.start_run)
        self.cancel.changed.connect(lambda: a.stop_run())
        self.download.changed.connect(self._download)
        self.checkpoint.changed.connect(self._update_checkpoint_status)
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"):
            self[name].changed.connect(self._on_thresholds)
        for name in FIELDS:
            self[name].changed.connect(
                lambda *_, name=name: self._remember_run_setting(name)
            )
        self.undo.changed.connect(lambda: a.undo())
        self.redo.changed.connect(lambda: a.redo())
        self.smaller.changed.connect(lambda: a.step(-1))
        self.larger.changed.connect(lambda: a.step(+1))
        self.tighten.changed.connect(a.tighten)
        self.relabel.changed.connect(lambda: a.relabel_selected())
        self.delete.changed.connect(a.delete_selected)
        _when_set(self.folder, self.open_folder)
        self.prev_image.changed.connect(lambda: self._folder_do("step", -1))
        self.next_image.changed.connect(lambda: self._folder_do("step", 1))
        self.next_unannotated.changed.connect(
            lambda: self._folder_do("next_unannotated")
        )
        self["mark_done"].changed.connect(self.toggle_done)
        self.show_candidates.changed.connect(lambda v: a.set_display(str(v)))
        self.show_settings.changed.connect(self._toggle_settings)
        self.box_label.changed.connect(self._on_class)
        self.box_label.classes_added.connect(self._classes_added)
        self.new_class.native.returnPressed.connect(self._new_class)
        self._escape = _GiveBackOnEscape(self.mode.focus_canvas)
        self.new_class.native.installEventFilter(self._escape)
        _when_set(self.classes_file, self._load_classes)
        a.changed.connect(lambda change: self.boxes_changed.emit(change.boxes))
        a.run_finished.connect(self._on_run_finished)
        a.shown.connect(lambda boxes: self.box_list.show_boxes(boxes, a.selected()))
        a.picks_changed.connect(self._on_picks)
        a.attached.connect(self._on_attached)
        a.selection_changed.connect(self.box_list.set_selected)
        a.classes_added.connect(self._classes_added)
        layers = self.viewer.layers
        layers.events.inserted.connect(self._reset_images)
        layers.events.removed.connect(self._reset_images)
        layers.events.removed.connect(self._on_layer_removed)
        layers.selection.events.active.connect(self._on_active_layer)
        self._watcher = _DockWatcher(self)
        self.native.installEventFilter(self._watcher)
        # once docked (see _DockWatcher), Qt deleting the panel's widget shuts
        # it down; an undocked panel has no such hook (Python collects it, and
        # Qt must not call into a half-collected object)
        self._on_destroyed = lambda *_: self.shutdown()
        self._hooked = False
        window = getattr(getattr(self.viewer, "window", None), "_qt_window", None)
        a.edits.watch_tables(window)

    # -- messages -------------------------------------------------------------------
    def say(self, text: str) -> None:
        """Show what just happened, and the next thing to do, in the status."""
        if self._closed:
            return
        self._said = text
        hint = self.next_step()
        value = f"{text}\n{hint}" if text and text != hint else hint
        self.status.value = value
        self.status.native.setToolTip(value)

    def next_step(self) -> str:
        """What the annotator should do next (the status line's hint)."""
        a, fm = self.annotator, self.folder_mode
        if not self._checkpoint_found():
            return _NO_CHECKPOINT
        if fm is not None and fm.index >= 0 and fm.session.is_done(fm.index):
            return "image done: press d for the next image"
        if self._picks == 1:
            return "click a second point on the object"
        if a.run is not None and len(self.session.candidates) == 0:
            return "computing candidates..."
        if self.session.candidate_set is None:
            return "open a folder, or press Run on an image"
        if fm is not None:
            return "click two points on an object; d: next image, Space: done"
        return "click two points on an object"

    def notify(self, text: str, level: str = "info") -> None:
        """A napari notification (``info``, ``warning`` or ``error``)."""
        from napari.utils import notifications

        getattr(notifications, f"show_{level}")(f"{_PREFIX} {text}")

    def _on_attached(self) -> None:
        """Another image is shown: the keyboard goes to the canvas, and the
        plugin's notifications about the image before are closed."""
        self.mode.focus_canvas()
        canvas = canvas_widget(self.viewer)
        if canvas is None:
            return
        from qtpy.QtWidgets import QWidget

        for toast in canvas.findChildren(QWidget):
            label: Any = getattr(toast, "message", None)
            if (
                type(toast).__name__ == "NapariQtNotification"
                and toast.isVisible()
                and hasattr(label, "text")
                and str(label.text()).startswith(_PREFIX)
            ):
                with contextlib.suppress(RuntimeError, AttributeError):
                    toast.close_with_fade()

    def _on_picks(self, n: int) -> None:
        self._picks = n
        self.say(self._said)

    # -- classes -----------------------------------------------------------------------
    def choose_class(self, n: int, source: Any = None) -> None:
        """Key ``n``: relabel the selected boxes (of the boxes layer the key
        was pressed on, else of the shown image), else make it the class."""
        name = self.classes.nth(n)
        if name is None:
            return self.say(f"there is no class {n} (the list has {len(self.classes)})")
        if self.annotator.selected(source):
            self.annotator.relabel_selected(name, source)
        else:
            self.box_label.value = name
            self.say(f"class {n}: {name}")

    def _on_class(self, value: Any = None) -> None:
        self.annotator.set_label(str(self.box_label.value))

    def _new_class(self) -> None:
        text = str(self.new_class.value).strip()
        same = [c for c in self.classes if c.casefold() == text.casefold()]
        try:  # an existing class in other letter case is that class
            self.box_label.value = same[0] if same else text  # adds, selects
        except ValueError as e:
            if text:
                return self.notify(str(e), "warning")
        self.new_class.value = ""
        self.mode.focus_canvas()

    def _classes_added(self, names: list[str]) -> None:
        self.classes.add(names)
        self._save_classes()

    def _save_classes(self) -> None:
        try:
            self.classes.save()
        except (OSError, ValueError) as e:
            self.notify(f"could not save the class list: {e}", "error")
        self.box_label.set_classes(self.classes.names)
        for view in self.annotator.views.values():
            view.recolour(self.classes)

    def _load_classes(self) -> None:
        path = str(self.classes_file.value or "")
        if path in ("", "."):
            return
        try:
            self.classes.load(path)
        except (OSError, ValueError) as e:
            self.notify(str(e), "error")
        self._save_classes()

    # -- images and runs -------------------------------------------------------------
    def _image_choices(self, _: Any = None) -> list[tuple[str, Any]]:
        from napari.layers import Image

        return [(la.name, la) for la in self.viewer.layers if isinstance(la, Image)]

    def _reset_images(self, event: Any = None) -> None:
        self.image.reset_choices()

    def _on_layer_removed(self, event: Any) -> None:
        layer = event.value
        self.annotator.image_removed(layer)
        if self.folder_mode is not None:
            self.folder_mode.image_removed(layer)
        view = self.annotator.view
        if view is not None and layer is view.bindings["boxes"].layer:
            self.say(
                "the boxes layer was removed; its boxes are kept (and saved) "
                "and are drawn again on the next change"
            )

    def _on_active_layer(self, event: Any = None) -> None:
        active = self.viewer.layers.selection.active
        if active is not None and active in [c[1] for c in self._image_choices()]:
            self.image.value = active

    def _checkpoint_found(self) -> bool:
        value = str(self.checkpoint.value or "")
        return value not in ("", ".") and Path(value).is_file()

    def _update_checkpoint_status(self, event: Any = None) -> None:
        found = self._checkpoint_found()
        self.download.enabled = not found
        self.download.visible = not found  # a row less once it is there
        path = Path(str(self.checkpoint.value or ""))
        self.say(f"checkpoint: {path.name}" if found else "")

    def request_for(self, image: Any, auto: bool = False) -> RunRequest | None:
        """A run request for ``image`` from the controls; None (and a
        notification) when it cannot run. ``auto`` (folder mode's run of a
        new image): no checkpoint is said in the status line only."""
        if image is None:
            self.notify("open or select an image layer first.", "error")
            return None
        if not self._checkpoint_found():
            if auto:
                self.say("")
                return None
            self.notify(
                "no checkpoint file. Choose mobile_sam.pt or press 'Download weights'.",
                "error",
            )
            return None
        try:
            settings = self.session.settings.with_(
                points_per_side=int(self.points_per_side.value),
                crop_n_layers=int(self.crop_n_layers.value),
            )
            return controls.run_request(
                settings,
                image,
                str(self.checkpoint.value),
                str(self.device.value),
                tuple(self.viewer.dims.point),
                lambda text: self.notify(text, "warning"),
            )
        except (SettingsError, ValueError) as e:
            self.notify(str(e), "error")
            return None

    def start_run(self, event: Any = None) -> bool:
        """Run the pipeline on the chosen image layer."""
        if self.annotator.run is not None:
            self.notify("a run is already going; cancel it first.")
            return False
        image = self.image.value
        request = self.request_for(image)
        if request is None:
            return False
        fm = self.folder_mode
        on_folder = fm is not None and image is fm.image and fm.index >= 0
        key = fm.session.key(fm.index) if on_folder and fm else layer_key(image)
        self.runs.stop("lookahead")  # the shown image goes first
        self.run.enabled, self.cancel.enabled = False, True
        started = self.annotator.start_run(image, key, request)
        if not started:
            self.run.enabled, self.cancel.enabled = True, False
        return started

    def _on_run_finished(self, outcome: str) -> None:
        if not self._frozen:  # torch and the model are loaded now
            self._frozen = _freeze_long_lived()
        if not self._closed:
            self.run.enabled, self.cancel.enabled = True, False
            self.say(self._said)
        self.run_finished.emit(outcome)

    def _on_thresholds(self, event: Any = None) -> None:
        try:
            self.session.set_thresholds(*controls.thresholds(self.__getitem__))
        except SettingsError as e:
            return self.notify(str(e), "error")
        if self.session.candidate_set is not None:
            self.annotator.draw_candidates()
            self.say(f"{len(self.session.candidates)} candidates")

    def _on_move(self, world: Any) -> None:
        view = self.annotator.view
        if view is not None and view.image in self.viewer.layers:
            self.annotator.preview(view.image.world_to_data(world))

    def _toggle_settings(self) -> None:
        group = self["settings_group"]
        group.visible = not group.visible
        self.show_settings.text = "Settings v" if group.visible else "Settings >"

    def _download(self) -> None:
        from ..model import fetch_weights

        def done(path: Path) -> None:
            if not self._closed:
                self.checkpoint.value = str(path)
                self.notify(f"downloaded {path}")

        def failed(exc: BaseException) -> None:
            if self._closed:
                return
            self.notify(
                f"the download failed ({exc}); download mobile_sam.pt by hand and "
                "choose it as the checkpoint.",
                "error",
            )
            self._update_checkpoint_status()

        self.download.enabled = False
        self.say("downloading weights...")
        self.runs.submit("download", fetch_weights, on_return=done, on_error=failed)

    # -- the box list ------------------------------------------------------------------
    def _select_rows(self, rows: list[int]) -> None:
        self.annotator.select(rows)

    def _relabel_row(self, row: int, name: str) -> None:
        if self.classes.add([name]):  # a new name becomes a class
            self._save_classes()
        self.annotator.apply(self.session.relabel([row], name))
        self.mode.focus_canvas()

    # -- run settings, remembered --------------------------------------------------
    def run_settings(self) -> dict[str, Any]:
        """The remembered run settings as the controls hold them."""
        out: dict[str, Any] = {}
        for name in FIELDS:
            v = self[name].value
            out[name] = v if isinstance(v, str) else type(getattr(Settings(), name))(v)
        return out

    def apply_run_settings(
        self, values: dict[str, Any], remember: bool = True, pin: bool = False
    ) -> None:
        """Set run settings (the :data:`~napari_samboxes.remember.FIELDS`);
        ``remember``: store them (in the folder's file in folder mode, else,
        and for the device always, in the user's); ``pin``: they stay over
        a folder's remembered ones until changed by hand (the command
        line's)."""
        values = {k: v for k, v in values.items() if k in FIELDS}
        if pin:
            self._pinned.update(values)
        self._applying = True
        try:
            for name, v in values.items():
                with contextlib.suppress(ValueError, TypeError):
                    self[name].value = v
        finally:
            self._applying = False
        if remember:
            self._store_run_settings(list(values))

    def _store_run_settings(self, names: list[str]) -> None:
        """Write these fields, as the controls hold them, where they belong."""
        now = self.run_settings()
        fm = self.folder_mode
        folder = fm is not None and not fm.closed
        here = [n for n in names if folder and n in FOLDER_FIELDS]
        user = [n for n in names if n not in here]
        if here and fm is not None:
            save_settings(
                folder_file(fm.session.dataset.folder), {n: now[n] for n in here}
            )
        if user:
            save_settings(global_file(), {n: now[n] for n in user})

    def _remember_run_setting(self, name: str) -> None:
        """A run setting changed by hand: remembered, and no longer pinned."""
        if self._applying or self._closed:
            return
        self._pinned.pop(name, None)
        self._store_run_settings([name])

    # -- folder mode -------------------------------------------------------------------
    def open_folder(
        self, event: Any = None, start: int = 0, path: str | None = None
    ) -> None:
        """Open the folder of the ``folder`` control (or ``path``) at image
        ``start`` (folder mode)."""
        if path is not None:
            with self.folder.changed.blocked():
                self.folder.value = path
        path_ = Path(str(self.folder.value or ""))
        self._open_folder(path_, start)

    def _open_folder(self, path: Path, start: int) -> None:
        if not path.is_dir():
            return self.notify(f"{path} is not a folder.", "error")
        self._opening += 1
        if count_entries(path, SYNC_OPEN_LIMIT) < SYNC_OPEN_LIMIT:
            try:
                session = FolderSession(path, self.recursive)
            except (OSError, ValueError) as e:
                return self.notify(str(e), "error")
            return self._open_session(path, start, session)
        # a large folder is listed in a worker; its progress is counted
        # in another once its first image is on the way
        self.say(f"listing {path}...")
        ticket = self._opening
        self.runs.submit(
            "open",
            partial(without_collection, FolderSession, path, self.recursive, False),
            on_return=lambda session: self._listed(ticket, path, start, session),
            on_error=lambda e: self.notify(f"{path}: cannot be opened: {e}", "error"),
        )

    def _listed(self, ticket: int, path: Path, start: int, session: Any) -> None:
        if ticket == self._opening and not self._closed:
            _freeze_long_lived()  # the folder's list: out of full collections
            self._open_session(path, start, session)

    def _open_session(self, path: Path, start: int, session: FolderSession) -> None:
        old = self.folder_mode
        reuse = None
        if old is not None:  # the next folder is shown in the same layers
            old.hand_over = Path(path).resolve() != old.key
            reuse = old.image if old.hand_over else None
            old.close()
        try:
            fm = FolderController(
                self.viewer,
                path,
                self.annotator,
                self.runs,
                lambda image: self.request_for(image, auto=True),
                self.say,
                self.notify,
                self._show_progress,
                session=session,
            )
        except (OSError, ValueError) as e:
            if reuse is not None:  # free for a later panel or folder
                self.annotator.release_image(reuse)
            return self.notify(str(e), "error")
        self.folder_mode = fm
        # the folder's remembered run settings (the command line's over
        # them), before its first run; stored beside its annotations
        stored = load_settings(folder_file(path))
        stored = {k: v for k, v in stored.items() if k in FOLDER_FIELDS}
        self.apply_run_settings({**stored, **self._pinned}, remember=False)
        self._store_run_settings(list(self._pinned))  # the command line's
        fm.on_closed = lambda: self._folder_closed(fm)
        fm.on_counted = lambda: self._folder_counted(fm)
        fm.take_over(reuse)
        # the files are the truth again, but for boxes a closed folder mode
        # could not write (kept, and saved with the next change)
        unsaved = set(self._unsaved)
        self.session.forget([k for k in fm.session.image_keys() if k not in unsaved])
        for key in unsaved:
            if fm.session.record(key, self.session.boxes_of(key)):
                self._unsaved.discard(key)
        with self.classes_file.changed.blocked():
            self.classes_file.value = str(fm.session.dataset.classes_path)
        self.classes.replace(fm.session.classes.names)
        self.classes.path = fm.session.classes.path
        self.classes.track(fm.session.classes.on_disk)
        self.box_label.set_classes(self.classes.names)
        for name in _FOLDER_BUTTONS:
            self[name].enabled = True
        # on the next pass of the event loop: opening and showing never
        # add up to one stall
        QTimer.singleShot(0, lambda: None if fm.closed else fm.show(start))

    def _folder_counted(self, fm: FolderController) -> None:
        """A large folder's progress is counted: its tables' labels join the
        class list."""
        if self.folder_mode is fm and self.classes.add(fm.session.classes.names):
            self.box_label.set_classes(self.classes.names)

    def _folder_closed(self, fm: FolderController) -> None:
        self._unsaved |= fm.session.unsaved_keys()
        if self.folder_mode is fm:
            self.folder_mode = None
            if not self._closed:
                for name in _FOLDER_BUTTONS:
                    self[name].enabled = False
                # single images again: the user's settings (the command
                # line's over them)
                self.apply_run_settings(
                    {**load_settings(global_file()), **self._pinned}, remember=False
                )

    def _show_progress(self, text: str) -> None:
        if not self._closed:
            self.folder_progress.value = text
            self.say(self._said)

    def _folder_do(self, action: str, *args: Any) -> None:
        if self.folder_mode is None:
            return self.notify("open a folder first (the 'folder' control).")
        getattr(self.folder_mode, action)(*args)

    def toggle_done(self) -> None:
        """Mark the shown image done (again: not done any more)."""
        if self.folder_mode is None:
            return self.notify(
                "open a folder first: done flags live beside its images."
            )
        done = self.folder_mode.toggle_done()
        self.say("image marked done" if done else "image no longer marked done")

    def pick(self, pts: Any) -> Any:
        """Pick with points in the image layer's data coordinates (rows,
        columns, leading slice indices), as two clicks would."""
        return self.annotator.pick(pts)

    @property
    def current_run(self) -> Any:
        """The run going now, or None."""
        return self.annotator.run

    # -- the end -------------------------------------------------------------------
    def shutdown(self, reason: str = "the viewer was closed") -> None:
        """Stop for good: pending boxes saved, runs stopped (the panel's own
        workers waited for, at most 2 s), layers and keys let go."""
        if self._closed:
            return
        self._closed = True
        if self._hooked:
            with contextlib.suppress(TypeError, RuntimeError):
                self.native.destroyed.disconnect(self._on_destroyed)
        # each step on its own: at exit Qt may have deleted some objects
        remember: dict[str, Any] = {
            "checkpoint": str(self.checkpoint.value or ""),
            "points_per_side": int(self.points_per_side.value),
        }
        for step in (
            lambda: self.folder_mode.close(**remember) if self.folder_mode else None,
            lambda: self.annotator.close(reason),
            self.audit_mode.stop,
            self.mode.stop,
            self.runs.shutdown,
            lambda: setattr(self, "enabled", False),  # its keys do nothing
        ):
            with contextlib.suppress(RuntimeError):
                step()


def _when_set(field: Any, act: Any) -> None:
    """Call ``act`` when a file field is set: from Python or its browse
    button at once, when typed only once the typing ends (Enter, or the
    focus leaves): not on every key stroke."""
    line = field.line_edit.native

    def changed(*_: Any) -> None:
        if not line.hasFocus():
            act()

    field.changed.connect(changed)
    line.editingFinished.connect(lambda: act() if line.isModified() else None)
    line.editingFinished.connect(lambda: line.setModified(False))


def _warm_up_napari() -> None:
    """Make napari do now, as the panel opens, what it does once per process
    for the first layer of any kind (set up its unit registry, pint: a
    quarter of a second here), instead of when the first image is shown."""
    from napari.layers import Image

    Image(np.zeros((1, 1), np.uint8))


def _freeze_long_lived() -> bool:
    """Python's collector leaves the objects alive now out of its full
    collections (``gc.freeze``): when a panel opens (napari's objects) and
    after its first run (torch's and the model's). A full collection scans
    every object of the process: with torch and napari loaded, 0.33-0.39 s
    of frozen viewer every few image moves, measured here. Returns whether
    it froze; ``NAPARI_SAMBOXES_GC_FREEZE=0`` keeps Python's default."""
    import gc
    import os

    if os.environ.get("NAPARI_SAMBOXES_GC_FREEZE", "1") == "0":
        return False
    gc.freeze()
    return True


class _GiveBackOnEscape(QObject):
    """Escape in a text field gives the keyboard back to the canvas."""

    def __init__(self, give_back: Any) -> None:
        super().__init__()
        self.give_back = give_back

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt's)
        if event.type() == QEvent.Type.KeyPress and event.key() == Qt.Key.Key_Escape:
            obj.clear()
            self.give_back()
            return True
        return False


class _DockWatcher(QObject):
    """The panel's dock hidden (flush, pause), shown (resume) or closed."""

    def __init__(self, widget: SamBoxesWidget) -> None:
        super().__init__(widget.native)
        self.w = widget

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt's)
        w = getattr(self, "w", None)  # None while Python tears it down
        if w is None or getattr(w, "_closed", True):
            return False
        kind, mode = event.type(), w.folder_mode
        if kind == QEvent.Type.ParentChange and obj.parent() is None:
            w.shutdown("the SAM boxes panel was closed")
        elif kind == QEvent.Type.ParentChange and not w._hooked:  # docked
            w._hooked = True
            obj.destroyed.connect(w._on_destroyed)
        elif kind == QEvent.Type.Show and not event.spontaneous():
            # napari gives a dock it shows the keyboard: the canvas takes it back
            QTimer.singleShot(0, w.mode.focus_canvas)
            if mode is not None:
                mode.resume()
        elif kind == QEvent.Type.Hide and mode is not None and not event.spontaneous():
            mode.pause()
        return False
