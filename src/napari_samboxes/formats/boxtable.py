"""The box table: one CSV row per box, written atomically.

Header: optional slice columns (``axis-0``, ``axis-1``, ... for nD images),
then ``label,x_min,y_min,x_max,y_max,score,source``. Coordinates are pixel
coordinates of the image (x = column, y = row, max inclusive). ``score`` is
empty where unknown (hand-drawn boxes). ``source`` says where a box came
from: ``candidate`` (picked among the candidates), ``prompt`` (segmented
from a prompt), ``hand`` (drawn by hand) or ``import`` (read from a file
that does not say: older tables without the column, other tools).

Further columns follow, kept as text (:attr:`BoxTable.extra`): readers
that do not know a column ignore it and every writer keeps it (those with
a meaning: :mod:`napari_samboxes.formats.columns`).

Whatever :func:`write_box_table` accepts, :func:`read_box_table` reads back
identically: labels are any text (empty, long, quotes, line breaks, NUL,
non-ASCII); the writer refuses what it could not give back (NaN boxes,
``x_min > x_max``, arrays of the wrong shape). No napari or Qt here.
"""

from __future__ import annotations

import csv
import io
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text

__all__ = [
    "ACTIONS_COLUMN",
    "BOX_COLUMNS",
    "CREATED_COLUMN",
    "MISSING_SOURCE",
    "SESSION_COLUMN",
    "SOURCES",
    "TIME_COLUMNS",
    "BoxTable",
    "BoxTableError",
    "is_box_table",
    "parse_time",
    "read_box_table",
    "time_cell",
    "write_box_table",
]

BOX_COLUMNS = ("label", "x_min", "y_min", "x_max", "y_max", "score", "source")
#: The values of the ``source`` column.
SOURCES = ("candidate", "island", "prompt", "hand", "import")
#: The source of a row whose table has no (or an empty) ``source`` cell.
MISSING_SOURCE = "import"
_OPTIONAL = ("score", "source")
_SLICE_COL = re.compile(r"^axis-(\d+)$")
#: When a box was made (ISO 8601, UTC).
CREATED_COLUMN = "created"
#: How many actions made it.
ACTIONS_COLUMN = "actions"
#: The annotation session that made it.
SESSION_COLUMN = "session"
#: The time and action columns, in the order they are first written.
TIME_COLUMNS = (CREATED_COLUMN, ACTIONS_COLUMN, SESSION_COLUMN)
#: Labels may be as long as memory allows (csv's default limit is 128 KiB).
_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)


class BoxTableError(ValueError):
    """A box table that cannot be read or written.

    Reading errors name the file and the line; writing errors name the file
    and the row (box index) at fault.
    """


@dataclass
class BoxTable:
    """Boxes with labels.

    Attributes
    ----------
    labels : list of str
    boxes : numpy.ndarray
        (N, 4) float xyxy.
    scores : numpy.ndarray
        (N,) float, NaN where unknown (hand-drawn boxes). Empty: all unknown.
    slices : numpy.ndarray
        (N, S) leading (slice) coordinates for nD images; S may be 0.
    sources : list of str
        One of :data:`SOURCES` per box. Empty: all :data:`MISSING_SOURCE`.
    extra : dict of str to list of str
        Further columns, in order: name -> one text cell per box.
    """

    labels: list[str] = field(default_factory=list)
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    slices: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    sources: list[str] = field(default_factory=list)
    extra: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)


# ------------------------------------------------------------------- times


def time_cell(epoch_s: float) -> str:
    """A ``created`` cell: ``epoch_s`` (seconds since 1970, UTC) as ISO 8601
    in UTC with milliseconds."""
    t = datetime.fromtimestamp(float(epoch_s), tz=timezone.utc)
    return t.isoformat(timespec="milliseconds")


def parse_time(cell: str) -> float | None:
    """Epoch seconds of a ``created`` cell: ISO 8601 (a time without a zone
    is UTC; ``Z`` accepted) or plain seconds; None when empty or not a
    time."""
    text = cell.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if 0 <= value < _LAST_TIME else None
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        t = datetime.fromisoformat(text)
        if t.tzinfo is None:
            t = t.replace(tzinfo=timezone.utc)
        value = t.timestamp()
    except (ValueError, OverflowError):
        return None
    return value if 0 <= value < _LAST_TIME else None


#: Epoch seconds of the year 9000: later (or before 1970) is not a time of a
#: box, and a date cannot always show it.
_LAST_TIME = 221845392000.0


# ----------------------------------------------------------------- writing


def _fmt(v: float) -> str:
    if np.isnan(v):
        return ""
    if np.isinf(v) or v != int(v):
        return repr(float(v))
    return str(int(v))


def _checked(
    path: Path, t: BoxTable
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Boxes, scores, slices and sources of ``t``, or an error naming the
    first value that could not be read back as written."""
    n = len(t.labels)

    def bad(msg: str) -> BoxTableError:
        return BoxTableError(f"{path}: not written: {msg}")

    for i, lab in enumerate(t.labels):
        if not isinstance(lab, str):
            raise bad(f"label of box {i} is {type(lab).__name__}, not text")
    boxes = np.asarray(t.boxes, dtype=np.float64)
    if boxes.size == 0 and n == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.shape != (n, 4):
        raise bad(f"boxes have shape {boxes.shape}; expected ({n}, 4) for {n} labels")
    scores = np.asarray(t.scores, dtype=np.float64)
    if scores.size == 0:
        scores = np.full(n, np.nan)
    if scores.shape != (n,):
        raise bad(f"scores have shape {scores.shape}; expected ({n},)")
    slices = np.asarray(t.slices, dtype=np.float64)
    if slices.ndim != 2 or (slices.shape[1] and slices.shape[0] != n):
        raise bad(f"slices have shape {slices.shape}; expected ({n}, S)")
    if slices.shape[1] == 0:
        slices = np.zeros((n, 0))
    sources = list(t.sources) or [MISSING_SOURCE] * n
    if len(sources) != n:
        raise bad(f"{len(sources)} sources for {n} boxes")
    for what, arr in (("box", boxes), ("slice coordinate", slices)):
        rows = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        if len(rows):
            raise bad(f"box {rows[0]} has a non-finite {what}: {arr[rows[0]].tolist()}")
    flipped = np.flatnonzero((boxes[:, 0] > boxes[:, 2]) | (boxes[:, 1] > boxes[:, 3]))
    if len(flipped):
        raise bad(
            f"box {flipped[0]} has x_min > x_max or y_min > y_max: "
            f"{boxes[flipped[0]].tolist()}"
        )
    for i, s in enumerate(sources):
        if s not in SOURCES:
            raise bad(f"source of box {i} is {s!r}, not one of {', '.join(SOURCES)}")
    for name, cells in t.extra.items():
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise bad(f"extra column name {name!r} is empty or padded")
        if name in BOX_COLUMNS or _SLICE_COL.match(name):
            raise bad(f"extra column {name!r} is one of the box table's own")
        if len(cells) != n or not all(isinstance(c, str) for c in cells):
            raise bad(f"extra column {name!r} needs {n} text cells")
    if sys.version_info < (3, 11):  # pragma: no cover - csv reads NUL from 3.11
        for i, lab in enumerate(t.labels):
            if "\x00" in lab:
                raise bad(f"label of box {i} holds a NUL character (Python >= 3.11)")
    return boxes, scores, slices, sources


def write_box_table(
    path: str | Path, table: BoxTable, *, within: str | Path | None = None
) -> Path:
    """Write a box table atomically; an empty table gives a header-only file.

    ``within``: a folder the file (a link's target) must lie in.

    Raises
    ------
    BoxTableError
        For what could not be read back as written (arrays of the wrong
        shape, NaN or infinite coordinates, ``x_min > x_max``, a label that
        is not text or not encodable, an unknown source); nothing is written.
    OSError
        If the file cannot be written (or lies outside ``within``); the
        previous file is then intact.
    """
    path = Path(path)
    boxes, scores, slices, sources = _checked(path, table)
    n_slice = slices.shape[1]
    buf = io.StringIO()
    # RFC 4180 line ends; a label holding a line break is then quoted
    w = csv.writer(buf, lineterminator="\r\n")
    extra = list(table.extra.items())
    w.writerow(
        [f"axis-{i}" for i in range(n_slice)]
        + list(BOX_COLUMNS)
        + [name for name, _ in extra]
    )
    for i, label in enumerate(table.labels):
        w.writerow(
            [_fmt(v) for v in slices[i]]
            + [label]
            + [_fmt(v) for v in boxes[i]]
            + [_fmt(scores[i]), sources[i]]
            + [cells[i] for _, cells in extra]
        )
    text = buf.getvalue()
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        for what, col in [("label", table.labels), *extra]:
            for i, v in enumerate(col):
                if not _encodable(v):
                    raise BoxTableError(
                        f"{path}: not written: {what} of box {i} is not valid "
                        f"Unicode text ({v!r})"
                    ) from None
        raise
    return atomic_write_text(path, text, within=within)


def _encodable(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ----------------------------------------------------------------- reading


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


def is_box_table(path: str | Path) -> bool:
    """Whether ``path`` is a ``.csv`` file whose header is a box table's."""
    path = Path(path)
    if path.suffix.lower() != ".csv" or not path.is_file():
        return False
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            first = f.readline(1 << 16)
    except (OSError, UnicodeDecodeError):
        return False
    return _header(first.rstrip("\r\n")) is not None


def _numbers(
    path: Path, cells: list[list[str]], names: Sequence[str], lines: list[int]
) -> np.ndarray:
    """Parse a (rows x columns) grid of number cells; errors name the line."""
    try:
        return np.array(cells, dtype=np.float64).reshape(len(cells), len(names))
    except ValueError:
        pass
    out = np.empty((len(cells), len(names)))
    for r, row in enumerate(cells):  # slow path: Python's float, named errors
        for c, (name, cell) in enumerate(zip(names, row, strict=True)):
            try:
                out[r, c] = float(cell)
            except ValueError:
                raise BoxTableError(
                    f"{path}, line {lines[r]}: {name} is not a number: {cell.strip()!r}"
                ) from None
    return out


def _rows(path: Path, text: str) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, non-blank rows and the line each row starts on."""
    csv.field_size_limit(_FIELD_LIMIT)
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        header = [c.strip() for c in next(reader)]
        start = reader.line_num + 1
        for row in reader:
            lineno, start = start, reader.line_num + 1
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                hint = (
                    " (a label holding a comma must be in double quotes)"
                    if len(row) > len(header)
                    else ""
                )
                raise BoxTableError(
                    f"{path}, line {lineno}: {len(row)} fields, expected "
                    f"{len(header)}{hint}"
                )
            rows.append(row)
            lines.append(lineno)
    except csv.Error as e:
        raise BoxTableError(f"{path}, line {reader.line_num}: {e}") from None
    return header, rows, lines


def read_box_table(path: str | Path) -> BoxTable:
    """Read a box table; errors name the file and the line.

    A table without a ``score`` column gives NaN scores; one without a
    ``source`` column (or with an empty cell) gives :data:`MISSING_SOURCE`.

    Raises
    ------
    BoxTableError
        For anything that is not a well-formed box table.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()  # newline="": quoted line breaks in labels survive
    except UnicodeDecodeError as e:
        raise BoxTableError(f"{path}: not UTF-8 text ({e})") from e
    if not text.strip():
        raise BoxTableError(f"{path}: the file is empty (expected a header line)")
    header, rows, lines = _rows(path, text)
    if "label" not in header or not any(c in header for c in BOX_COLUMNS[1:5]):
        raise BoxTableError(
            f"{path}, line 1: not a box table header; expected {','.join(BOX_COLUMNS)}"
        )
    missing = [c for c in BOX_COLUMNS if c not in _OPTIONAL and c not in header]
    if missing:
        raise BoxTableError(
            f"{path}, line 1: missing column(s): {', '.join(missing)} "
            f"(a box table has {','.join(BOX_COLUMNS)})"
        )
    slice_cols = sorted(
        (int(m.group(1)), i) for i, c in enumerate(header) if (m := _SLICE_COL.match(c))
    )
    where = [i for _, i in slice_cols] + [header.index(c) for c in BOX_COLUMNS[1:5]]
    names = [header[i] for i in where]
    arr = _numbers(path, [[r[i] for i in where] for r in rows], names, lines)
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if len(bad):
        r = bad[0]
        col = int(np.flatnonzero(~np.isfinite(arr[r]))[0])
        raise BoxTableError(
            f"{path}, line {lines[r]}: {names[col]} is {rows[r][where[col]].strip()!r}"
        )
    n_slice = len(slice_cols)
    boxes = arr[:, n_slice : n_slice + 4]
    flipped = np.flatnonzero((boxes[:, 0] > boxes[:, 2]) | (boxes[:, 1] > boxes[:, 3]))
    if len(flipped):
        r = flipped[0]
        raise BoxTableError(
            f"{path}, line {lines[r]}: x_min > x_max or y_min > y_max "
            f"({', '.join(_fmt(v) for v in boxes[r])})"
        )
    scores = np.full(len(rows), np.nan)
    if "score" in header:
        i = header.index("score")
        scores = _numbers(
            path, [[r[i].strip() or "nan"] for r in rows], ["score"], lines
        ).reshape(-1)
    sources = [MISSING_SOURCE] * len(rows)
    if "source" in header:
        i = header.index("source")
        sources = [r[i].strip() or MISSING_SOURCE for r in rows]
        for r, s in enumerate(sources):
            if s not in SOURCES:
                raise BoxTableError(
                    f"{path}, line {lines[r]}: source is {s!r}, not one of "
                    f"{', '.join(SOURCES)}"
                )
    i_label = header.index("label")
    known = {*BOX_COLUMNS, *(header[i] for _, i in slice_cols)}
    extra: dict[str, list[str]] = {}
    for i, name in enumerate(header):
        if name and name not in known and name not in extra:
            extra[name] = [r[i] for r in rows]
    return BoxTable(
        labels=[r[i_label] for r in rows],
        boxes=boxes,
        scores=scores,
        slices=arr[:, :n_slice],
        sources=sources,
        extra=extra,
    )
