"""The widget in a real napari viewer (Xvfb), driven as a user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_samboxes import propose_boxes, select_box
from napari_samboxes.geometry import shapes_from_boxes
from napari_samboxes._widget import SamBoxesWidget
from napari_samboxes.cache import CandidateCache

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


@pytest.fixture
def setup(make_napari_viewer, photo, structured_ckpt, tmp_path, qtbot):
    viewer = make_napari_viewer()
    image = viewer.add_image(photo, name="photo", rgb=True)
    widget = SamBoxesWidget(viewer, cache=CandidateCache(tmp_path / "cache"))
    viewer.window.add_dock_widget(widget)
    widget.checkpoint.value = str(structured_ckpt)
    widget.points_per_side.value = PPS
    assert widget.image.value is image
    return viewer, image, widget


def run_and_wait(widget, qtbot, ticks=None):
    from qtpy.QtCore import QTimer

    timer = QTimer()
    count = [0]
    timer.timeout.connect(lambda: count.__setitem__(0, count[0] + 1))
    timer.start(10)
    widget.run.native.click()
    assert widget._worker is not None
    qtbot.waitUntil(lambda: widget._worker is None, timeout=TIMEOUT)
    timer.stop()
    return count[0]


def layer_boxes(layer):
    from napari_samboxes.geometry import boxes_from_shapes

    return boxes_from_shapes(layer.data)[0]


def test_run_then_pick_two_points(setup, qtbot, photo, structured_model):
    viewer, image, widget = setup
    ticks = run_and_wait(widget, qtbot)
    assert ticks >= 20, "the viewer did not process events while the worker ran"
    expected = propose_boxes(photo, structured_model, points_per_side=PPS)
    cand = viewer.layers["photo candidates"]
    assert len(cand.data) == len(expected) > 10
    np.testing.assert_allclose(layer_boxes(cand), expected.boxes)
    picks = viewer.layers["photo picks"]
    assert viewer.layers.selection.active is picks and picks.mode == "add"

    # a candidate nested inside a larger one; two points inside it
    b = expected.boxes
    inner = next(
        i
        for i in range(len(b))
        if any(
            (b[j, :2] <= b[i, :2]).all() and (b[j, 2:] >= b[i, 2:]).all() and j != i
            for j in range(len(b))
        )
    )
    x0, y0, x1, y1 = b[inner]
    pts_xy = np.array(
        [
            [x0 + 0.25 * (x1 - x0), y0 + 0.3 * (y1 - y0)],
            [x1 - 0.2 * (x1 - x0), y1 - 0.25 * (y1 - y0)],
        ]
    )
    want = select_box(expected, pts_xy)
    assert want is not None and expected.areas[want] <= expected.areas[inner]
    widget.box_label.value = "helmet"
    picks.add(pts_xy[0, ::-1])
    assert len(viewer.layers) == 3 + 0  # photo, candidates, picks: no box yet
    picks.add(pts_xy[1, ::-1])
    boxes = viewer.layers["photo boxes"]
    assert len(boxes.data) == 1
    np.testing.assert_allclose(
        boxes.data[0], shapes_from_boxes(expected.boxes[want][None])[0]
    )
    assert list(boxes.features["label"]) == ["helmet"]
    assert boxes.features["score"][0] == pytest.approx(float(expected.scores[want]))
    assert len(picks.data) == 0
    # a third click alone never makes a box from stale points
    picks.add(pts_xy[0, ::-1])
    assert len(boxes.data) == 1
    assert viewer.layers.selection.active is picks


def test_no_containing_candidate_notifies_and_changes_nothing(
    setup, qtbot, monkeypatch
):
    import napari.utils.notifications as nt

    viewer, image, widget = setup
    run_and_wait(widget, qtbot)
    said = []
    monkeypatch.setattr(nt, "show_info", lambda m: said.append(m))
    picks = viewer.layers["photo picks"]
    picks.add([1, 1])
    picks.add([190, 254])  # opposite corners: no blob holds both
    assert "photo boxes" not in viewer.layers
    assert said and "no candidate" in said[0]
    assert len(picks.data) == 0


def test_streaming_thresholds_and_cache(setup, qtbot, monkeypatch):
    from napari_samboxes import engine

    viewer, image, widget = setup
    widget._points_per_batch = 4  # 4 batches of 4 prompts
    sizes = []
    orig = SamBoxesWidget._show_candidates

    def spy(self):
        orig(self)
        sizes.append(len(viewer.layers["photo candidates"].data))

    monkeypatch.setattr(SamBoxesWidget, "_show_candidates", spy)
    run_and_wait(widget, qtbot)
    assert len(sizes) >= 4 and sizes[0] < sizes[-1], sizes
    final = len(viewer.layers["photo candidates"].data)

    def no_model(*a, **k):
        raise AssertionError("the model ran")

    monkeypatch.setattr(engine, "iter_raw_batches", no_model)
    widget.pred_iou_thresh.value = 0.92
    fewer = len(viewer.layers["photo candidates"].data)
    assert 0 < fewer < final
    widget.pred_iou_thresh.value = 0.88
    assert len(viewer.layers["photo candidates"].data) == final
    # second run on the same image: served from the cache
    run_and_wait(widget, qtbot)
    assert widget.status.value.endswith("(from cache)")
    assert len(viewer.layers["photo candidates"].data) == final


def test_cancel_adds_no_candidates(setup, qtbot):
    viewer, image, widget = setup
    widget._points_per_batch = 1
    widget.run.native.click()
    widget.cancel.native.click()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=TIMEOUT)
    assert "photo candidates" not in viewer.layers
    assert widget.status.value == "cancelled"


def test_second_run_is_refused_while_running(setup, qtbot, monkeypatch):
    import napari.utils.notifications as nt

    viewer, image, widget = setup
    said = []
    monkeypatch.setattr(nt, "show_info", lambda m: said.append(m))
    widget.run.native.click()
    first = widget._worker
    assert not widget.run.enabled
    widget._on_run()
    assert widget._worker is first and "already" in said[0]
    qtbot.waitUntil(lambda: widget._worker is None, timeout=TIMEOUT)


@pytest.mark.parametrize("kind", ["missing", "corrupt"])
def test_bad_checkpoint_shows_error_and_keeps_layers(
    setup, qtbot, monkeypatch, tmp_path, kind
):
    import napari.utils.notifications as nt

    viewer, image, widget = setup
    errors = []
    monkeypatch.setattr(nt, "show_error", lambda m: errors.append(m))
    boxes = viewer.add_shapes(
        [np.array([[1, 1], [1, 9], [9, 9], [9, 1]])],
        shape_type="rectangle",
        name="photo boxes",
    )
    before = [len(viewer.layers), np.array(boxes.data[0])]
    bad = tmp_path / "mobile_sam.pt"
    if kind == "corrupt":
        bad.write_bytes(b"not a checkpoint" * 10)
    widget.checkpoint.value = str(bad)
    widget.run.native.click()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=TIMEOUT)
    assert errors, "no error shown"
    assert ("does not exist" if kind == "missing" else "could not be read") in errors[
        0
    ] or "no checkpoint" in errors[0]
    assert len(viewer.layers) == before[0]
    np.testing.assert_array_equal(viewer.layers["photo boxes"].data[0], before[1])


def test_box_table_and_napari_csv_round_trips(make_napari_viewer, tmp_path):
    import napari

    viewer = make_napari_viewer()
    verts = shapes_from_boxes(np.array([[3, 4, 10, 12], [20, 5, 40, 30.5]]))
    layer = viewer.add_shapes(
        verts,
        shape_type="rectangle",
        name="boxes",
        features={"label": ["cat", "dog, big"], "score": [0.9, np.nan]},
    )
    p = tmp_path / "table.csv"
    napari.save_layers(str(p), [layer], plugin="napari-samboxes")
    assert p.read_text().startswith(
        "label,x_min,y_min,x_max,y_max,score\ncat,3,4,10,12,0.9"
    )
    back = viewer.open(str(p), plugin="napari-samboxes")[0]
    assert list(back.features["label"]) == ["cat", "dog, big"]
    np.testing.assert_allclose(np.array(back.data), np.array(layer.data))
    q = tmp_path / "napari.csv"
    napari.save_layers(str(q), [layer], plugin="napari")
    from napari_samboxes._reader import napari_get_reader

    assert napari_get_reader(str(q)) is None  # declined: napari's own reader
    again = viewer.open(str(q), plugin="napari")[0]
    np.testing.assert_allclose(np.array(again.data), np.array(layer.data))


def test_widget_uses_results_precomputed_by_the_cli(
    make_napari_viewer, photo, structured_ckpt, tmp_path, qtbot, monkeypatch
):
    import imageio.v3 as iio

    from napari_samboxes import engine
    from napari_samboxes.cli import main

    path = tmp_path / "photo.png"
    iio.imwrite(path, photo)
    cache = tmp_path / "cache"
    assert (
        main(
            [
                "propose",
                str(path),
                "--out",
                str(tmp_path / "out"),
                "--points-per-side",
                str(PPS),
                "--checkpoint",
                str(structured_ckpt),
                "--cache",
                str(cache),
            ]
        )
        == 0
    )
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path))
    widget = SamBoxesWidget(viewer, cache=CandidateCache(cache))
    viewer.window.add_dock_widget(widget)
    widget.checkpoint.value = str(structured_ckpt)
    widget.points_per_side.value = PPS
    monkeypatch.setattr(
        engine,
        "iter_raw_batches",
        lambda *a, **k: (_ for _ in ()).throw(AssertionError("model ran")),
    )
    run_and_wait(widget, qtbot)
    assert widget.status.value.endswith("(from cache)")
    assert len(viewer.layers["photo candidates"].data) > 0


# --- hardening: runs, images, picks -----------------------------------------


def notes(monkeypatch):
    import napari.utils.notifications as nt

    said = {"info": [], "warning": [], "error": []}
    for k in said:
        monkeypatch.setattr(nt, f"show_{k}", lambda m, k=k: said[k].append(m))
    return said


def test_exception_in_the_model_keeps_layers(setup, qtbot, monkeypatch):
    from napari_samboxes import engine

    viewer, image, widget = setup
    said = notes(monkeypatch)
    run_and_wait(widget, qtbot)  # a good run first
    good = [np.array(d) for d in viewer.layers["photo candidates"].data]
    widget.points_per_side.value = 3  # not cached

    def broken(self, sparse):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(engine._Decoder, "__call__", broken)
    run_and_wait(widget, qtbot)
    assert "decoder exploded" in said["error"][0]
    now = viewer.layers["photo candidates"].data
    assert len(now) == len(good) and all(np.array_equal(a, b) for a, b in zip(now, good, strict=True))


def test_out_of_memory_is_a_message(setup, qtbot, monkeypatch):
    from napari_samboxes import engine

    viewer, image, widget = setup
    said = notes(monkeypatch)

    def oom(self, sparse):
        raise MemoryError("cannot allocate 18 GiB")

    monkeypatch.setattr(engine._Decoder, "__call__", oom)
    run_and_wait(widget, qtbot)
    assert "out of memory" in said["error"][0] and "256 x 192" in said["error"][0]
    assert "photo candidates" not in viewer.layers


@pytest.mark.parametrize("what", ["removed", "replaced"])
def test_image_removed_or_replaced_during_run(setup, qtbot, monkeypatch, what):
    viewer, image, widget = setup
    said = notes(monkeypatch)
    widget._points_per_batch = 1
    widget.run.native.click()
    if what == "removed":
        viewer.layers.remove(image)
    else:
        image.data = np.zeros_like(image.data)
    qtbot.waitUntil(lambda: widget._worker is None, timeout=TIMEOUT)
    assert said["warning"] and ("removed" in said["warning"][0] or "changed" in said["warning"][0])
    assert "photo candidates" not in viewer.layers


def test_viewer_closed_during_run(make_napari_viewer, photo, structured_ckpt, tmp_path, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(photo, name="photo", rgb=True)
    widget = SamBoxesWidget(viewer, cache=CandidateCache(tmp_path))
    viewer.window.add_dock_widget(widget)
    widget.checkpoint.value = str(structured_ckpt)
    widget.points_per_side.value = PPS
    widget._points_per_batch = 1
    widget.run.native.click()
    worker = widget._worker
    done = []
    worker.finished.connect(lambda: done.append(1))
    viewer.close()
    qtbot.waitUntil(lambda: bool(done), timeout=TIMEOUT)  # stops, no hang


@pytest.mark.parametrize("shape", [(3, 40, 50), (2, 3, 40, 50), (2, 2, 3, 40, 50)])
def test_stacks_use_the_current_slice(make_napari_viewer, photo, structured_ckpt, tmp_path, qtbot, shape):
    viewer = make_napari_viewer()
    stack = np.zeros(shape, np.uint8)
    lead = tuple(s - 1 for s in shape[:-2])
    stack[lead] = photo[:40, :50, 0]
    image = viewer.add_image(stack, name="stack")
    viewer.dims.set_current_step(range(len(lead)), lead)
    widget = SamBoxesWidget(viewer, cache=CandidateCache(tmp_path))
    viewer.window.add_dock_widget(widget)
    widget.checkpoint.value = str(structured_ckpt)
    widget.points_per_side.value = 2
    run_and_wait(widget, qtbot)
    cand = viewer.layers["stack candidates"]
    assert cand.ndim == len(shape) and len(cand.data) > 0
    assert all(np.array_equal(d[0, :-2], lead) for d in cand.data)
    picks = viewer.layers["stack picks"]
    b = widget._candidates.boxes[0]
    picks.add(np.array([[*lead, b[1], b[0]], [*lead, b[3], b[2]]], float))
    boxes = viewer.layers["stack boxes"]
    assert len(boxes.data) == 1 and np.array_equal(boxes.data[0][0, :-2], lead)
    assert image.ndim == len(shape)


def test_multiscale_uses_a_level_that_fits_and_scales_boxes(make_napari_viewer, photo, structured_ckpt, tmp_path, qtbot, monkeypatch, structured_model):
    import napari_samboxes._widget as w

    monkeypatch.setattr(w, "MAX_LEVEL_SIDE", 300)
    big = np.repeat(np.repeat(photo, 2, 0), 2, 1)  # 384 x 512: too big
    viewer = make_napari_viewer()
    viewer.add_image([big, photo], name="ms", rgb=True, multiscale=True)
    widget = SamBoxesWidget(viewer, cache=CandidateCache(tmp_path))
    viewer.window.add_dock_widget(widget)
    widget.checkpoint.value = str(structured_ckpt)
    widget.points_per_side.value = 2
    run_and_wait(widget, qtbot)
    small = propose_boxes(photo, structured_model, points_per_side=2)
    got = layer_boxes(viewer.layers["ms candidates"])
    want = small.boxes.copy()
    want[:, :2] *= 2
    want[:, 2:] = (want[:, 2:] + 1) * 2 - 1
    np.testing.assert_allclose(got, want)


def test_rgb_data_with_rgb_false_warns(make_napari_viewer, photo, structured_ckpt, tmp_path, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(photo, name="p", rgb=False)
    said = notes(monkeypatch)
    widget = SamBoxesWidget(viewer, cache=CandidateCache(tmp_path))
    viewer.window.add_dock_widget(widget)
    widget.checkpoint.value = str(structured_ckpt)
    widget.points_per_side.value = 2
    widget.run.native.click()
    assert "rgb=False" in said["warning"][0]
    # the current slice of 256 x 3 pixels is then refused, clearly
    assert "at least 4 x 4" in said["error"][0] and widget._worker is None


def test_no_image_layer_is_a_clear_error(make_napari_viewer, structured_ckpt, monkeypatch, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_points([[1, 1]])
    said = notes(monkeypatch)
    widget = SamBoxesWidget(viewer, cache=CandidateCache(tmp_path))
    widget.checkpoint.value = str(structured_ckpt)
    widget.run.native.click()
    assert "image layer" in said["error"][0] and widget._worker is None


def test_pick_edge_cases(setup, qtbot, monkeypatch):
    viewer, image, widget = setup
    run_and_wait(widget, qtbot)
    said = notes(monkeypatch)
    picks = viewer.layers["photo picks"]
    c = widget._candidates
    # outside the image
    picks.add(np.array([[-20.0, 5.0], [10.0, 10.0]]))
    assert "outside" in said["info"][-1] and "photo boxes" not in viewer.layers
    # two points on the same pixel: the smallest box holding that pixel
    x0, y0, x1, y1 = c.boxes[0]
    p = [(y0 + y1) / 2, (x0 + x1) / 2]
    picks.add(p)
    picks.add(p)
    boxes = viewer.layers["photo boxes"]
    assert len(boxes.data) == 1
    assert select_box(c, [[p[1], p[0]]]) is not None
    # three points pasted at once: the smallest box holding all three
    pts = np.array([[y0, x0], [y1, x1], [(y0 + y1) / 2, x0]])
    picks.data = pts
    picks.events.data(value=picks.data, action="added", data_indices=(0, 1, 2), vertex_indices=((),))
    assert len(boxes.data) == 2 and len(picks.data) == 0
    # boxes layer deleted by the user: recreated on the next pick
    viewer.layers.remove(boxes)
    picks.add(p)
    picks.add(p)
    assert len(viewer.layers["photo boxes"].data) == 1
    # picks layer deleted: recreated by the next run (served from the cache)
    viewer.layers.remove(viewer.layers["photo picks"])
    run_and_wait(widget, qtbot)
    assert "photo picks" in viewer.layers


def test_pick_while_candidates_stream(setup, qtbot):
    viewer, image, widget = setup
    widget._points_per_batch = 1  # 16 batches
    widget.run.native.click()
    qtbot.waitUntil(lambda: len(widget._candidates) > 0, timeout=TIMEOUT)
    assert widget._worker is not None, "the run ended before a pick could be tried"
    x0, y0, x1, y1 = widget._candidates.boxes[0]
    picks = viewer.layers["photo picks"]
    picks.add([y0, x0])
    picks.add([y1, x1])
    assert len(viewer.layers["photo boxes"].data) == 1
    qtbot.waitUntil(lambda: widget._worker is None, timeout=TIMEOUT)
