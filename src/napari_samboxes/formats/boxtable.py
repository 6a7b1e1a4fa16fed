"""The box table: one CSV row per box, written atomically.

Header: optional slice columns (``axis-0``, ``axis-1``, ... for nD images),
then ``label,x_min,y_min,x_max,y_max,score``. Coordinates are pixel
coordinates of the image (x = column, y = row, max inclusive). No napari or
Qt here.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text

__all__ = [
    "BOX_COLUMNS",
    "BoxTable",
    "BoxTableError",
    "is_box_table",
    "read_box_table",
    "write_box_table",
]

BOX_COLUMNS = ("label", "x_min", "y_min", "x_max", "y_max", "score")
_SLICE_COL = re.compile(r"^axis-(\d+)$")


class BoxTableError(ValueError):
    """A box-table file that cannot be read; the message names file and line."""


@dataclass
class BoxTable:
    """Boxes with labels.

    Attributes
    ----------
    labels : list of str
    boxes : numpy.ndarray
        (N, 4) float xyxy.
    scores : numpy.ndarray
        (N,) float, NaN where unknown (hand-drawn boxes).
    slices : numpy.ndarray
        (N, S) leading (slice) coordinates for nD images; S may be 0.
    """

    labels: list[str] = field(default_factory=list)
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    slices: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    def __len__(self) -> int:
        return len(self.labels)


def _fmt(v: float) -> str:
    if not np.isfinite(v):
        return ""
    return repr(float(v)) if v != int(v) else str(int(v))


def write_box_table(path: str | Path, table: BoxTable) -> Path:
    """Write a box table atomically; an empty table gives a header-only file."""
    n_slice = table.slices.shape[1] if table.slices.ndim == 2 else 0
    buf = io.StringIO()
    # RFC 4180 line ends; a label holding a line break is then quoted
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow([f"axis-{i}" for i in range(n_slice)] + list(BOX_COLUMNS))
    boxes = np.asarray(table.boxes, dtype=np.float64).reshape(-1, 4)
    for i, label in enumerate(table.labels):
        sl = [_fmt(v) for v in table.slices[i]] if n_slice else []
        w.writerow(sl + [label] + [_fmt(v) for v in boxes[i]] + [_fmt(table.scores[i])])
    return atomic_write_text(path, buf.getvalue())


def _header(first_line: str) -> list[str] | None:
    """The header's column names if it claims to be a box table.

    A box table's header names ``label`` and at least one coordinate column;
    other columns are allowed (ignored). Anything else (napari's own shapes
    CSV, say) is not a box table.
    """
    try:
        row = next(csv.reader([first_line]))
    except (csv.Error, StopIteration):
        return None
    row = [c.strip() for c in row]
    if "label" not in row or not any(c in row for c in BOX_COLUMNS[1:5]):
        return None
    return row


def _fast_rows(
    body: list[list[str]],
    header: list[str],
    where: list[int],
    i_label: int,
    i_score: int | None,
) -> tuple[list[str], np.ndarray] | None:
    """Vectorised parse of well-formed rows; None sends the caller to the
    row-by-row path, which names the offending line."""
    body = [r for r in body if r and any(c.strip() for c in r)]
    if any(len(r) < len(header) for r in body):
        return None
    try:
        cols = [[r[i] for i in where] for r in body]
        arr = np.array(cols, dtype=np.float64).reshape(len(body), len(where))
        if i_score is None:
            score = np.full(len(body), np.nan)
        else:
            score = np.array(
                [r[i_score] if r[i_score].strip() else "nan" for r in body], np.float64
            )
    except ValueError:
        return None
    if not np.isfinite(arr).all():
        return None
    n = len(where) - 4
    if np.any(arr[:, n] > arr[:, n + 2]) or np.any(arr[:, n + 1] > arr[:, n + 3]):
        return None
    return [r[i_label] for r in body], np.column_stack([arr, score])


def is_box_table(path: str | Path) -> bool:
    """Whether ``path`` is a ``.csv`` file whose header is a box table's."""
    path = Path(path)
    if path.suffix.lower() != ".csv" or not path.is_file():
        return False
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            first = f.readline()
    except (OSError, UnicodeDecodeError):
        return False
    return _header(first.rstrip("\r\n")) is not None


def read_box_table(path: str | Path) -> BoxTable:
    """Read a box table; errors name the file and the line."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()  # newline="": quoted line breaks in labels survive
    except UnicodeDecodeError as e:
        raise BoxTableError(f"{path}: not UTF-8 text ({e})") from e
    if not text.strip():
        raise BoxTableError(f"{path}: the file is empty (expected a header line)")
    rows = csv.reader(io.StringIO(text, newline=""))
    header = [c.strip() for c in next(rows)]
    if _header(",".join(f'"{c}"' for c in header)) is None:
        raise BoxTableError(
            f"{path}, line 1: not a box table header; expected {','.join(BOX_COLUMNS)}"
        )
    missing = [c for c in BOX_COLUMNS if c != "score" and c not in header]
    if missing:
        raise BoxTableError(
            f"{path}, line 1: missing column(s): {', '.join(missing)} "
            f"(a box table has {','.join(BOX_COLUMNS)})"
        )
    slice_cols = sorted(
        (int(m.group(1)), i) for i, c in enumerate(header) if (m := _SLICE_COL.match(c))
    )
    n_slice = len(slice_cols)
    where = [i for _, i in slice_cols] + [header.index(c) for c in BOX_COLUMNS[1:5]]
    names = [header[i] for i in where]
    i_label = header.index("label")
    i_score = header.index("score") if "score" in header else None
    body = list(rows)
    fast = _fast_rows(body, header, where, i_label, i_score)
    if fast is not None:
        labels_f, arr_f = fast
        return BoxTable(
            labels=labels_f,
            boxes=arr_f[:, n_slice : n_slice + 4],
            scores=arr_f[:, n_slice + 4],
            slices=arr_f[:, :n_slice],
        )
    rows_iter = iter(body)
    labels: list[str] = []
    nums: list[list[float]] = []
    for lineno, row in enumerate(rows_iter, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < len(header):
            raise BoxTableError(
                f"{path}, line {lineno}: {len(row)} fields, expected {len(header)}"
            )
        vals: list[float] = []
        for name, i in zip(names, where, strict=True):
            cell = row[i].strip()
            try:
                v = float(cell)
            except ValueError:
                raise BoxTableError(
                    f"{path}, line {lineno}: {name} is not a number: {cell!r}"
                ) from None
            if not np.isfinite(v):
                raise BoxTableError(f"{path}, line {lineno}: {name} is {cell!r}")
            vals.append(v)
        score = float("nan")
        if i_score is not None and row[i_score].strip():
            try:
                score = float(row[i_score])
            except ValueError:
                raise BoxTableError(
                    f"{path}, line {lineno}: score is not a number: {row[i_score]!r}"
                ) from None
        x0, y0, x1, y1 = vals[n_slice : n_slice + 4]
        if x0 > x1 or y0 > y1:
            raise BoxTableError(
                f"{path}, line {lineno}: x_min > x_max or y_min > y_max "
                f"({x0}, {y0}, {x1}, {y1})"
            )
        labels.append(row[i_label])
        nums.append(vals + [score])
    arr = np.asarray(nums, dtype=np.float64).reshape(-1, n_slice + 5)
    return BoxTable(
        labels=labels,
        boxes=arr[:, n_slice : n_slice + 4],
        scores=arr[:, n_slice + 4],
        slices=arr[:, :n_slice],
    )
