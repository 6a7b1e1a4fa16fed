"""The annotation session without a viewer: candidates, picks, undo."""

from __future__ import annotations

import numpy as np
import pytest

from napari_samboxes.boxes import Boxes
from napari_samboxes.candidates import RawMasks
from napari_samboxes.session import UNDO_LEVELS, Session
from napari_samboxes.settings import SettingsError

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
    assert r.change is None and "no candidate" in r.reason
    assert r.span == (5, 5, 150, 90) and len(s.boxes) == 0


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
