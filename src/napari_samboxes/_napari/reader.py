"""npe2 reader: box tables open as a boxes layer, other CSVs as napari would.

**How napari is made to prefer this reader.** napari 0.9 opens a file
without asking only when one reader matches it or the user's settings name
one (``settings.plugins.extension2reader``, the table under Preferences >
Plugins, which the reader dialog's "remember" box also fills). napari's own
reader matches every ``*.csv``, so at this plugin's **first** activation
(npe2's ``on_activate``, any command: the widget, a sample, a reader, or
``napari-samboxes view``) :func:`prefer_plugin_for_box_tables` adds two
entries to that table: ``*.csv`` -> ``napari-samboxes`` (only if no other
plugin reads ``*.csv``) and ``*/annotations/*.csv`` -> ``napari-samboxes``
(folder mode's box tables). They are added once: a marker file in this
plugin's config folder (:func:`preferences_marker`, beside
``run_settings.json``) remembers, per napari settings file, that it was
done, so entries the user removes or changes in Preferences > Plugins stay
as the user left them. Nothing is added where the user chose a reader for
CSV files (any entry matching a ``.csv`` or an ``annotations/*.csv`` path
that names another reader, such as ``*.csv: napari``), and nothing is added
at all if the marker cannot be written (better never than every time).

A CSV that is not a box table is handed to napari's own CSV reader, so it
opens exactly as before: that includes napari's own points and shapes CSVs
(:func:`is_napari_csv`) even when their features are named like a box
table's columns (a points layer with ``label`` and ``x_min`` features).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pandas as pd

from ..atomic import atomic_write_text
from ..formats.boxtable import is_box_table, read_box_table
from ..geometry import shapes_from_boxes
from ..remember import global_file
from .layers import BOX_STYLE

#: This plugin's npe2 name.
PLUGIN = "napari-samboxes"
#: Reader preference patterns added on activation (see the module docstring).
CSV_PATTERN = "*.csv"
ANNOTATIONS_PATTERN = "*/annotations/*.csv"
#: The file, in this plugin's config folder, that remembers for which
#: napari settings files the preferences were added.
MARKER_NAME = "reader_preferences.json"
#: Paths that the two patterns are meant for: an entry of the user's that
#: matches one of them and names another reader is the user's choice.
_SAMPLE_PATHS = {
    CSV_PATTERN: ("/x/a.csv",),
    ANNOTATIONS_PATTERN: ("/x/annotations/a.csv", "/x/a.csv"),
}


def activate(ctx: Any = None) -> None:
    """npe2 ``on_activate`` hook: prefer this reader for box tables, once."""
    try:
        prefer_plugin_for_box_tables()
    except Exception:  # noqa: BLE001 - a settings problem must not stop the plugin
        pass


def preferences_marker() -> Path:
    """The marker file: ``reader_preferences.json`` in this plugin's config
    folder (``NAPARI_SAMBOXES_CONFIG`` names another folder)."""
    return global_file().with_name(MARKER_NAME)


def _marked(marker: Path) -> list[str]:
    """The napari settings files the marker lists (none if unreadable)."""
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return []
    done = data.get("napari_settings") if isinstance(data, dict) else None
    return [str(x) for x in done] if isinstance(done, list) else []


def _mark(marker: Path, key: str) -> bool:
    """Record ``key`` in the marker, the first time; False when it was
    recorded before or cannot be written."""
    done = _marked(marker)
    if key in done:
        return False
    text = json.dumps({"napari_settings": [*done, key]}, indent=2) + "\n"
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(marker, text)
    except OSError:
        return False
    return True


def prefer_plugin_for_box_tables() -> dict[str, str]:
    """Add this plugin's reader preferences, the first time only.

    The first time for the current napari settings file, the marker
    (:func:`preferences_marker`) records it, then the entries that
    :func:`with_box_table_preferences` allows are added. Later calls (the
    next activation, ``napari-samboxes view``) change nothing, so what the
    user removes or changes stays so.

    Returns
    -------
    dict of str to str
        The reader preferences now.
    """
    from napari.settings import get_settings
    from npe2 import PluginManager

    settings = get_settings()
    plugins = settings.plugins
    key = str(getattr(settings, "config_path", None) or "")
    if not _mark(preferences_marker(), key):
        return dict(plugins.extension2reader)
    others = {
        r.plugin_name
        for r in PluginManager.instance().iter_compatible_readers(["a.csv"])
    } - {PLUGIN, "napari"}
    prefs = with_box_table_preferences(plugins.extension2reader, bool(others))
    if prefs != plugins.extension2reader:
        plugins.extension2reader = prefs
    return prefs


def _chosen_elsewhere(prefs: Mapping[str, str], pattern: str) -> bool:
    """Whether an entry of ``prefs`` names another reader for the files
    ``pattern`` is for."""
    return any(
        reader != PLUGIN and any(fnmatch(p, pat) for p in _SAMPLE_PATHS[pattern])
        for pat, reader in prefs.items()
    )


def with_box_table_preferences(
    prefs: Mapping[str, str], other_csv_readers: bool = False
) -> dict[str, str]:
    """Reader preferences ``prefs`` with this plugin's entries added where
    the user's own entries allow.

    ``*.csv`` is added only if no other plugin reads CSV files
    (``other_csv_readers``) and no entry names another reader for them;
    ``*/annotations/*.csv`` only if no entry names another reader for a CSV
    file (a user's ``*.csv: napari`` is theirs to keep, for box tables
    too). Existing entries are never changed.
    """
    out = dict(prefs)
    if not other_csv_readers and not _chosen_elsewhere(out, CSV_PATTERN):
        out.setdefault(CSV_PATTERN, PLUGIN)
    if not _chosen_elsewhere(out, ANNOTATIONS_PATTERN):
        out.setdefault(ANNOTATIONS_PATTERN, PLUGIN)
    return out


def _header(path: str | Path) -> list[str]:
    """The column names of a CSV file's first line (none if unreadable)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            first = f.readline(1 << 16)
    except (OSError, UnicodeDecodeError):
        return []
    try:
        row = next(csv.reader([first.rstrip("\r\n")]))
    except (csv.Error, StopIteration):
        return []
    return [c.strip() for c in row]


def is_napari_csv(path: str | Path) -> bool:
    """Whether a CSV file is napari's own points or shapes export.

    napari writes ``index, axis-0, axis-1, ...`` (points, then their
    features) or ``index, shape-type, vertex-index, axis-0, ...`` (shapes).
    A box table never starts with ``index``: it starts with its slice
    columns (``axis-0``...) or ``label``.
    """
    cols = _header(path)
    return bool(cols) and cols[0] == "index" and {"axis-0", "axis-1"} <= set(cols)


def napari_get_reader(path: str | list[str]) -> Any:
    """A reader for a box table; napari's own reader for another CSV."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if is_box_table(path) and not is_napari_csv(path):
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
