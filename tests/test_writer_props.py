"""Property test: random napari Shapes layers saved by the plugin's writer
open again with the same boxes and labels, or are refused at save time."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_samboxes._napari.reader import read_box_table_layer
from napari_samboxes._napari.writer import BoxSaveError, write_box_table_layer
from napari_samboxes.formats.boxtable import read_box_table

napari_layers = pytest.importorskip("napari.layers")

coord = st.floats(-50, 300, allow_nan=False, allow_infinity=False)
extent = st.one_of(st.just(0.0), st.floats(0, 1), st.floats(0, 80))
ODD_LABELS = ["", "x" * 200_000, 'a "b", c', "two\nlines", "\r", "nul\x00", "ü日😀"]
label = st.one_of(
    st.none(),
    st.sampled_from(ODD_LABELS),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
)


def rect(r0, c0, r1, c1):
    return np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]], float)


@st.composite
def shapes(draw):
    kind = draw(st.sampled_from(["rectangle", "ellipse", "line", "polygon", "path"]))
    if kind in ("rectangle", "ellipse"):
        r, c, h, w = draw(coord), draw(coord), draw(extent), draw(extent)
        if draw(st.booleans()):  # drawn on pixel borders, as the plugin does
            r, c, h, w = round(r) - 0.5, round(c) - 0.5, round(h) or 1, round(w) or 1
        v = rect(r, c, r + h, c + w)
    elif kind == "line":
        v = np.array(draw(st.lists(st.tuples(coord, coord), min_size=2, max_size=2)))
    else:  # simple (star-shaped) polygons: napari fails to triangulate others
        n = draw(st.integers(3, 6))
        radius = np.array(draw(st.lists(st.floats(1, 60), min_size=n, max_size=n)))
        angle = np.arange(n) * 2 * np.pi / n + draw(st.floats(0, 1))
        r, c = draw(coord), draw(coord)
        v = np.stack([r + radius * np.sin(angle), c + radius * np.cos(angle)], 1)
    nan = None
    if draw(st.integers(0, 24)) == 0:  # now and then a NaN vertex
        nan = (draw(st.integers(0, len(v) - 1)), draw(st.integers(0, 1)))
    return kind, v, nan


def features(labels, scores):
    """Features as the widget makes them (an object column of labels; napari
    would turn a plain list into a string column that drops trailing NULs)."""
    import pandas as pd

    return pd.DataFrame(
        {
            "label": pd.Series(labels, dtype=object),
            "score": pd.Series(scores, dtype=float),
        }
    )


def check_axis(lo, hi, first, last, aligned):
    """A saved box edge is a whole pixel within half a pixel of the shape's
    bounding box (within a pixel for shapes under a pixel wide)."""
    assert first == int(first) and last == int(last) and first <= last
    slack = 0.5 if hi - lo >= 1 else 1.0
    assert abs(first - 0.5 - lo) <= slack + 1e-6
    assert abs(last + 0.5 - hi) <= slack + 1e-6
    if aligned:
        assert (first - 0.5, last + 0.5) == (lo, hi)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    rows=st.lists(
        st.tuples(shapes(), label, st.one_of(st.none(), st.floats(0, 1))),
        max_size=8,
    )
)
def test_saved_layers_open_with_the_same_boxes_and_labels(tmp_path, rows):
    kinds = [r[0][0] for r in rows]
    data = [r[0][1] for r in rows]
    nans = [r[0][2] for r in rows]
    labels = [r[1] for r in rows]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # napari's own NaN-cast warnings
        layer = napari_layers.Shapes(
            data,
            shape_type=kinds,
            features=features(labels, [r[2] for r in rows]),
        )
    path = tmp_path / "boxes.csv"
    path.unlink(missing_ok=True)
    bad = [i for i, at in enumerate(nans) if at is not None]
    if bad:  # napari cannot even build a NaN polygon: give it to the writer
        broken = [v.copy() for v in layer.data]
        for i in bad:
            broken[i][nans[i]] = np.nan
        with pytest.raises(BoxSaveError, match=f"shape {bad[0]}: has NaN"):
            write_box_table_layer(str(path), broken, layer._get_state())
        assert not path.exists()
        return
    write_box_table_layer(str(path), layer.data, layer._get_state())
    table = read_box_table(path)
    assert table.labels == ["" if v is None else v for v in labels]
    for box, v, kind in zip(table.boxes, data, kinds, strict=True):
        (r0, c0), (r1, c1) = v.min(0), v.max(0)
        aligned = kind == "rectangle" and (r0 - 0.5) % 1 == 0 and (c0 - 0.5) % 1 == 0
        check_axis(c0, c1, box[0], box[2], aligned)
        check_axis(r0, r1, box[1], box[3], aligned)
    want_scores = [math.nan if s is None else s for _, _, s in rows]
    np.testing.assert_array_equal(table.scores, np.array(want_scores, float))
    # reopened by the plugin's reader and saved again: the same file
    ((back, meta, _),) = read_box_table_layer(str(path))
    again = napari_layers.Shapes(back, **{k: meta[k] for k in ("features", "ndim")})
    second = tmp_path / "again.csv"
    write_box_table_layer(str(second), again.data, again._get_state())
    assert second.read_bytes() == path.read_bytes()


def test_save_layers_through_the_plugin(tmp_path):
    import napari
    from napari.plugins import _initialize_plugins

    _initialize_plugins()  # what a viewer does first: npe2 plugins known

    layer = napari_layers.Shapes(
        [rect(1.0, 2.0, 1.4, 2.3), np.array([[0.0, 0.0], [0.0, 10.0]])],
        shape_type=["rectangle", "line"],
        features=features([None, "dog"], [None, 0.5]),
    )
    p = tmp_path / "deg.csv"
    napari.save_layers(str(p), [layer], plugin="napari-samboxes")
    t = read_box_table(p)
    assert t.labels == ["", "dog"] and t.sources == ["hand", "hand"]
    assert t.boxes.tolist() == [[2, 1, 2, 1], [0, 0, 10, 0]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # napari's own NaN-cast warnings
        layer.add_rectangles(rect(np.nan, 0, 2, 2))
    q = tmp_path / "nan.csv"
    with pytest.raises(BoxSaveError, match="shape 2: has NaN"):
        napari.save_layers(str(q), [layer], plugin="napari-samboxes")
    assert not q.exists()
