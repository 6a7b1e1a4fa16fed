"""npe2 writer: a Shapes layer as a box table (keeps labels, scores, sources).

Any shape is saved as the whole-pixel box around it (see
:mod:`napari_samboxes.geometry`); a shape that gives no box (NaN
coordinates, say) is refused before anything is written, with a message
naming its index.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..formats.boxtable import BoxTableError, write_box_table
from ..geometry import ShapeError, table_from_layer_data


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


def write_box_tables(
    path: str, layer_data: list[tuple[Any, dict[str, Any], str]]
) -> list[str]:
    """Write the Shapes layers among ``layer_data`` as box tables.

    napari's multi-layer writer API (File > Save All Layers, or Save
    Selected Layers with several layers). Other layers (the images) are not
    written: they are already files. One Shapes layer goes to ``path``;
    several go to ``<path stem>_<layer name>.csv`` beside it.

    Raises
    ------
    BoxSaveError
        When there is no Shapes layer, or one cannot be saved as boxes.
    """
    shapes = [(d, m) for d, m, kind in layer_data if kind == "shapes"]
    if not shapes:
        raise BoxSaveError(f"{path}: not saved: no shapes (boxes) layer to save")
    if len(shapes) == 1:
        return write_box_table_layer(path, *shapes[0])
    p = Path(path)
    stem = p.stem if p.suffix.lower() == ".csv" else p.name
    written: list[str] = []
    taken: set[str] = set()
    for data, meta in shapes:
        name = re.sub(r"[^\w.-]+", "_", str(meta.get("name", "boxes"))).strip("_")
        unique, n = name or "boxes", 1
        while unique.casefold() in taken:
            n += 1
            unique = f"{name}_{n}"
        taken.add(unique.casefold())
        target = str(p.with_name(f"{stem}_{unique}.csv"))
        written += write_box_table_layer(target, data, meta)
    return written
