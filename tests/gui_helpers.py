"""Helpers of the GUI tests (a real viewer, the real vit_t checkpoints)."""

from __future__ import annotations

from napari_samboxes._widget import SamBoxesWidget
from napari_samboxes.cache import CandidateCache
from napari_samboxes.geometry import boxes_from_shapes

TIMEOUT = 120_000


def make_widget(viewer, ckpt, cache_dir, pps=4, points_per_batch=4):
    """A docked widget with a test checkpoint and its own cache folder."""
    widget = SamBoxesWidget(
        viewer, cache=CandidateCache(cache_dir), points_per_batch=points_per_batch
    )
    viewer.window.add_dock_widget(widget)
    widget.checkpoint.value = str(ckpt)
    widget.points_per_side.value = pps
    return widget


def run_and_wait(widget, qtbot):
    """Press Run and wait for the run's outcome."""
    outcomes = []
    widget.run_finished.connect(outcomes.append)
    widget.run.native.click()
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
    """Call the handler a layer binds to ``key`` (as napari does on a key press)."""
    from napari.utils.key_bindings import KeyBinding

    return layer.keymap[KeyBinding.from_str(key)](layer)
