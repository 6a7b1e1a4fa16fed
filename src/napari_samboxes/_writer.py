"""npe2 writer: a Shapes layer as a box table (keeps labels, scores, sources).

Any shape is saved as the whole-pixel box around it (see
:mod:`napari_samboxes.geometry`); a shape that gives no box (NaN
coordinates, say) is refused before anything is written, with a message
naming its index.
"""

from __future__ import annotations

from typing import Any

from .formats.boxtable import write_box_table
from .geometry import table_from_layer_data


def write_box_table_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one Shapes layer as a box table, atomically.

    Raises
    ------
    napari_samboxes.geometry.ShapeError
        For a shape that cannot be saved as a box (nothing is written).
    napari_samboxes.formats.boxtable.BoxTableError
        For a value the table could not give back as written.
    """
    write_box_table(path, table_from_layer_data(data, meta))
    return [path]
