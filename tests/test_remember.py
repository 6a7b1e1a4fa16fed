"""Run settings that stay: per folder beside its annotations, for single
images in the user's config folder, and ``view DIR --points-per-side N``."""

from __future__ import annotations

import json

import pytest

from napari_samboxes.cli import main
from napari_samboxes.remember import (
    folder_file,
    global_file,
    load_settings,
    save_settings,
)


def test_saved_fields_come_back_and_bad_ones_are_dropped(tmp_path):
    p = tmp_path / "s.json"
    assert load_settings(p) == {}
    assert save_settings(p, {"points_per_side": 16, "device": "cpu", "color": "red"})
    assert load_settings(p) == {"points_per_side": 16, "device": "cpu"}
    assert save_settings(p, {"box_nms_thresh": 0.5})  # merged with the file
    assert load_settings(p) == {"points_per_side": 16, "device": "cpu",
                                "box_nms_thresh": 0.5}
    p.write_text(json.dumps({
        "points_per_side": 0, "crop_n_layers": True, "pred_iou_thresh": "high",
        "stability_score_thresh": 0.9, "device": "tpu",
    }))
    assert load_settings(p) == {"stability_score_thresh": 0.9}
    for text in ("[1, 2]", "{", "\xff"):
        p.write_text(text, encoding="latin-1")
        assert load_settings(p) == {}


def test_the_user_file_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_SAMBOXES_CONFIG", str(tmp_path / "conf"))
    assert global_file() == tmp_path / "conf" / "run_settings.json"
    assert folder_file(tmp_path / "d") == tmp_path / "d" / "annotations" / (
        "run_settings.json"
    )


@pytest.mark.parametrize(
    ("flag", "value", "said"),
    [
        ("--points-per-side", "0", "points per side"),
        ("--crop-n-layers", "9", "crop layers"),
        ("--pred-iou-thresh", "1.5", "pred"),
    ],
)
def test_view_refuses_bad_settings_before_napari_starts(
    tmp_path, capsys, flag, value, said
):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    assert main(["view", str(tmp_path), flag, value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and said in err


def folder_of_two(tmp_path, photo):
    from PIL import Image

    d = tmp_path / "shots"
    d.mkdir()
    Image.fromarray(photo).save(d / "a.png")
    Image.fromarray(photo[::-1].copy()).save(d / "b.png")
    return d


def test_a_folder_remembers_its_run_settings_and_single_images_theirs(
    make_napari_viewer, tmp_path, photo, structured_ckpt, qtbot
):
    from gui_helpers import TIMEOUT
    from napari_samboxes._napari.widget import SamBoxesWidget
    from napari_samboxes.cache import CandidateCache

    d = folder_of_two(tmp_path, photo)
    cache = CandidateCache(tmp_path / "cache")
    viewer = make_napari_viewer()
    w = SamBoxesWidget(viewer, cache=cache)
    viewer.window.add_dock_widget(w)
    w.checkpoint.value = str(structured_ckpt)
    w.points_per_side.value = 3  # no folder yet: the user's settings
    w.pred_iou_thresh.value = 0.8
    assert load_settings(global_file())["points_per_side"] == 3
    w.folder.value = str(d)
    qtbot.waitUntil(lambda: w.annotator.request is not None, timeout=TIMEOUT)
    assert w.annotator.request.settings.points_per_side == 3  # taken along
    w.points_per_side.value = 5  # in the folder: the folder's settings
    w.box_nms_thresh.value = 0.6
    stored = load_settings(folder_file(d))
    assert stored["points_per_side"] == 5 and stored["box_nms_thresh"] == 0.6
    assert load_settings(global_file())["points_per_side"] == 3  # unchanged
    w.close()

    viewer2 = make_napari_viewer()  # a new session on single images
    w2 = SamBoxesWidget(viewer2, cache=cache)
    viewer2.window.add_dock_widget(w2)
    assert w2.points_per_side.value == 3 and w2.pred_iou_thresh.value == 0.8
    assert w2.session.settings.pred_iou_thresh == 0.8  # the candidates' filter
    w2.checkpoint.value = str(structured_ckpt)
    w2.folder.value = str(d)  # the folder's own, before its first run
    assert w2.points_per_side.value == 5 and w2.box_nms_thresh.value == 0.6
    qtbot.waitUntil(lambda: w2.annotator.request is not None, timeout=TIMEOUT)
    assert w2.annotator.request.settings.points_per_side == 5


def test_view_dir_with_a_grid_runs_it_and_remembers_it(
    make_napari_viewer, tmp_path, photo, structured_ckpt, qtbot
):
    from gui_helpers import TIMEOUT
    from napari_samboxes._napari.view import open_view

    d = folder_of_two(tmp_path, photo)
    save_settings(folder_file(d), {"points_per_side": 7, "crop_n_layers": 1})
    viewer = make_napari_viewer()
    _, w = open_view(
        str(d), viewer, settings={"points_per_side": 4}, checkpoint=str(structured_ckpt)
    )
    qtbot.waitUntil(lambda: w.annotator.request is not None, timeout=TIMEOUT)
    s = w.annotator.request.settings
    assert (s.points_per_side, s.crop_n_layers) == (4, 1)  # given over stored
    assert load_settings(folder_file(d))["points_per_side"] == 4
    assert "points_per_side" not in load_settings(global_file())  # the folder's
    w.device.value = "cpu"  # the machine's, not the folder's
    assert "device" not in load_settings(folder_file(d))
    assert load_settings(global_file())["device"] == "cpu"
    # changed by hand, the grid is no longer the command line's
    w.points_per_side.value = 6
    assert load_settings(folder_file(d))["points_per_side"] == 6
    d2 = tmp_path / "more"
    d2.mkdir()
    (d2 / "a.png").write_bytes((d / "a.png").read_bytes())
    save_settings(folder_file(d2), {"points_per_side": 7})
    w.folder.value = str(d2)
    assert w.points_per_side.value == 7  # its own, not the command line's 4
    qtbot.waitUntil(lambda: w.annotator.request is not None, timeout=TIMEOUT)
