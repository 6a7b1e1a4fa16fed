"""Run settings remembered between sessions (no napari or Qt).

The panel's run settings (grid, crop layers, thresholds, device) are kept

* per folder, beside its annotations: ``DIR/annotations/run_settings.json``
  (all but the device, which is the machine's);
* for single images, in the user's config folder
  (``run_settings.json`` in ``platformdirs.user_config_dir``;
  ``NAPARI_SAMBOXES_CONFIG`` names another folder).

Each file is a JSON object of the fields in :data:`FIELDS`. Reading keeps
only known fields whose values pass :class:`~napari_samboxes.settings.
Settings`' checks (a damaged or hand-edited file costs its bad fields, never
the session); writing is atomic and merges with the file as it is on disk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .settings import DEFAULTS, SettingsError

__all__ = [
    "CONFIG_ENV",
    "DEVICES",
    "FIELDS",
    "FILE_NAME",
    "FOLDER_FIELDS",
    "folder_file",
    "global_file",
    "load_settings",
    "save_settings",
]

#: The remembered fields, as :class:`~napari_samboxes.settings.Settings`
#: names them, and ``device``.
FIELDS = (
    "points_per_side",
    "crop_n_layers",
    "pred_iou_thresh",
    "stability_score_thresh",
    "box_nms_thresh",
    "device",
)
#: What a folder remembers: the device is the machine's, not the data's (a
#: folder copied to a machine without a GPU must not ask for one).
FOLDER_FIELDS = tuple(f for f in FIELDS if f != "device")
DEVICES = ("auto", "cpu", "cuda", "mps")
FILE_NAME = "run_settings.json"
CONFIG_ENV = "NAPARI_SAMBOXES_CONFIG"


def folder_file(folder: str | Path) -> Path:
    """``DIR/annotations/run_settings.json``."""
    return Path(folder) / "annotations" / FILE_NAME


def global_file() -> Path:
    """The settings for single images, in the user's config folder."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser() / FILE_NAME
    import platformdirs

    return Path(platformdirs.user_config_dir("napari-samboxes")) / FILE_NAME


def _valid(name: str, value: Any) -> bool:
    if name == "device":
        return value in DEVICES
    if isinstance(value, bool):
        return False
    if name in ("points_per_side", "crop_n_layers") and not isinstance(value, int):
        return False
    try:
        DEFAULTS.with_(**{name: value})
    except (SettingsError, TypeError, ValueError):
        return False
    return True


def load_settings(path: str | Path) -> dict[str, Any]:
    """The valid remembered fields in ``path`` (empty when the file is
    missing or unreadable)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: data[k] for k in FIELDS if k in data and _valid(k, data[k])}


def save_settings(path: str | Path, values: dict[str, Any]) -> bool:
    """Write the valid fields of ``values`` into ``path`` (merged with the
    fields already there), atomically; False when the disk refused."""
    p = Path(path)
    merged = load_settings(p)
    merged.update({k: v for k, v in values.items() if k in FIELDS and _valid(k, v)})
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(p, json.dumps(merged, indent=2, sort_keys=True) + "\n")
    except OSError:
        return False
    return True
