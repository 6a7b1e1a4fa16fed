"""Clicks first, in a real viewer: two clicks where the run has not been yet
bring the prompts near them forward, and the box appears when those are
done; a pick before the embedding waits for it; leaving an image mid-run
and coming back resumes its run (folder mode)."""

from __future__ import annotations

import threading

import numpy as np

from gui_helpers import TIMEOUT, blocking_engine, make_widget, notes
from napari_samboxes import engine, propose_boxes
from napari_samboxes.order import coarse_to_fine
from napari_samboxes.select import select_box

PPS = 8  # 64 prompts in 16 batches of 4


def late_target(photo, model):
    """Two points inside a final candidate whose prompt comes late in the
    coarse-to-fine order, and the box a pick there gives."""
    final = propose_boxes(photo, model, points_per_side=PPS)
    h, w = photo.shape[:2]
    rank = np.empty(PPS * PPS, int)
    rank[coarse_to_fine(PPS)] = np.arange(PPS * PPS)
    col = np.clip((final.points[:, 0] / w * PPS).astype(int), 0, PPS - 1)
    row = np.clip((final.points[:, 1] / h * PPS).astype(int), 0, PPS - 1)
    late = rank[row * PPS + col]
    for i in np.argsort(-late, kind="stable"):
        x0, y0, x1, y1 = final.boxes[i]
        pts = np.array([[x0 + (x1 - x0) / 3, y0 + (y1 - y0) / 3],
                        [x0 + 2 * (x1 - x0) / 3, y0 + 2 * (y1 - y0) / 3]])
        j = select_box(final, pts)
        if j is not None and late[i] >= 48 and final.areas[j] < h * w / 16:
            return pts, final.boxes[j]
    raise AssertionError("no late candidate in the photo")


def test_two_clicks_where_the_run_has_not_been_bring_their_box_first(
    make_napari_viewer, photo, structured_model, structured_ckpt, tmp_path, qtbot,
    monkeypatch, decoder_batches,
):
    pts, want = late_target(photo, structured_model)
    decoder_batches.clear()
    go = blocking_engine(monkeypatch)  # the run waits after its 2nd batch
    viewer = make_napari_viewer()
    viewer.add_image(photo, name="photo", rgb=True)
    widget = make_widget(viewer, structured_ckpt, tmp_path / "cache", pps=PPS)
    widget.run.native.click()
    qtbot.waitUntil(lambda: len(decoder_batches) >= 2, timeout=TIMEOUT)
    assert widget.session.preview(pts) is None  # no candidate there yet
    picks = viewer.layers["photo picks"]
    boxes = viewer.layers["photo boxes"]
    seen = []
    widget.annotator.changed.connect(lambda ch: seen.append(len(decoder_batches)))
    picks.add(pts[0, ::-1])
    picks.add(pts[1, ::-1])
    assert len(boxes.data) == 0 and "prompts near them run next" in widget.status.value
    go.set()
    qtbot.waitUntil(lambda: len(boxes.data) == 1, timeout=TIMEOUT)
    # batches 1 and 2 in the coarse order, then the one around the clicks
    assert seen and seen[0] <= 4, seen
    from gui_helpers import layer_boxes

    assert list(boxes.features["source"]) == ["candidate"]
    qtbot.waitUntil(lambda: widget.annotator.run is None, timeout=TIMEOUT)
    assert len(decoder_batches) == PPS * PPS // 4  # every prompt once, no batch twice
    # the box is (or, once the run is complete, has become) the complete
    # run's pick at these clicks
    assert len(boxes.data) == 1
    np.testing.assert_array_equal(layer_boxes(boxes)[0], want)


def test_a_pick_before_the_embedding_waits_for_it_and_says_so(
    make_napari_viewer, photo, structured_model, structured_ckpt, tmp_path, qtbot,
    monkeypatch,
):
    pts, want = late_target(photo, structured_model)
    release = threading.Event()
    real = engine.encode_image

    def slow_encode(*a, **k):
        release.wait(60)
        return real(*a, **k)

    monkeypatch.setattr(engine, "encode_image", slow_encode)
    said = notes(monkeypatch)
    viewer = make_napari_viewer()
    viewer.add_image(photo, name="photo", rgb=True)
    widget = make_widget(viewer, structured_ckpt, tmp_path / "cache", pps=PPS)
    widget.run.native.click()
    qtbot.waitUntil(lambda: "photo picks" in viewer.layers, timeout=TIMEOUT)
    picks = viewer.layers["photo picks"]
    picks.add(pts[0, ::-1])
    picks.add(pts[1, ::-1])
    assert "waiting for the image embedding" in widget.status.value, said
    boxes = viewer.layers["photo boxes"]
    assert len(boxes.data) == 0
    release.set()
    qtbot.waitUntil(lambda: len(boxes.data) == 1, timeout=TIMEOUT)
    from gui_helpers import layer_boxes

    np.testing.assert_array_equal(layer_boxes(boxes)[0], want)
    assert not said["warning"] and not said["error"]


def test_leaving_an_image_mid_run_and_coming_back_resumes_its_run(
    make_napari_viewer, photo, structured_model, structured_ckpt, tmp_path, qtbot,
    monkeypatch, decoder_batches,
):
    from PIL import Image

    from napari_samboxes.cache import CandidateCache

    d = tmp_path / "shots"
    d.mkdir()
    Image.fromarray(photo).save(d / "a.png")
    Image.fromarray(photo[::-1].copy()).save(d / "b.png")
    cache_dir = tmp_path / "cache"
    # b is in the cache already: every batch counted below is a's
    propose_boxes(
        photo[::-1].copy(), structured_model, points_per_side=PPS,
        points_per_batch=4, cache=CandidateCache(cache_dir),
    )
    decoder_batches.clear()
    go = blocking_engine(monkeypatch, batches_before_block=3)
    viewer = make_napari_viewer()
    widget = make_widget(viewer, structured_ckpt, cache_dir, pps=PPS)
    widget.folder.value = str(d)
    qtbot.waitUntil(lambda: len(decoder_batches) >= 4, timeout=TIMEOUT)
    widget.next_image.native.click()  # leave a while its 4th batch waits
    go.set()
    qtbot.waitUntil(lambda: "image 2 of 2" in widget.folder_progress.value,
                    timeout=TIMEOUT)
    qtbot.waitUntil(lambda: widget.annotator.run is None, timeout=TIMEOUT)
    assert len(decoder_batches) == 4
    from napari_samboxes._napari.runs import CandidateRun
    from napari_samboxes.pipeline import Resumed

    events = []
    real_on_event = CandidateRun._on_event

    def spy(self, ev):
        events.append(ev)
        return real_on_event(self, ev)

    monkeypatch.setattr(CandidateRun, "_on_event", spy)
    widget.prev_image.native.click()
    qtbot.waitUntil(
        lambda: len(decoder_batches) >= PPS * PPS // 4 and widget.annotator.run is None,
        timeout=TIMEOUT,
    )
    resumed = [e for e in events if isinstance(e, Resumed)]
    assert len(resumed) == 1 and resumed[0].batches == 4
    qtbot.wait(200)
    assert widget.annotator.run is None
    assert "image 1 of 2" in widget.folder_progress.value
    assert len(decoder_batches) == PPS * PPS // 4  # one full run's batches in all
    want = propose_boxes(photo, structured_model, points_per_side=PPS)
    np.testing.assert_array_equal(widget.session.candidates.boxes, want.boxes)


def test_a_waiting_pick_is_dropped_with_a_word_when_the_run_is_cancelled(
    make_napari_viewer, photo, structured_model, structured_ckpt, tmp_path, qtbot,
    monkeypatch, decoder_batches,
):
    pts, _ = late_target(photo, structured_model)
    decoder_batches.clear()
    go = blocking_engine(monkeypatch)
    said = notes(monkeypatch)
    viewer = make_napari_viewer()
    viewer.add_image(photo, name="photo", rgb=True)
    widget = make_widget(viewer, structured_ckpt, tmp_path / "cache", pps=PPS)
    widget.run.native.click()
    qtbot.waitUntil(lambda: len(decoder_batches) >= 2, timeout=TIMEOUT)
    picks = viewer.layers["photo picks"]
    picks.add(pts[0, ::-1])
    picks.add(pts[1, ::-1])
    assert "prompts near them run next" in widget.status.value
    outcomes = []
    widget.run_finished.connect(outcomes.append)
    widget.cancel.native.click()
    go.set()
    qtbot.waitUntil(lambda: bool(outcomes), timeout=TIMEOUT)
    assert outcomes == ["cancelled"]
    qtbot.wait(100)
    assert len(viewer.layers["photo boxes"].data) == 0  # no box from a prompt
    assert "pick again" in widget.status.value or "cancelled" in widget.status.value
    assert not said["error"]
