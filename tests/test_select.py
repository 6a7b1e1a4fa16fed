import numpy as np

from napari_samboxes import Candidates, select_box


def cands(boxes, areas, scores=None):
    n = len(boxes)
    return Candidates.from_unsorted(
        np.array(boxes, float),
        np.array(areas),
        np.array(scores if scores else [0.9] * n),
        np.ones(n),
    )


NESTED = cands(
    [[0, 0, 100, 100], [10, 10, 50, 50], [20, 20, 30, 30], [60, 60, 90, 90]],
    [10000, 1600, 100, 900],
)


def test_smallest_containing_box_wins():
    i = select_box(NESTED, [[22, 22], [28, 29]])
    np.testing.assert_array_equal(NESTED.boxes[i], [20, 20, 30, 30])
    i = select_box(NESTED, [[12, 12], [45, 40]])
    np.testing.assert_array_equal(NESTED.boxes[i], [10, 10, 50, 50])
    i = select_box(NESTED, [[12, 12], [70, 70]])  # spans two objects
    np.testing.assert_array_equal(NESTED.boxes[i], [0, 0, 100, 100])


def test_boundary_is_inclusive():
    i = select_box(NESTED, [[20, 20], [30, 30]])
    np.testing.assert_array_equal(NESTED.boxes[i], [20, 20, 30, 30])
    i = select_box(NESTED, [[20, 20], [30.0001, 30]])
    np.testing.assert_array_equal(NESTED.boxes[i], [10, 10, 50, 50])


def test_one_point():
    i = select_box(NESTED, [[65, 80]])
    np.testing.assert_array_equal(NESTED.boxes[i], [60, 60, 90, 90])


def test_no_containing_box():
    assert select_box(NESTED, [[150, 150], [5, 5]]) is None
    assert select_box(NESTED, np.zeros((0, 2))) is None
    assert select_box(Candidates.empty(), [[1, 1], [2, 2]]) is None
    assert select_box(NESTED, [[np.nan, 1], [2, 2]]) is None


def test_ties_prefer_higher_predicted_iou():
    # equal areas; from_unsorted keeps the incoming (NMS: IoU-descending) order
    c = cands([[0, 0, 9, 9], [0, 0, 10, 8]], [90, 90], [0.95, 0.90])
    assert select_box(c, [[1, 1], [8, 8]]) == 0
    # raw arrays in area order: the earliest of equal areas wins
    boxes = np.array([[5, 5, 9, 9], [0, 0, 10, 10], [0, 0, 10, 10]], float)
    assert select_box(boxes, [[1, 1], [9, 9]]) == 1


def test_unsorted_areas_are_handled():
    class C:
        boxes = np.array([[0, 0, 100, 100], [20, 20, 30, 30]], float)
        areas = np.array([10000, 100])

    assert select_box(C(), [[21, 21], [25, 25]]) == 1


def test_vectorised_matches_brute_force_and_has_no_loop():
    import ast
    import inspect

    from napari_samboxes import select

    rng = np.random.default_rng(0)
    n = 20_000
    xy = rng.uniform(0, 1000, (n, 2))
    wh = rng.uniform(1, 300, (n, 2))
    c = Candidates.from_unsorted(
        np.hstack([xy, xy + wh]), np.prod(wh, 1), np.ones(n), np.ones(n)
    )
    for _ in range(20):
        pts = rng.uniform(0, 1000, (2, 2))
        want = None
        for k, (x0, y0, x1, y1) in enumerate(c.boxes):  # brute force, by area order
            if all(x0 <= px <= x1 and y0 <= py <= y1 for px, py in pts):
                want = k
                break
        assert select_box(c, pts) == want
    tree = ast.parse(inspect.getsource(select))
    for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
        loops = [
            n
            for n in ast.walk(fn)
            if isinstance(n, (ast.For, ast.While, ast.comprehension))
        ]
        assert not loops, f"{fn.name} loops in Python"


def test_wrong_shapes_are_refused_not_reshaped():
    # issue 11 item 8: a (2, 3) array of points was read as three points
    import pytest

    with pytest.raises(ValueError, match=r"points must be an \(N, 2\) array"):
        select_box(NESTED, np.array([[1, 2, 3], [4, 5, 6]]))
    with pytest.raises(ValueError, match=r"points must be an \(N, 2\) array"):
        select_box(NESTED, [22, 22])
    with pytest.raises(ValueError, match=r"boxes must be an \(N, 4\) array"):
        select_box(np.arange(8.0), [[1, 1]])
    with pytest.raises(ValueError, match=r"boxes must be an \(N, 4\) array"):
        select_box(np.zeros((2, 5)), [[1, 1]])
    assert select_box(np.zeros((0, 4)), [[1, 1]]) is None
    assert select_box([], [[1, 1]]) is None
