"""Box geometry: napari shapes of any kind -> whole-pixel boxes, and back."""

from __future__ import annotations

import numpy as np
import pytest

from napari_samboxes.geometry import (
    ShapeError,
    boxes_from_shapes,
    shapes_from_boxes,
    table_from_layer_data,
)


def rect(r0, c0, r1, c1):
    return np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]], float)


def test_integer_boxes_round_trip_exactly():
    boxes = np.array([[3, 4, 10, 12], [0, 0, 0, 0], [-5, 7, 300, 7]], float)
    slices = np.array([[2.0], [0.0], [5.0]])
    back, sl = boxes_from_shapes(shapes_from_boxes(boxes, slices))
    np.testing.assert_array_equal(back, boxes)
    np.testing.assert_array_equal(sl, slices)


@pytest.mark.parametrize(
    "shape, want",
    [
        # issue 11 item 1: under one pixel was saved with x_min > x_max
        (rect(1.0, 2.0, 1.4, 2.3), [2, 1, 2, 1]),
        (rect(5.2, 7.1, 5.2, 7.1), [7, 5, 7, 5]),  # a point-sized rectangle
        (rect(4.5, 2.5, 9.5, 7.5), [3, 5, 7, 9]),  # edges on pixel borders
        (rect(4.4, 2.6, 9.6, 7.4), [3, 5, 7, 9]),  # more than half covered
        (rect(9.5, 7.5, 4.5, 2.5), [3, 5, 7, 9]),  # drawn from the far corner
        (np.array([[0.0, 0.0], [0.0, 10.0]]), [0, 0, 10, 0]),  # horizontal line
        (np.array([[2.0, 3.0], [6.0, 1.0], [4.0, 8.0]]), [1, 2, 8, 6]),  # polygon
    ],
)
def test_shapes_become_whole_pixel_boxes(shape, want):
    boxes, _ = boxes_from_shapes([shape])
    assert boxes.tolist() == [want]


@pytest.mark.parametrize(
    "shape, match",
    [
        (rect(np.nan, 1, 2, 3), "shape 1: has NaN or infinite"),
        (rect(0, 1, np.inf, 3), "shape 1: has NaN or infinite"),
        (np.zeros((0, 2)), r"shape 1: expected \(vertices, ndim\)"),
        (np.zeros((4, 3)), "shape 1: 3 dimensions, the others 2"),
    ],
)
def test_shapes_without_a_box_are_refused_by_index(shape, match):
    with pytest.raises(ShapeError, match=match):
        boxes_from_shapes([rect(0, 0, 1, 1), shape])


def test_a_shape_across_slices_is_refused():
    v = np.array([[0, 0, 0], [0, 0, 5], [1, 5, 5], [1, 5, 0]], float)
    with pytest.raises(ShapeError, match="shape 0: spans several slices"):
        boxes_from_shapes([v])


def test_features_give_labels_scores_and_sources():
    import pandas as pd

    feats = pd.DataFrame(
        {
            "label": ["cat", None, np.nan, 7],
            "score": [0.5, None, "", np.nan],
            "source": ["candidate", None, "robot", "prompt"],
        }
    )
    data = [rect(0, 0, 1, 1)] * 4
    t = table_from_layer_data(data, {"features": feats})
    # issue 11 item 1: a None label was saved as "nan"
    assert t.labels == ["cat", "", "", "7"]
    np.testing.assert_array_equal(t.scores, [0.5, np.nan, np.nan, np.nan])
    assert t.sources == ["candidate", "hand", "hand", "prompt"]
    bare = table_from_layer_data(data, {})
    assert bare.labels == ["object"] * 4 and bare.sources == ["hand"] * 4


def test_a_score_that_is_not_a_number_is_refused():
    with pytest.raises(ShapeError, match="shape 0: score 'high' is not a number"):
        table_from_layer_data([rect(0, 0, 1, 1)], {"features": {"score": ["high"]}})


def test_shapes_from_boxes_refuses_wrong_shapes():
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        shapes_from_boxes(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"\(2, S\)"):
        shapes_from_boxes(np.zeros((2, 4)), np.zeros((3, 1)))
