"""The annotation session without a viewer: candidates, picks, undo."""

from __future__ import annotations

import numpy as np
import pytest

from napari_samboxes.boxes import Boxes
from napari_samboxes.candidates import RawMasks
from napari_samboxes.session import UNDO_LEVELS, Session
from napari_samboxes.settings import SettingsError
from napari_samboxes.tighten import iou_matrix, tighten_boxes

# three nested boxes around (50, 50) and one elsewhere; masks as raw results
NESTED = np.array(
    [[45, 45, 55, 55], [40, 40, 60, 60], [30, 30, 70, 70], [100, 10, 120, 30]]
)


def raw(boxes=NESTED, iou=0.95, stab=0.97) -> RawMasks:
    n = len(boxes)
    areas = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    return RawMasks(
        boxes=np.asarray(boxes, dtype=np.int64),
        areas=areas.astype(np.int64),
        iou_preds=np.full(n, iou, np.float32),
        stability=np.full(n, stab, np.float32),
        points=np.zeros((n, 2)),
    )


def committed(settings_nms=1.0) -> Session:
    s = Session()
    s.set_thresholds(0.88, 0.95, settings_nms)  # keep nested boxes apart
    s.begin_run()
    s.commit(raw())
    return s


def test_pick_gives_smallest_containing_box_with_label_and_score():
    s = committed()
    r = s.pick(np.array([[48, 48], [52, 53]]), "cup")
    assert r.change is not None and r.reason == ""
    assert s.boxes.labels == ("cup",) and s.boxes.sources == ("candidate",)
    np.testing.assert_array_equal(s.boxes.xyxy, [[45, 45, 55, 55]])
    assert s.boxes.scores[0] == pytest.approx(0.95)


def test_pick_without_containing_box_gives_reason_and_span():
    s = committed()
    r = s.pick(np.array([[5, 5], [150, 90]]), "cup")
    assert r.change is None and "no candidate" in r.reason and r.prompt
    assert r.span == (5, 5, 150, 90) and len(s.boxes) == 0
    assert not Session().pick(np.array([[5, 5], [9, 9]]), "cup").prompt  # no run


def test_prompted_box_and_the_embedding_of_the_candidates_shown():
    s = committed()
    s.embedding = "first"
    change = s.add_prompted([5, 5, 150, 90], 0.81, "cup")
    assert change.changed and s.boxes.sources == ("prompt",)
    assert s.boxes.scores[0] == pytest.approx(0.81)
    s.begin_run()
    assert s.embedding is None  # a new run: its embedding is not known yet
    s.rollback()
    assert s.embedding == "first"  # the committed run's comes back
    s.clear_candidates()
    assert s.embedding is None
    s.begin_run((), (2.0, 4.0))
    cset = s.candidate_set
    back = cset.from_level(cset.to_level(np.array([[90, 180, 111, 223]])))
    np.testing.assert_array_equal(back, [[90, 180, 112, 226]])  # level pixels


def test_step_walks_the_nested_chain_and_stops_at_the_ends():
    s = committed()
    s.pick(np.array([[48, 48], [52, 52]]), "cup")
    seen = [tuple(s.boxes.xyxy[0])]
    for _ in range(2):
        assert s.step(+1).changed
        seen.append(tuple(s.boxes.xyxy[0]))
    assert seen == [tuple(b) for b in NESTED[:3]]
    end = s.step(+1)
    assert not end.changed and "largest" in end.message
    assert s.step(-1).changed and tuple(s.boxes.xyxy[0]) == tuple(NESTED[1])
    assert s.boxes.labels == ("cup",)
    s.step(-1)
    assert "smallest" in s.step(-1).message


def test_undo_redo_every_operation():
    s = committed()
    states = [s.boxes]
    s.pick(np.array([[48, 48], [52, 52]]), "cup")
    states.append(s.boxes)
    s.add([1, 2, 3, 4], "hand-made", source="hand")
    states.append(s.boxes)
    s.relabel([0], "mug")
    states.append(s.boxes)
    s.delete([1])
    states.append(s.boxes)
    s.step(+1)  # the last pick was edited by relabel: still steps by geometry
    states.append(s.boxes)
    for want in reversed(states[:-1]):
        assert s.undo().changed
        assert s.boxes == want
    assert not s.undo().changed
    for want in states[1:]:
        assert s.redo().changed
        assert s.boxes == want


def test_undo_levels_and_history_per_image():
    s = committed()
    s.show_image("a.png")
    for i in range(UNDO_LEVELS + 20):
        s.add([i, i, i + 1, i + 1], "x")
    s.show_image("b.png", Boxes().added([0, 0, 9, 9], "loaded", source="import"))
    assert s.boxes.labels == ("loaded",) and not s.undo().changed
    s.show_image("a.png")
    undone = 0
    while s.undo().changed:
        undone += 1
    assert undone == UNDO_LEVELS and len(s.boxes) == 20


def test_a_new_change_clears_redo():
    s = committed()
    s.add([0, 0, 1, 1], "a")
    s.undo()
    s.add([0, 0, 2, 2], "b")
    assert not s.redo().changed


def test_run_commit_and_rollback_restore_existing_candidates():
    s = committed()
    before = s.candidates.boxes.copy()
    assert len(before) == 4
    s.begin_run()
    part = raw(NESTED[3:] + 100)
    shown = s.add_batch(part)
    assert len(shown) == 1  # the pending run's candidates are shown
    with pytest.raises(RuntimeError, match="already"):
        s.begin_run()
    s.rollback()
    np.testing.assert_array_equal(s.candidates.boxes, before)
    s.begin_run()
    s.add_batch(part)
    s.commit()
    assert len(s.candidates) == 1 and s.committed is not None


def test_thresholds_refilter_without_a_run_and_are_validated():
    s = committed()
    s.begin_run()
    s.commit(raw(iou=0.9))
    assert len(s.candidates) == 4
    assert len(s.set_thresholds(0.92, 0.95, 1.0)) == 0
    assert len(s.set_thresholds(0.88, 0.95, 1.0)) == 4
    with pytest.raises(SettingsError, match="pred iou thresh"):
        s.set_thresholds(float("nan"), 0.95, 0.7)


def test_level_scale_maps_boxes_to_level_zero():
    s = Session()
    s.set_thresholds(0.88, 0.95, 1.0)
    s.begin_run((), (2.0, 4.0))
    s.commit(raw(NESTED[:1]))
    np.testing.assert_array_equal(s.candidates.boxes, [[90, 180, 111, 223]])


def test_pick_on_another_slice_is_refused():
    s = Session()
    s.begin_run((3,))
    s.commit(raw())
    r = s.pick(np.array([[48, 48], [52, 52]]), "x", (2,))
    assert r.change is None and "slice" in r.reason
    assert s.pick(np.array([[48, 48], [52, 52]]), "x", (3,)).change is not None
    np.testing.assert_array_equal(s.boxes.slices, [[3]])


def test_boxes_round_trip_through_a_box_table():
    b = Boxes().added([1, 2, 3, 4], "a", 0.9, "candidate").added([5, 6, 7, 8], "b")
    assert Boxes.from_table(b.to_table()) == b


def test_iou_matrix_counts_inclusive_pixels():
    a = np.array([[0, 0, 9, 9], [0, 0, 0, 0]])
    b = np.array([[0, 0, 9, 9], [5, 0, 14, 9], [20, 20, 30, 30]])
    np.testing.assert_allclose(
        iou_matrix(a, b), [[1.0, 50 / 150, 0.0], [0.01, 0.0, 0.0]]
    )
    assert iou_matrix(a, np.zeros((0, 4))).shape == (2, 0)


def test_tighten_snaps_to_the_best_candidate_else_prompts():
    s = committed()
    boxes = (
        Boxes()
        .added([44, 46, 56, 55], "near", source="hand")  # IoU 0.85 with box 0
        .added([0, 150, 20, 170], "far", source="import")  # no candidate
        .added([100, 10, 120, 30], "same", 0.9, "candidate")
    )
    asked = []

    def prompt(xyxy):
        asked.append(xyxy.copy())
        return np.array([[2, 152, 18, 168]]), np.array([0.7])

    t = tighten_boxes(boxes, s.candidates, prompt=prompt)
    np.testing.assert_array_equal(
        t.boxes.xyxy, [[45, 45, 55, 55], [2, 152, 18, 168], [100, 10, 120, 30]]
    )
    assert t.boxes.labels == ("near", "far", "same")
    assert t.boxes.sources == ("candidate", "prompt", "candidate")
    assert t.boxes.scores[1] == pytest.approx(0.7)
    np.testing.assert_array_equal(asked, [[[0, 150, 20, 170]]])
    assert (t.moved, t.max_shift, t.prompted) == (2, 2.0, 1)
    assert "2 box(es), by at most 2 px" in t.message
    only = tighten_boxes(boxes, s.candidates, indices=[1])  # no prompt: stays
    assert only.boxes == boxes and only.moved == 0
    empty = tighten_boxes(
        boxes, s.candidates, [1], lambda b: (np.zeros((1, 4)), np.ones(1))
    )
    assert empty.boxes == boxes  # an empty mask moves nothing
    s.replace_all(boxes)
    seeded = s.boxes
    s.replace_all(t.boxes, t.message)
    s.undo()
    assert s.boxes == seeded  # one undo reverts a tighten


def test_a_pick_made_while_a_run_streams_becomes_the_complete_runs_pick():
    s = Session()
    s.set_thresholds(0.88, 0.95, 1.0)
    s.begin_run()
    s.add_batch(raw(NESTED[[1, 2, 3]]))  # the smallest box's prompt is to come
    assert s.pick([[48, 48], [52, 52]], "cup").change is not None
    row, xyxy = s.last_pick
    np.testing.assert_array_equal(xyxy, [40, 40, 60, 60])
    s.commit(raw())
    change = s.refine(row, xyxy)
    assert change is not None and change.changed
    np.testing.assert_array_equal(s.boxes.xyxy[0], [45, 45, 55, 55])
    assert list(s.boxes.labels) == ["cup"]
    assert s.refine(*s.last_pick) is None  # already the tightest
    s.undo()  # one step back: the streaming run's box
    np.testing.assert_array_equal(s.boxes.xyxy[0], [40, 40, 60, 60])


def test_a_streaming_pick_that_was_stepped_is_left_as_chosen():
    s = Session()
    s.set_thresholds(0.88, 0.95, 1.0)
    s.begin_run()
    s.add_batch(raw(NESTED[[1, 2, 3]]))
    s.pick([[48, 48], [52, 52]], "cup")
    row, xyxy = s.last_pick
    s.step(+1)  # the annotator chose the larger box
    s.commit(raw())
    assert s.refine(row, xyxy) is None
    np.testing.assert_array_equal(s.boxes.xyxy[0], [30, 30, 70, 70])
