"""The one settings object: defaults, validation, batch by device."""

from __future__ import annotations

import pytest

from napari_samboxes.settings import DEFAULTS, Settings, SettingsError


def test_defaults_are_the_reference_generators():
    d = DEFAULTS
    assert (d.points_per_side, d.pred_iou_thresh, d.stability_score_thresh) == (
        32,
        0.88,
        0.95,
    )
    assert (d.box_nms_thresh, d.crop_n_layers, d.crop_nms_thresh) == (0.7, 0, 0.7)
    assert d.batch_for("cpu") == 64 and d.batch_for("cuda:0") == 1024
    assert Settings(points_per_batch=8).batch_for("cuda") == 8


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("points_per_side", 0, "points per side"),
        ("points_per_side", 1_000_000, "points per side"),
        ("pred_iou_thresh", float("nan"), "pred iou thresh"),
        ("stability_score_thresh", 1.5, "stability score thresh"),
        ("box_nms_thresh", -0.1, "box nms thresh"),
        ("crop_n_layers", 5, "crop layers"),
        ("crop_overlap_ratio", 1.0, "crop overlap ratio"),
        ("crop_n_points_downscale_factor", 0, "downscale factor"),
    ],
)
def test_out_of_range_settings_are_refused(field, value, says):
    with pytest.raises(SettingsError, match=says):
        DEFAULTS.with_(**{field: value})


def test_a_crop_layer_without_points_is_refused():
    with pytest.raises(SettingsError, match="no points"):
        Settings(points_per_side=4, crop_n_layers=2, crop_n_points_downscale_factor=4)
    assert Settings(
        points_per_side=4, crop_n_layers=1, crop_n_points_downscale_factor=4
    )
