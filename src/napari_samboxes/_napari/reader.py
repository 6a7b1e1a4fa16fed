"""npe2 reader: box tables open as a boxes layer, other CSVs as napari would.

**How napari is made to prefer this reader.** napari 0.9 opens a file
without asking only when one reader matches it or the user's settings name
one (``settings.plugins.extension2reader``, the table under Preferences >
Plugins, which the reader dialog's "remember" box also fills). napari's own
reader matches every ``*.csv``, so this plugin, when it is first used
(npe2's ``on_activate``, any command: the widget, a sample, a reader, or
``napari-samboxes view``) adds two entries to that table, without
replacing any the user made: ``*.csv`` -> ``napari-samboxes`` (only if no
other plugin reads ``*.csv``) and ``*/annotations/*.csv`` ->
``napari-samboxes`` (folder mode's box tables, more specific, so it wins
over a ``*.csv`` entry). A CSV that is not a box table (napari's points or
shapes export) is handed to napari's own CSV reader, so it opens exactly as
before. The entries can be removed in Preferences > Plugins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..formats.boxtable import is_box_table, read_box_table
from ..geometry import shapes_from_boxes
from .layers import BOX_STYLE

#: This plugin's npe2 name.
PLUGIN = "napari-samboxes"
#: Reader preference patterns added on activation (see the module docstring).
CSV_PATTERN = "*.csv"
ANNOTATIONS_PATTERN = "*/annotations/*.csv"


def activate(ctx: Any = None) -> None:
    """npe2 ``on_activate`` hook: prefer this reader for box tables."""
    try:
        prefer_plugin_for_box_tables()
    except Exception:  # noqa: BLE001 - a settings problem must not stop the plugin
        pass


def prefer_plugin_for_box_tables() -> dict[str, str]:
    """Add this plugin's reader preferences unless the user set others.

    Returns the reader preferences after the change.
    """
    from napari.settings import get_settings
    from npe2 import PluginManager

    plugins = get_settings().plugins
    prefs = dict(plugins.extension2reader)
    others = {
        r.plugin_name
        for r in PluginManager.instance().iter_compatible_readers(["a.csv"])
    } - {PLUGIN, "napari"}
    if not others:
        prefs.setdefault(CSV_PATTERN, PLUGIN)
    prefs.setdefault(ANNOTATIONS_PATTERN, PLUGIN)
    if prefs != plugins.extension2reader:
        plugins.extension2reader = prefs
    return prefs


def napari_get_reader(path: str | list[str]) -> Any:
    """A reader for a box table; napari's own reader for another CSV."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if is_box_table(path):
        return read_box_table_layer
    if not str(path).lower().endswith(".csv"):
        return None
    try:
        from napari_builtins.io import napari_get_reader as napari_reader
    except ImportError:  # pragma: no cover - napari without its builtins
        return None
    return napari_reader(str(path))


def read_box_table_layer(
    path: str | list[str],
) -> list[tuple[Any, dict[str, Any], str]]:
    """Read a box table into a Shapes layer data tuple."""
    p = Path(path[0] if isinstance(path, list) else path)
    table = read_box_table(p)
    shapes = shapes_from_boxes(table.boxes, table.slices)
    kwargs = dict(BOX_STYLE)
    kwargs["name"] = p.stem
    # object columns: napari turns a list of str into a numpy/pandas string
    # column, which drops trailing NUL characters of labels
    kwargs["features"] = pd.DataFrame(
        {
            "label": pd.Series(table.labels, dtype=object),
            "score": pd.Series(table.scores, dtype=float),
            "source": pd.Series(table.sources, dtype=object),
        }
    )
    kwargs["ndim"] = 2 + table.slices.shape[1]
    return [(shapes, kwargs, "shapes")]
