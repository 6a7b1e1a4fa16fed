"""Box tables in a real napari viewer: opened by default, saved with labels,
and ``napari-samboxes view`` (issue 8 items 1 and 7)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_samboxes.formats.boxtable import BoxTable, read_box_table, write_box_table


@pytest.fixture(autouse=True)
def _settings_in_memory():
    """Reader preferences changed here are not written to the user's file."""
    from napari.settings import get_settings

    settings = get_settings()
    before = settings._save_on_change
    settings._save_on_change = False
    yield
    settings.plugins.extension2reader = {}
    settings._save_on_change = before


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "coffee boxes.csv"
    write_box_table(
        path,
        BoxTable(
            labels=["cup", "spoon"],
            boxes=np.array([[10.0, 20, 59, 79], [100, 5, 140, 30]]),
            scores=np.array([0.93, np.nan]),
            slices=np.zeros((2, 0)),
            sources=["candidate", "hand"],
        ),
    )
    return path


def boxes_of(layer):
    """Inclusive pixel boxes of rectangles drawn on the pixels' outer edges."""
    edges = [
        [d[:, 1].min(), d[:, 0].min(), d[:, 1].max(), d[:, 0].max()] for d in layer.data
    ]
    return np.array(edges) + [0.5, 0.5, -0.5, -0.5]


def test_manifest_activation_sets_the_reader_preference():
    from pathlib import Path

    from napari.settings import get_settings
    from npe2 import PluginManifest

    import napari_samboxes
    from napari_samboxes._napari import reader as _reader

    mf = PluginManifest.from_file(
        Path(napari_samboxes.__file__).with_name("napari.yaml")
    )
    assert mf.on_activate == "napari_samboxes._napari.reader:activate"
    get_settings().plugins.extension2reader = {"*.tif": "napari"}
    _reader.activate(None)
    prefs = get_settings().plugins.extension2reader
    assert prefs == {
        "*.tif": "napari",
        "*.csv": "napari-samboxes",
        "*/annotations/*.csv": "napari-samboxes",
    }
    # a choice the user made is kept
    get_settings().plugins.extension2reader = {"*.csv": "napari"}
    _reader.activate(None)
    assert get_settings().plugins.extension2reader["*.csv"] == "napari"


def gui_open(viewer, path):
    """File > Open and drag and drop: napari's own path, plugin not chosen."""
    n = len(viewer.layers)
    viewer.window._qt_viewer._qt_open([str(path)], stack=False)
    return list(viewer.layers)[n:]


def test_box_tables_open_by_default_and_napari_csvs_as_before(
    make_napari_viewer, table, tmp_path, monkeypatch
):
    import napari._qt.qt_viewer as qv

    from napari_samboxes._napari.reader import prefer_plugin_for_box_tables

    def no_dialog(*a, **k):
        raise AssertionError("the reader dialog was shown")

    monkeypatch.setattr(qv, "handle_gui_reading", no_dialog)
    viewer = make_napari_viewer()
    prefer_plugin_for_box_tables()
    (layer,) = gui_open(viewer, table)
    assert layer.name == "coffee boxes"
    assert list(layer.features["label"]) == ["cup", "spoon"]
    assert list(layer.features["source"]) == ["candidate", "hand"]
    np.testing.assert_array_equal(
        boxes_of(layer), [[10, 20, 59, 79], [100, 5, 140, 30]]
    )

    # napari's own shapes CSV still opens as napari reads it
    shapes = viewer.add_shapes(
        [np.array([[1.0, 2], [3, 4], [5, 1]])], shape_type="polygon"
    )
    own = tmp_path / "mine.csv"
    shapes.save(str(own), plugin="napari")
    (again,) = gui_open(viewer, own)
    (ref,) = viewer.open(str(own))  # napari's reader (viewer.open's default)
    assert again.shape_type == ref.shape_type == ["polygon"]
    np.testing.assert_array_equal(again.data[0], ref.data[0])

    # a user's own *.csv choice is kept (issue 18): the preferences are
    # not added again, in dataset folders neither; the plugin can still be
    # chosen by hand
    from napari.settings import get_settings

    get_settings().plugins.extension2reader = {"*.csv": "napari"}
    assert prefer_plugin_for_box_tables() == {"*.csv": "napari"}
    (tmp_path / "annotations").mkdir()
    moved = tmp_path / "annotations" / "img.csv"
    moved.write_bytes(table.read_bytes())
    (layer2,) = viewer.open(str(moved), plugin="napari-samboxes")
    assert list(layer2.features["label"]) == ["cup", "spoon"]


def test_save_selected_and_save_all_with_the_plugin_keep_labels(
    make_napari_viewer, table, tmp_path, recwarn
):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((100, 160), np.uint8), name="img")
    (layer,) = viewer.open(str(table), plugin="napari-samboxes")
    viewer.layers.selection = {layer}
    out = tmp_path / "sel.csv"
    assert viewer.layers.save(str(out), selected=True, plugin="napari-samboxes") == [
        str(out)
    ]
    assert read_box_table(out).labels == ["cup", "spoon"]
    # Save All Layers (image + boxes) with the plugin: the boxes are written
    every = tmp_path / "all.csv"
    assert viewer.layers.save(str(every), plugin="napari-samboxes") == [str(every)]
    t = read_box_table(every)
    assert t.labels == ["cup", "spoon"]
    np.testing.assert_array_equal(t.boxes, [[10, 20, 59, 79], [100, 5, 140, 30]])
    assert not [w for w in recwarn if "not a valid writer" in str(w.message)]
    # two boxes layers: one file each, named after the layers
    viewer.open(str(table), plugin="napari-samboxes")
    viewer.layers[-1].name = "second"
    written = viewer.layers.save(str(tmp_path / "both.csv"), plugin="napari-samboxes")
    assert sorted(p.rsplit("/", 1)[1] for p in written) == [
        "both_coffee_boxes.csv",
        "both_second.csv",
    ]


def _fits(viewer, h, w):
    """The whole image is inside the canvas, and fills one of its sides."""
    cw, ch = viewer.window._qt_viewer.canvas.size
    z = viewer.camera.zoom
    assert w * z <= cw + 2 and h * z <= ch + 2
    assert w * z >= 0.8 * cw or h * z >= 0.8 * ch
    np.testing.assert_allclose(
        viewer.camera.center[-2:], [(h - 1) / 2, (w - 1) / 2], atol=1
    )


def test_view_sample_table_and_folder(
    make_napari_viewer, table, tmp_path, photo, synthetic, qtbot
):
    from PIL import Image

    from napari_samboxes._napari.view import open_view

    viewer, widget = open_view(None, make_napari_viewer())
    assert viewer.layers[0].name == "photo"
    _fits(viewer, *viewer.layers[0].data.shape[:2])

    viewer, _ = open_view(str(table), make_napari_viewer())
    assert list(viewer.layers[0].features["label"]) == ["cup", "spoon"]

    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(synthetic).save(d / "a.png")
    Image.fromarray(photo).save(d / "b.png")
    viewer, widget = open_view(str(d), make_napari_viewer())
    assert str(widget.folder.value) == str(d)
    assert widget.folder_mode is not None
    # the image file is read in a worker, then shown
    qtbot.waitUntil(lambda: widget.folder_mode.index == 0, timeout=60_000)
    images = [ly for ly in viewer.layers if ly._type_string == "image"]
    assert len(images) == 1 and images[0].data.shape[:2] == (160, 224)
    _fits(viewer, 160, 224)
