"""Island-aware candidates: a picked candidate whose mask has detached
fragments offers the box of its largest connected part as the next smaller
option (``[``), with source ``island``."""

from __future__ import annotations

import numpy as np

from napari_samboxes.audit import mask_fragments
from napari_samboxes.formats.rle import cell_box, decode_cell, encode_cell
from napari_samboxes.select import island
from napari_samboxes.session import Session
from test_session import raw

WHOLE = [30, 30, 70, 70]  # the third nested candidate of test_session.NESTED


def two_blobs(shape=(100, 130)) -> np.ndarray:
    """A mask whose box is WHOLE: a large blob and two small fragments at
    opposite corners (the largest part's box is 35..60 x 36..64)."""
    m = np.zeros(shape, bool)
    m[36:65, 35:61] = True  # rows 36..64, columns 35..60
    m[30:32, 30:33] = True  # top-left fragment
    m[69:71, 68:71] = True  # bottom-right fragment
    return m


def picked_whole() -> Session:
    """A session whose last pick is the WHOLE candidate, with its mask."""
    s = Session()
    s.set_thresholds(0.88, 0.95, 1.0)
    s.begin_run()
    s.commit(raw())
    s.pick(np.array([[48, 48], [52, 52]]), "cup")
    s.step(+1)
    s.step(+1)
    np.testing.assert_array_equal(s.boxes.xyxy[0], WHOLE)
    before = s.boxes
    s.set_masks(before, before.with_cells(0, {"mask": encode_cell(two_blobs())}))
    return s


def test_the_largest_part_of_a_two_blob_mask():
    cell = encode_cell(two_blobs())
    assert cell_box(cell) == tuple(WHOLE)
    box, part = island(cell)
    np.testing.assert_array_equal(box, [35, 36, 60, 64])
    x0, y0, crop = decode_cell(part)
    assert (x0, y0, crop.shape, int(crop.sum())) == (35, 36, (29, 26), 29 * 26)
    # the audit measures the same part
    assert mask_fragments(cell).part_box == (35.0, 36.0, 60.0, 64.0)
    one = np.zeros((100, 130), bool)
    one[36:65, 35:61] = True
    assert island(encode_cell(one)) is None  # one part: nothing to offer
    inside = one.copy()
    inside[50:53, 40:43] = False  # a hole ...
    inside[51, 41] = True  # ... with a speck in it: two parts, the same box
    assert mask_fragments(encode_cell(inside)).parts == 2
    assert island(encode_cell(inside)) is None
    assert island("") is None and island("1 2 3") is None


def test_smaller_offers_the_island_then_the_candidates_below():
    s = picked_whole()
    change = s.step(-1)
    assert change.changed and "largest part" in change.message
    b = s.boxes
    np.testing.assert_array_equal(b.xyxy[0], [35, 36, 60, 64])
    assert (b.sources[0], b.labels[0]) == ("island", "cup")
    assert cell_box(b.cell("mask", 0)) == (35, 36, 60, 64)  # its own mask
    assert b.cell("prompt", 0) == "point 0 0"  # the candidate's, kept
    assert b.scores[0] == np.float32(0.95)
    s.step(-1)  # below the island: the next smaller candidate
    np.testing.assert_array_equal(s.boxes.xyxy[0], [40, 40, 60, 60])
    assert s.boxes.sources[0] == "candidate"
    s.step(+1)
    np.testing.assert_array_equal(s.boxes.xyxy[0], WHOLE)
    s.undo()
    s.undo()
    np.testing.assert_array_equal(s.boxes.xyxy[0], [35, 36, 60, 64])  # one step each
    s.undo()
    np.testing.assert_array_equal(s.boxes.xyxy[0], WHOLE)


def test_larger_from_the_island_is_the_whole_mask_again():
    s = picked_whole()
    whole = s.boxes
    s.step(-1)
    change = s.step(+1)
    assert change.changed and s.boxes.sources[0] == "candidate"
    np.testing.assert_array_equal(s.boxes.xyxy[0], WHOLE)
    assert s.boxes.cell("mask", 0) == whole.cell("mask", 0)  # its mask is back
    s.step(-1)  # so the island is offered again
    assert s.boxes.sources[0] == "island"
    assert s.boxes.cell("actions", 0) == str(2 + 2 + 3)  # clicks, steps


def test_no_island_without_a_mask_or_with_a_stale_one():
    s = Session()
    s.set_thresholds(0.88, 0.95, 1.0)
    s.begin_run()
    s.commit(raw())
    s.pick(np.array([[48, 48], [52, 52]]), "cup")
    s.step(+1)
    s.step(+1)
    s.step(-1)  # no mask yet: the candidate below
    np.testing.assert_array_equal(s.boxes.xyxy[0], [40, 40, 60, 60])
    s.step(+1)
    before = s.boxes
    shifted = encode_cell(np.roll(two_blobs(), 3, axis=1))  # another box's mask
    s.set_masks(before, before.with_cells(0, {"mask": shifted}))
    s.step(-1)
    np.testing.assert_array_equal(s.boxes.xyxy[0], [40, 40, 60, 60])


def test_moving_a_box_to_its_island_as_the_audit_suggests():
    s = picked_whole()
    change = s.move(0, [35, 36, 60, 64], "taken")
    assert change.changed and s.boxes.sources[0] == "island"
    assert cell_box(s.boxes.cell("mask", 0)) == (35, 36, 60, 64)
    s.move(0, [45, 45, 55, 55])  # a candidate's box
    assert s.boxes.sources[0] == "candidate" and s.boxes.cell("mask", 0) == ""
    s.move(0, [44, 44, 55, 55])  # no candidate's: a hand box
    assert s.boxes.sources[0] == "hand" and np.isnan(s.boxes.scores[0])
    s.undo()
    np.testing.assert_array_equal(s.boxes.xyxy[0], [45, 45, 55, 55])
