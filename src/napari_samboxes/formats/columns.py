"""The box table's further columns that mean something; no napari or Qt.

Every column is text in :attr:`~napari_samboxes.formats.boxtable.BoxTable.extra`;
an empty cell means "not known" (the format's default is written).

- ``difficult``, ``truncated``, ``occluded``: VOC's flags, ``0`` or ``1``.
- ``pose``: VOC's pose, text (``Unspecified`` when empty).
- ``iscrowd``: COCO's crowd flag, ``0`` or ``1``.
- ``prompt``: the SAM prompt the box came from
  (:mod:`napari_samboxes.masks`): ``point x y`` (a candidate's grid point)
  or ``box x0 y0 x1 y1`` (a box prompt, then any ``x y`` points).
- ``mask``: the box's SAM mask, ``x0 y0 w h counts``
  (:mod:`napari_samboxes.formats.rle`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .errors import FormatError

__all__ = [
    "BINARY_FLAGS",
    "CROWD_COLUMN",
    "FLAG_COLUMNS",
    "MASK_COLUMN",
    "PROMPT_COLUMN",
    "Prompt",
    "cell",
    "flag",
    "prompt_cells",
]

#: VOC's per-object flags, kept as columns.
FLAG_COLUMNS = ("difficult", "truncated", "occluded", "pose")
#: The flags that are 0 or 1.
BINARY_FLAGS = ("difficult", "truncated", "occluded")
#: COCO's crowd flag.
CROWD_COLUMN = "iscrowd"
#: The SAM prompt a box came from.
PROMPT_COLUMN = "prompt"
#: The box's SAM mask.
MASK_COLUMN = "mask"

_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no"}


def cell(extra: Mapping[str, Sequence[str]], column: str, row: int) -> str:
    """The (stripped) cell of ``column`` in ``row``; "" when there is none."""
    col = extra.get(column)
    return col[row].strip() if col is not None and row < len(col) else ""


def flag(value: str | int | None, where: str, name: str) -> str:
    """A 0/1 flag as ``"0"``/``"1"``; "" for "not known".

    ``1``/``0``, ``true``/``false``, ``yes``/``no`` (any case) are read;
    anything else is a :class:`FormatError` naming ``where``.
    """
    if value is None:
        return ""
    text = str(value).strip().lower()
    if not text:
        return ""
    if text in _TRUE:
        return "1"
    if text in _FALSE:
        return "0"
    raise FormatError(f"{where}: {name} is {value!r}; expected 0 or 1")


def _num(v: float) -> str:
    f = float(v)
    return str(int(f)) if f == int(f) else repr(f)


@dataclass(frozen=True)
class Prompt:
    """A SAM prompt as the ``prompt`` column holds it.

    ``box`` (x0, y0, x1, y1) or None; ``points``: positive points (x, y).
    A candidate's prompt is its one grid point and no box.
    """

    points: tuple[tuple[float, float], ...] = ()
    box: tuple[float, float, float, float] | None = None

    @property
    def text(self) -> str:
        """The cell: ``point x y`` or ``box x0 y0 x1 y1 [x y ...]``."""
        pts = " ".join(f"{_num(x)} {_num(y)}" for x, y in self.points)
        if self.box is None:
            return f"point {pts}"
        return " ".join(["box", *(_num(v) for v in self.box), *([pts] if pts else [])])

    @classmethod
    def parse(cls, text: str) -> Prompt | None:
        """The prompt of a cell; None for an empty cell.

        Raises
        ------
        FormatError
            For a malformed cell (the caller adds the file and line).
        """
        parts = text.split()
        if not parts:
            return None
        kind, rest = parts[0], parts[1:]
        try:
            nums = [float(v) for v in rest]
        except ValueError:
            raise FormatError(f"prompt {text!r}: not numbers") from None
        if not all(math.isfinite(v) for v in nums):
            raise FormatError(f"prompt {text!r}: not finite numbers")
        if kind == "point" and len(nums) == 2:
            return cls(points=((nums[0], nums[1]),))
        if kind == "box" and len(nums) >= 4 and len(nums) % 2 == 0:
            pts = tuple((nums[i], nums[i + 1]) for i in range(4, len(nums), 2))
            return cls(points=pts, box=(nums[0], nums[1], nums[2], nums[3]))
        raise FormatError(
            f"prompt {text!r}: expected 'point x y' or 'box x0 y0 x1 y1 [x y ...]'"
        )


def prompt_cells(
    points: Sequence[Sequence[float]],
    box: Sequence[float] | None = None,
    scale: Sequence[float] = (1.0, 1.0),
) -> dict[str, str]:
    """The ``prompt`` cell of a box made from a prompt, as ``cells`` for
    :meth:`~napari_samboxes.boxes.Boxes.added`.

    Empty (no prompt kept) when the prompt was not in the image's own
    pixels (``scale`` of a coarser level than 1) or not finite.
    """
    nums = [float(v) for p in points for v in p]
    nums += [] if box is None else [float(v) for v in box]
    if tuple(scale) != (1.0, 1.0) or not all(math.isfinite(v) for v in nums):
        return {}
    pts = tuple((float(x), float(y)) for x, y in points)
    b = None if box is None else tuple(float(v) for v in box)
    return {PROMPT_COLUMN: Prompt(pts, b).text}  # type: ignore[arg-type]
