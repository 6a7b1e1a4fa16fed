"""Helpers of the GUI tests (a real viewer, the real vit_t checkpoints)."""

from __future__ import annotations

import os
import threading

from napari_samboxes._napari.widget import SamBoxesWidget
from napari_samboxes.cache import CandidateCache
from napari_samboxes.geometry import boxes_from_shapes

TIMEOUT = int(os.environ.get("SAMBOXES_TEST_TIMEOUT_MS", "120000"))


def make_widget(viewer, ckpt, cache_dir, pps=4, points_per_batch=4):
    """A docked widget with a test checkpoint and its own cache folder."""
    widget = SamBoxesWidget(
        viewer, cache=CandidateCache(cache_dir), points_per_batch=points_per_batch
    )
    viewer.window.add_dock_widget(widget)
    widget.checkpoint.value = str(ckpt)
    widget.points_per_side.value = pps
    return widget


def photo_run(viewer, photo, ckpt, cache_dir, qtbot):
    """``photo`` as layer 'photo', a docked widget, a finished run on it."""
    viewer.add_image(photo, name="photo", rgb=True)
    widget = make_widget(viewer, ckpt, cache_dir)
    assert run_and_wait(widget, qtbot) in ("done", "cached")
    return viewer, widget


def run_and_wait(widget, qtbot, press=None):
    """Press Run (or call ``press``) and wait for the run's outcome."""
    outcomes = []
    widget.run_finished.connect(outcomes.append)
    (press or widget.run.native.click)()
    qtbot.waitUntil(lambda: bool(outcomes), timeout=TIMEOUT)
    widget.run_finished.disconnect(outcomes.append)
    return outcomes[0]


def layer_boxes(layer):
    """The layer's rectangles as (N, 4) xyxy."""
    return boxes_from_shapes(layer.data)[0]


def notes(monkeypatch):
    """Collect napari notifications by level."""
    import napari.utils.notifications as nt

    said = {"info": [], "warning": [], "error": []}
    for k in said:
        monkeypatch.setattr(nt, f"show_{k}", lambda m, k=k: said[k].append(m))
    return said


def press_key(layer, key):
    """Press and release ``key`` on a layer, as napari does: its handler is
    called, and a generator handler is driven through press and release."""
    import inspect

    from napari.utils.key_bindings import KeyBinding

    result = layer.keymap[KeyBinding.from_str(key)](layer)
    if inspect.isgenerator(result):
        for _ in result:
            pass
    return result


def blocking_engine(monkeypatch, batches_before_block=1, fail=None):
    """Wrap the engine so a run stops after some batches until released
    (``go.set()``), then goes on, or raises ``fail``."""
    from napari_samboxes import engine

    go = threading.Event()
    real = engine.iter_prompt_batches

    def slow(*a, **k):
        for n, item in enumerate(real(*a, **k)):
            if n == batches_before_block:
                go.wait(60)
                if fail is not None:
                    raise fail
            yield item

    monkeypatch.setattr(engine, "iter_prompt_batches", slow)
    return go


def cancel_mid_run(widget, qtbot, go):
    """A ``press`` for :func:`run_and_wait`: Run, wait for a batch, Cancel."""

    def press():
        widget.run.native.click()
        qtbot.waitUntil(lambda: "batch" in widget.status.value, timeout=TIMEOUT)
        widget.cancel.native.click()
        go.set()

    return press


def child_pick_script(widget_line, ckpt, folder, then):
    """A child-process script: a hidden viewer, the widget (``widget_line``,
    one line, binds ``w``), ``folder`` opened at a 2 x 2 grid, one pick of
    the smallest candidate, then the lines ``then`` (which see ``app``,
    ``w`` and the box ``x0, y0, x1, y1``)."""
    import textwrap

    head = textwrap.dedent(
        f"""
        import os, sys, time
        import numpy as np
        import napari
        from qtpy.QtCore import QTimer
        from qtpy.QtWidgets import QApplication
        viewer = napari.Viewer(show=False)
        {{widget_line}}
        w.checkpoint.value = {str(ckpt)!r}
        w.points_per_side.value = 2
        w.folder.value = {str(folder)!r}
        app = QApplication.instance()
        while w.current_run is not None or len(w.session.candidates) == 0:
            app.processEvents(); time.sleep(0.01)
        x0, y0, x1, y1 = w.session.candidates.boxes[0]
        w.pick(np.array([[y0, x0], [y1, x1]], float))
        """
    )
    return head.replace("{widget_line}", widget_line) + textwrap.dedent(then)


def wait_image(widget, qtbot, index=None):
    """Wait until folder mode shows the image it is moving to (``index``,
    default its target), with that image's candidates."""
    fm = widget.folder_mode

    def ready():
        want = fm.target if index is None else index
        return (
            fm.index == want == fm.target
            and widget.current_run is None
            and len(widget.session.candidates) > 0
        )

    qtbot.waitUntil(ready, timeout=TIMEOUT)


def activate(viewer, qtbot):
    """Make the viewer's window the active one (it gets the keyboard)."""
    from qtpy.QtWidgets import QApplication

    window = viewer.window._qt_window
    window.activateWindow()
    window.raise_()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is not None, timeout=10_000)


def shown_folder(make_viewer, folder, ckpt, cache_dir, qtbot, pps=4):
    """A shown viewer, the panel docked with a test checkpoint, ``folder``
    open at its first image (candidates there), the window active."""
    viewer = make_viewer(show=True)
    widget = make_widget(viewer, ckpt, cache_dir, pps=pps)
    widget.folder.value = str(folder)
    wait_image(widget, qtbot, 0)
    activate(viewer, qtbot)
    return viewer, widget
