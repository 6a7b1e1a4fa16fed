"""Reader preferences added once and never over the user's; napari's own
CSVs keep napari's reader (issue 18, item 8). Real napari settings (kept in
memory), real files written by napari's own writers, no viewer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_samboxes._napari import reader as _reader
from napari_samboxes.formats.boxtable import BoxTable, write_box_table

OURS = {"*.csv": "napari-samboxes", "*/annotations/*.csv": "napari-samboxes"}


@pytest.fixture(autouse=True)
def prefs():
    """napari's settings, changed in memory only; the reader preferences
    start empty and are emptied after the test."""
    from napari.settings import get_settings

    settings = get_settings()
    before = settings._save_on_change
    settings._save_on_change = False
    settings.plugins.extension2reader = {}
    yield settings.plugins
    settings.plugins.extension2reader = {}
    settings._save_on_change = before


def test_added_at_the_first_activation_only(prefs):
    _reader.activate(None)
    assert prefs.extension2reader == OURS
    marker = _reader.preferences_marker()
    assert marker.is_file() and marker.parent.name == "config"  # the test's
    # the user removes them: the next activations (next sessions, `view`)
    # leave them removed
    prefs.extension2reader = {}
    _reader.activate(None)
    assert _reader.prefer_plugin_for_box_tables() == {}
    assert prefs.extension2reader == {}
    # the user changes one and removes the other: kept as the user left it
    prefs.extension2reader = {"*.csv": "napari-svg"}
    _reader.activate(None)
    assert prefs.extension2reader == {"*.csv": "napari-svg"}
    # the marker names this napari settings file (each environment has one)
    done = json.loads(marker.read_text())["napari_settings"]
    assert done == [str(_settings_file())]


def _settings_file() -> str:
    from napari.settings import get_settings

    return str(get_settings().config_path or "")


def test_a_users_csv_choice_is_never_overridden(prefs):
    prefs.extension2reader = {"*.csv": "napari", "*.tif": "napari"}
    _reader.activate(None)
    assert prefs.extension2reader == {"*.csv": "napari", "*.tif": "napari"}


@pytest.mark.parametrize(
    ("before", "others", "after"),
    [
        ({}, False, OURS),
        ({"*.tif": "napari"}, False, {"*.tif": "napari", **OURS}),
        ({"*.csv": "napari"}, False, {"*.csv": "napari"}),
        ({"/home/me/*.csv": "napari"}, False, {"/home/me/*.csv": "napari", **OURS}),
        (
            {"*/annotations/*.csv": "napari"},
            False,
            {"*/annotations/*.csv": "napari", "*.csv": "napari-samboxes"},
        ),
        ({}, True, {"*/annotations/*.csv": "napari-samboxes"}),
        ({"*.csv": "napari-samboxes"}, False, OURS),
    ],
)
def test_which_entries_a_users_preferences_allow(before, others, after):
    assert _reader.with_box_table_preferences(before, others) == after


def test_nothing_is_added_when_it_cannot_be_remembered(prefs, tmp_path, monkeypatch):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    monkeypatch.setenv("NAPARI_SAMBOXES_CONFIG", str(blocker / "config"))
    _reader.activate(None)
    assert prefs.extension2reader == {}  # never, rather than every time


def napari_csvs(folder: Path) -> tuple[Path, Path]:
    """A points CSV whose features are named like a box table's columns,
    and a shapes CSV, both written by napari's own writers."""
    from napari.layers import Points, Shapes
    from napari_builtins.io._write import napari_write_points, napari_write_shapes

    features = {
        "label": ["cup", "dog"],
        "x_min": [1.0, 2.0],
        "y_min": [3.0, 4.0],
        "x_max": [5.0, 6.0],
        "y_max": [7.0, 8.0],
    }
    pts = Points(np.array([[1.0, 2], [3, 4]]), features=features)
    points_csv = folder / "points.csv"
    data, meta, _ = pts.as_layer_data_tuple()
    napari_write_points(str(points_csv), data, meta)
    shp = Shapes([np.array([[1.0, 2], [3, 4], [5, 1]])], shape_type="polygon")
    shapes_csv = folder / "shapes.csv"
    data, meta, _ = shp.as_layer_data_tuple()
    napari_write_shapes(str(shapes_csv), data, meta)
    return points_csv, shapes_csv


def test_napari_csvs_open_as_napari_opens_them(tmp_path, prefs):
    from napari.plugins.io import read_data_with_plugins
    from npe2 import PluginManager

    points_csv, shapes_csv = napari_csvs(tmp_path)
    assert points_csv.read_text().startswith("index,axis-0,axis-1,label,x_min")
    PluginManager.instance().discover()
    # what napari does when the preferences name this plugin for *.csv
    (layer,), _ = read_data_with_plugins([points_csv], plugin="napari-samboxes")
    data, meta, kind = layer
    assert kind == "points"
    np.testing.assert_array_equal(data, [[1, 2], [3, 4]])
    assert list(meta["properties"]["label"]) == ["cup", "dog"]
    (layer,), _ = read_data_with_plugins([shapes_csv], plugin="napari-samboxes")
    assert layer[2] == "shapes" and layer[1]["shape_type"] == ["polygon"]
    assert _reader.is_napari_csv(points_csv) and _reader.is_napari_csv(shapes_csv)


def test_box_tables_with_slice_columns_still_open_as_boxes(tmp_path, prefs):
    # a 4D image's table starts with axis-0, axis-1, as napari's points do
    path = tmp_path / "stack.csv"
    write_box_table(
        path,
        BoxTable(
            labels=["cup"],
            boxes=np.array([[10.0, 20, 59, 79]]),
            scores=np.array([0.9]),
            slices=np.array([[2.0, 3.0]]),
            sources=["hand"],
        ),
    )
    assert path.read_text().startswith("axis-0,axis-1,label,")
    assert not _reader.is_napari_csv(path)
    assert _reader.napari_get_reader(str(path)) is _reader.read_box_table_layer
    ((shapes, kwargs, kind),) = _reader.read_box_table_layer(str(path))
    assert kind == "shapes" and list(kwargs["features"]["label"]) == ["cup"]
    assert kwargs["ndim"] == 4
