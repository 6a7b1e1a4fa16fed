"""Property tests (hypothesis): selection and box-table round trips."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_samboxes import Candidates, select_box
from napari_samboxes.formats.boxtable import BoxTable, read_box_table, write_box_table

coord = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)
box = st.tuples(coord, coord, st.floats(0, 1e3), st.floats(0, 1e3)).map(
    lambda t: (t[0], t[1], t[0] + t[2], t[1] + t[3])
)


@settings(max_examples=200, deadline=None)
@given(
    boxes=st.lists(box, min_size=0, max_size=40),
    points=st.lists(st.tuples(coord, coord), min_size=1, max_size=4),
    areas=st.data(),
)
def test_select_box_equals_brute_force(boxes, points, areas):
    n = len(boxes)
    a = areas.draw(st.lists(st.integers(0, 50), min_size=n, max_size=n))
    c = Candidates.from_unsorted(
        np.array(boxes, float).reshape(-1, 4),
        np.array(a, np.int64),
        np.zeros(n),
        np.zeros(n),
    )
    want = None
    for i, (x0, y0, x1, y1) in enumerate(c.boxes):  # sorted by area, stable
        if all(x0 <= px <= x1 and y0 <= py <= y1 for px, py in points):
            want = i
            break
    assert select_box(c, np.array(points)) == want


label = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=20,
)


@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(
        st.tuples(label, box, st.one_of(st.none(), st.floats(0, 1))), max_size=15
    ),
    n_slice=st.integers(0, 2),
)
def test_box_table_round_trips(tmp_path_factory, rows, n_slice):
    labels = [r[0] for r in rows]
    boxes = np.array([r[1] for r in rows], float).reshape(-1, 4)
    scores = np.array([np.nan if r[2] is None else r[2] for r in rows], float)
    slices = np.arange(len(rows) * n_slice, dtype=float).reshape(len(rows), n_slice)
    p = tmp_path_factory.mktemp("rt") / "t.csv"
    write_box_table(p, BoxTable(labels, boxes, scores, slices))
    back = read_box_table(p)
    assert back.labels == labels
    np.testing.assert_array_equal(back.boxes, boxes)
    np.testing.assert_array_equal(back.scores, scores)
    np.testing.assert_array_equal(back.slices, slices)
