"""npe2 writer: a Shapes layer as a box table (keeps labels and scores)."""

from __future__ import annotations

from typing import Any

from .formats.boxtable import write_box_table
from .geometry import table_from_layer_data


def write_box_table_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one Shapes layer as a box table, atomically."""
    write_box_table(path, table_from_layer_data(data, meta))
    return [path]
