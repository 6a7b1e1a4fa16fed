"""npe2 reader: opens box tables as a boxes layer; declines other CSVs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ._layers import BOX_STYLE
from .formats.boxtable import is_box_table, read_box_table
from .geometry import shapes_from_boxes


def napari_get_reader(path: str | list[str]) -> Any:
    """Return a reader for a box table, or None so that napari's own
    reader handles any other CSV."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if not is_box_table(path):
        return None
    return read_box_table_layer


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
