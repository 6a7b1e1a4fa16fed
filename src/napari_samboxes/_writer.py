"""npe2 writer: a Shapes layer as a box table (keeps labels, scores, sources).

Any shape is saved as the whole-pixel box around it (see
:mod:`napari_samboxes.geometry`); a shape that gives no box (NaN
coordinates, say) is refused before anything is written, with a message
naming its index.
"""

from __future__ import annotations

from typing import Any

from .formats.boxtable import BoxTableError, write_box_table
from .geometry import ShapeError, table_from_layer_data


class BoxSaveError(RuntimeError):
    """A layer refused at save time; the message names the shape at fault.

    Not a ``ValueError``: napari takes a ``ValueError`` from a writer for
    "this writer does not apply" and shows "not a valid writer" instead of
    the message.
    """


def write_box_table_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one Shapes layer as a box table, atomically.

    Raises
    ------
    BoxSaveError
        For a shape that cannot be saved as a box, or a value the table
        could not give back as written; nothing is written.
    """
    try:
        table = table_from_layer_data(data, meta)
        write_box_table(path, table)
    except (ShapeError, BoxTableError) as e:
        raise BoxSaveError(f"{path}: not saved: {e}") from e
    return [path]
