"""The run settings and their defaults, in one place (no napari, no Qt).

Every default of the pipeline (grid, thresholds, batch, crop layers) lives
here; the engine, the pipeline, the widget and the CLI take it from here.
The meaning of each field is that of ``mobile_sam``'s
``SamAutomaticMaskGenerator``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = ["DEFAULTS", "MAX_POINTS_PER_SIDE", "SettingsError", "Settings"]

#: Largest grid accepted: 256 x 256 = 65,536 prompts per crop.
MAX_POINTS_PER_SIDE = 256
#: Points per batch on the CPU (cache-sized decoder chunks; see engine).
CPU_POINTS_PER_BATCH = 64
#: Points per batch on a GPU: one pass over many prompts.
GPU_POINTS_PER_BATCH = 1024


class SettingsError(ValueError):
    """A setting out of range; the message names it and its range."""


@dataclass(frozen=True)
class Settings:
    """Settings of one candidate run (defaults as the reference generator).

    ``points_per_batch=None`` chooses by device
    (:func:`Settings.batch_for`): 64 on the CPU, 1024 on a GPU.
    """

    points_per_side: int = 32
    points_per_batch: int | None = None
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    crop_nms_thresh: float = 0.7

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`SettingsError` naming the first bad field."""
        pps = self.points_per_side
        if not isinstance(pps, int) or not 1 <= pps <= MAX_POINTS_PER_SIDE:
            raise SettingsError(
                f"points per side must be an integer from 1 to "
                f"{MAX_POINTS_PER_SIDE}, not {pps!r}"
            )
        ppb = self.points_per_batch
        if ppb is not None and (not isinstance(ppb, int) or ppb < 1):
            raise SettingsError(f"points per batch must be >= 1, not {ppb!r}")
        for name in (
            "pred_iou_thresh",
            "stability_score_thresh",
            "box_nms_thresh",
            "crop_nms_thresh",
        ):
            _unit(name, getattr(self, name))
        if not isinstance(self.crop_n_layers, int) or not 0 <= self.crop_n_layers <= 4:
            raise SettingsError(
                f"crop layers must be an integer from 0 to 4, not "
                f"{self.crop_n_layers!r}"
            )
        v = self.crop_overlap_ratio
        if not (isinstance(v, int | float) and math.isfinite(v) and 0 <= v < 1):
            raise SettingsError(f"crop overlap ratio must be in [0, 1), not {v!r}")
        f = self.crop_n_points_downscale_factor
        if not isinstance(f, int) or f < 1:
            raise SettingsError(
                f"crop points downscale factor must be an integer >= 1, not {f!r}"
            )
        if pps // f**self.crop_n_layers < 1:
            raise SettingsError(
                f"crop layer {self.crop_n_layers} would have no points: "
                f"{pps} points per side divided by {f}^{self.crop_n_layers}"
            )

    def batch_for(self, device: str) -> int:
        """Points per batch for a device (``cpu``, ``cuda...``, ``mps``)."""
        if self.points_per_batch is not None:
            return self.points_per_batch
        return CPU_POINTS_PER_BATCH if device == "cpu" else GPU_POINTS_PER_BATCH

    def thresholds(self) -> tuple[float, float, float]:
        """``(pred_iou_thresh, stability_score_thresh, box_nms_thresh)``."""
        return self.pred_iou_thresh, self.stability_score_thresh, self.box_nms_thresh

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed (validated)."""
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict."""
        return asdict(self)


def _unit(name: str, value: Any) -> None:
    ok = isinstance(value, int | float) and math.isfinite(value) and 0 <= value <= 1
    if not ok:
        label = name.replace("_", " ")
        raise SettingsError(f"{label} must be a number from 0 to 1, not {value!r}")


DEFAULTS = Settings()
