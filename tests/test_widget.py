"""The widget in a real napari viewer (Xvfb), driven as a user would.

Tests press buttons, set controls and add points, then wait for the
widget's ``run_finished`` signal (never for a tick count) and check layer
data. The model is the real vit_t with the structured test checkpoint.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gui_helpers import (
    blocking_engine,
    cancel_mid_run,
    layer_boxes,
    notes,
    run_and_wait,
)
from napari_samboxes import engine, propose_boxes, select_box
from napari_samboxes._napari.widget import SamBoxesWidget
from napari_samboxes.cache import CandidateCache
from napari_samboxes.geometry import shapes_from_boxes

PPS = 4
TIMEOUT = 120_000


def test_manifest_validates_and_menu_lists_widget(make_napari_viewer):
    exe = Path(sys.executable).with_name("npe2")
    r = subprocess.run(
        [str(exe), "validate", "napari-samboxes"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr
    viewer = make_napari_viewer()

    def walk(menu):
        for a in menu.actions():
            yield a.text()
            if a.menu():
                yield from walk(a.menu())

    assert "SAM boxes (napari-samboxes)" in list(walk(viewer.window.plugins_menu))


def make_widget(viewer, ckpt, tmp_path, pps=PPS, points_per_batch=4):
    widget = SamBoxesWidget(
        viewer,
        cache=CandidateCache(tmp_path / "cache"),
        points_per_batch=points_per_batch,
    )
    viewer.window.add_dock_widget(widget)
    widget.checkpoint.value = str(ckpt)
    widget.points_per_side.value = pps
    widget.show_candidates.value = "all"
    return widget


@pytest.fixture
def setup(make_napari_viewer, photo, structured_ckpt, tmp_path):
    viewer = make_napari_viewer()
    image = viewer.add_image(photo, name="photo", rgb=True)
    widget = make_widget(viewer, structured_ckpt, tmp_path)
    assert widget.image.value is image
    return viewer, image, widget


def no_candidates_shown(viewer, name):
    """No candidates layer, or a hidden one (kept for the next run)."""
    layer = f"{name} candidates"
    return layer not in viewer.layers or not viewer.layers[layer].visible


def nested_points(c):
    """Two points inside a candidate nested in a larger one, and the pick."""
    b = c.boxes
    inner = next(
        i
        for i in range(len(b))
        if any(
            j != i and (b[j, :2] <= b[i, :2]).all() and (b[j, 2:] >= b[i, 2:]).all()
            for j in range(len(b))
        )
    )
    x0, y0, x1, y1 = b[inner]
    pts = np.array(
        [
            [x0 + 0.25 * (x1 - x0), y0 + 0.3 * (y1 - y0)],
            [x1 - 0.2 * (x1 - x0), y1 - 0.25 * (y1 - y0)],
        ]
    )
    return pts, select_box(c, pts)


def test_run_then_pick_two_points(setup, qtbot, photo, structured_model):
    viewer, image, widget = setup
    assert run_and_wait(widget, qtbot) == "done"
    expected = propose_boxes(photo, structured_model, points_per_side=PPS)
    cand = viewer.layers["photo candidates"]
    assert len(cand.data) == len(expected) > 10
    np.testing.assert_allclose(layer_boxes(cand), expected.boxes)
    picks = viewer.layers["photo picks"]
    # the picks layer is active in pan_zoom mode: clicks pick, drags pan
    assert viewer.layers.selection.active is picks and picks.mode == "pan_zoom"
    pts_xy, want = nested_points(expected)
    widget.box_label.value = "helmet"
    picks.add(pts_xy[0, ::-1])
    assert len(viewer.layers["photo boxes"].data) == 0  # one click: no box yet
    picks.add(pts_xy[1, ::-1])
    boxes = viewer.layers["photo boxes"]
    assert len(boxes.data) == 1
    np.testing.assert_allclose(
        boxes.data[0], shapes_from_boxes(expected.boxes[want][None])[0]
    )
    assert list(boxes.features["label"]) == ["helmet"]
    assert list(boxes.features["source"]) == ["candidate"]
    assert boxes.features["score"][0] == pytest.approx(float(expected.scores[want]))
    assert len(picks.data) == 0
    picks.add(pts_xy[0, ::-1])  # a third click alone makes no box
    assert len(boxes.data) == 1
    assert viewer.layers.selection.active is picks


def test_streaming_thresholds_and_cache(
    make_napari_viewer, photo, structured_ckpt, tmp_path, qtbot, monkeypatch
):
    viewer = make_napari_viewer()
    viewer.add_image(photo, name="photo", rgb=True)
    widget = make_widget(viewer, structured_ckpt, tmp_path, points_per_batch=4)
    go = blocking_engine(monkeypatch, batches_before_block=2)
    widget.run.native.click()
    # candidates of the first batches are drawn while the run waits
    qtbot.waitUntil(
        lambda: (
            "photo candidates" in viewer.layers
            and len(viewer.layers["photo candidates"].data) > 0
        ),
        timeout=TIMEOUT,
    )
    cand = viewer.layers["photo candidates"]
    early = len(cand.data)
    assert widget.current_run is not None and "batch 2/" in widget.status.value
    go.set()
    qtbot.waitUntil(lambda: widget.current_run is None, timeout=TIMEOUT)
    final = len(cand.data)
    assert early < final  # grew as batches came in
    monkeypatch.undo()

    def no_model(*a, **k):
        raise AssertionError("the model ran")

    monkeypatch.setattr(engine, "iter_prompt_batches", no_model)
    widget.pred_iou_thresh.value = 0.92
    assert 0 < len(cand.data) < final
    widget.pred_iou_thresh.value = 0.88
    assert len(cand.data) == final
    assert run_and_wait(widget, qtbot) == "cached"
    assert "(from cache)" in widget.status.value and len(cand.data) == final


def test_cancel_restores_the_previous_candidates(setup, qtbot, monkeypatch):
    viewer, image, widget = setup
    run_and_wait(widget, qtbot)
    before = [np.array(d) for d in viewer.layers["photo candidates"].data]
    widget.points_per_side.value = 3  # not cached
    go = blocking_engine(monkeypatch)

    assert run_and_wait(widget, qtbot, cancel_mid_run(widget, qtbot, go)) == "cancelled"
    now = viewer.layers["photo candidates"].data
    assert len(now) == len(before)
    assert all(np.array_equal(a, b) for a, b in zip(now, before, strict=True))
    assert widget.status.value.startswith("cancelled") and widget.run.enabled


def test_cancel_of_a_first_run_leaves_no_candidates(setup, qtbot, monkeypatch):
    viewer, image, widget = setup
    go = blocking_engine(monkeypatch)

    assert run_and_wait(widget, qtbot, cancel_mid_run(widget, qtbot, go)) == "cancelled"
    assert no_candidates_shown(viewer, "photo")


def test_second_run_is_refused_while_running(setup, qtbot, monkeypatch):
    viewer, image, widget = setup
    said = notes(monkeypatch)
    go = blocking_engine(monkeypatch)

    def press():
        widget.run.native.click()
        first = widget.current_run
        assert not widget.run.enabled
        assert not widget.start_run()  # a second run (a script) is refused
        assert widget.current_run is first and "already" in said["info"][0]
        go.set()

    assert run_and_wait(widget, qtbot, press) == "done"


@pytest.mark.parametrize("kind", ["missing", "corrupt"])
def test_bad_checkpoint_shows_error_and_keeps_layers(
    setup, qtbot, monkeypatch, tmp_path, kind
):
    viewer, image, widget = setup
    said = notes(monkeypatch)
    mine = viewer.add_shapes(  # the user's own layer of the plugin's name
        [np.array([[1, 1], [1, 9], [9, 9], [9, 1]])],
        shape_type="rectangle",
        name="photo boxes",
    )
    before = list(viewer.layers)
    bad = tmp_path / "mobile_sam.pt"
    widget.checkpoint.value = str(bad)
    if kind == "missing":
        widget.run.native.click()
        assert "no checkpoint file" in said["error"][0]
    else:
        bad.write_bytes(b"not a checkpoint" * 10)
        widget.checkpoint.value = str(bad)
        assert run_and_wait(widget, qtbot) == "error"
        assert "could not be read" in said["error"][0]
    assert all(layer in viewer.layers for layer in before)  # none removed
    assert len(mine.data) == 1 and "napari_samboxes" not in mine.metadata


def test_box_table_and_napari_csv_round_trips(make_napari_viewer, tmp_path):
    import napari

    viewer = make_napari_viewer()
    verts = shapes_from_boxes(np.array([[3, 4, 10, 12], [20, 5, 40, 30]]))
    layer = viewer.add_shapes(
        verts,
        shape_type="rectangle",
        name="boxes",
        features={"label": ["cat", "dog, big"], "score": [0.9, np.nan]},
    )
    p = tmp_path / "table.csv"
    napari.save_layers(str(p), [layer], plugin="napari-samboxes")
    back = viewer.open(str(p), plugin="napari-samboxes")[0]
    assert list(back.features["label"]) == ["cat", "dog, big"]
    np.testing.assert_allclose(np.array(back.data), np.array(layer.data))
    q = tmp_path / "napari.csv"
    napari.save_layers(str(q), [layer], plugin="napari")
    from napari_builtins.io import napari_get_reader as builtin

    from napari_samboxes._napari.reader import napari_get_reader

    # handed to napari's own reader
    assert napari_get_reader(str(q)) is builtin(str(q))
    again = viewer.open(str(q), plugin="napari")[0]
    np.testing.assert_allclose(np.array(again.data), np.array(layer.data))


def test_widget_uses_results_precomputed_by_the_cli(
    make_napari_viewer, photo, structured_ckpt, tmp_path, qtbot, monkeypatch
):
    import imageio.v3 as iio

    from napari_samboxes.cli import main

    path = tmp_path / "photo.png"
    iio.imwrite(path, photo)
    args = ["propose", str(path), "--out", str(tmp_path / "out")]
    args += ["--points-per-side", str(PPS), "--checkpoint", str(structured_ckpt)]
    assert main([*args, "--cache", str(tmp_path / "cache")]) == 0
    viewer = make_napari_viewer()
    viewer.open(str(path))
    widget = make_widget(viewer, structured_ckpt, tmp_path)
    monkeypatch.setattr(
        engine,
        "iter_prompt_batches",
        lambda *a, **k: (_ for _ in ()).throw(AssertionError("model ran")),
    )
    assert run_and_wait(widget, qtbot) == "cached"
    assert len(viewer.layers["photo candidates"].data) > 0


@pytest.mark.parametrize(
    ("fault", "said_part"),
    [
        (RuntimeError("decoder exploded"), "decoder exploded"),
        (MemoryError("cannot allocate 18 GiB"), "out of memory"),
    ],
)
def test_model_failure_keeps_the_previous_candidates(
    setup, qtbot, monkeypatch, fault, said_part
):
    viewer, image, widget = setup
    said = notes(monkeypatch)
    run_and_wait(widget, qtbot)  # a good run first
    good = [np.array(d) for d in viewer.layers["photo candidates"].data]
    widget.points_per_side.value = 3  # not cached
    go = blocking_engine(monkeypatch, fail=fault)
    go.set()
    assert run_and_wait(widget, qtbot) == "error"
    assert said_part in said["error"][0]
    if isinstance(fault, MemoryError):
        assert "256 x 192" in said["error"][0]
    now = viewer.layers["photo candidates"].data
    assert len(now) == len(good)
    assert all(np.array_equal(a, b) for a, b in zip(now, good, strict=True))


@pytest.mark.parametrize("what", ["removed", "replaced"])
def test_image_removed_or_replaced_during_run(setup, qtbot, monkeypatch, what):
    viewer, image, widget = setup
    said = notes(monkeypatch)
    go = blocking_engine(monkeypatch)

    def press():
        widget.run.native.click()
        qtbot.waitUntil(lambda: "batch" in widget.status.value, timeout=TIMEOUT)
        if what == "removed":
            viewer.layers.remove(image)
        else:
            image.data = np.zeros_like(image.data)
        go.set()

    assert run_and_wait(widget, qtbot, press) == "stopped"
    assert "removed" in said["warning"][0] or "changed" in said["warning"][0]
    assert len(widget.session.candidates) == 0
    assert no_candidates_shown(viewer, "photo")


def test_viewer_closed_during_run(setup, qtbot, monkeypatch):
    viewer, image, widget = setup
    go = blocking_engine(monkeypatch)
    widget.run.native.click()
    job = widget.current_run.job
    done = []
    job.signals.finished.connect(lambda: done.append(1))
    qtbot.waitUntil(lambda: "batch" in widget.status.value, timeout=TIMEOUT)
    viewer.close()
    go.set()
    qtbot.waitUntil(lambda: bool(done), timeout=TIMEOUT)  # stops, no hang


@pytest.mark.parametrize("shape", [(3, 40, 50), (2, 3, 40, 50), (2, 2, 3, 40, 50)])
def test_stacks_use_the_current_slice(
    make_napari_viewer, photo, structured_ckpt, tmp_path, qtbot, shape
):
    viewer = make_napari_viewer()
    stack = np.zeros(shape, np.uint8)
    lead = tuple(s - 1 for s in shape[:-2])
    stack[lead] = photo[:40, :50, 0]
    image = viewer.add_image(stack, name="stack")
    viewer.dims.set_current_step(range(len(lead)), lead)
    widget = make_widget(viewer, structured_ckpt, tmp_path, pps=2)
    run_and_wait(widget, qtbot)
    cand = viewer.layers["stack candidates"]
    assert cand.ndim == len(shape) and len(cand.data) > 0
    assert all(np.array_equal(d[0, :-2], lead) for d in cand.data)
    b = widget.session.candidates.boxes[0]
    picks = viewer.layers["stack picks"]
    picks.add(np.array([[*lead, b[1], b[0]], [*lead, b[3], b[2]]], float))
    boxes = viewer.layers["stack boxes"]
    assert len(boxes.data) == 1 and np.array_equal(boxes.data[0][0, :-2], lead)
    assert image.ndim == len(shape)


def test_multiscale_uses_a_level_that_fits_and_scales_boxes(
    make_napari_viewer,
    photo,
    structured_ckpt,
    tmp_path,
    qtbot,
    monkeypatch,
    structured_model,
):
    import napari_samboxes.image as im

    monkeypatch.setattr(im, "MAX_LEVEL_SIDE", 300)
    big = np.repeat(np.repeat(photo, 2, 0), 2, 1)  # 384 x 512: too big
    viewer = make_napari_viewer()
    viewer.add_image([big, photo], name="ms", rgb=True, multiscale=True)
    widget = make_widget(viewer, structured_ckpt, tmp_path, pps=2)
    run_and_wait(widget, qtbot)
    small = propose_boxes(photo, structured_model, points_per_side=2)
    want = small.boxes.copy()
    want[:, :2] *= 2
    want[:, 2:] = (want[:, 2:] + 1) * 2 - 1
    np.testing.assert_allclose(layer_boxes(viewer.layers["ms candidates"]), want)


def test_rgb_data_with_rgb_false_warns(
    make_napari_viewer, photo, structured_ckpt, tmp_path, monkeypatch
):
    viewer = make_napari_viewer()
    viewer.add_image(photo, name="p", rgb=False)
    said = notes(monkeypatch)
    widget = make_widget(viewer, structured_ckpt, tmp_path, pps=2)
    widget.run.native.click()
    assert "rgb=False" in said["warning"][0]
    assert "at least 4 x 4" in said["error"][0] and widget.current_run is None


def test_no_image_layer_is_a_clear_error(
    make_napari_viewer, structured_ckpt, monkeypatch, tmp_path
):
    viewer = make_napari_viewer()
    viewer.add_points([[1, 1]])
    said = notes(monkeypatch)
    widget = make_widget(viewer, structured_ckpt, tmp_path)
    widget.run.native.click()
    assert "image layer" in said["error"][0] and widget.current_run is None


def test_pick_edge_cases(setup, qtbot, monkeypatch):
    viewer, image, widget = setup
    run_and_wait(widget, qtbot)
    said = notes(monkeypatch)
    picks = viewer.layers["photo picks"]
    c = widget.session.candidates
    picks.add(np.array([[-20.0, 5.0], [10.0, 10.0]]))
    assert "outside" in said["info"][-1]
    assert len(viewer.layers["photo boxes"].data) == 0
    x0, y0, x1, y1 = c.boxes[0]
    p = [(y0 + y1) / 2, (x0 + x1) / 2]
    picks.add(p)
    picks.add(p)  # same pixel twice: the smallest box holding it
    boxes = viewer.layers["photo boxes"]
    want = c.boxes[select_box(c, [[p[1], p[0]]])]
    np.testing.assert_array_equal(layer_boxes(boxes), [want])
    viewer.layers.remove(boxes)  # deleted by the user: recreated on a pick
    picks.add(p)
    picks.add(p)
    assert len(viewer.layers["photo boxes"].data) == 2  # the session kept both
    viewer.layers.remove(viewer.layers["photo picks"])
    assert run_and_wait(widget, qtbot) == "cached"
    assert "photo picks" in viewer.layers


def test_pick_while_candidates_stream(setup, qtbot, monkeypatch):
    viewer, image, widget = setup
    go = blocking_engine(monkeypatch)

    def press():
        widget.run.native.click()
        qtbot.waitUntil(lambda: len(widget.session.candidates) > 0, timeout=TIMEOUT)
        assert widget.current_run is not None
        x0, y0, x1, y1 = widget.session.candidates.boxes[0]
        picks = viewer.layers["photo picks"]
        picks.add([y0, x0])
        picks.add([y1, x1])
        assert len(viewer.layers["photo boxes"].data) == 1
        go.set()

    assert run_and_wait(widget, qtbot, press) == "done"
