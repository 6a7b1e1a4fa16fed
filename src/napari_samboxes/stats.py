"""Seconds and actions per box, from the box tables' time columns.

No napari or Qt (matplotlib, for :func:`plot_stats` only, is imported
there). The annotation session stamps every box it makes with ``created``,
``actions`` and ``session`` (:mod:`napari_samboxes.formats.boxtable`);
boxes made elsewhere have none and are only counted.

**Seconds per box.** Within one session, boxes are taken in the order
they were made, whatever image they are on. A box's seconds are the time
from the box made before it in the same session to its own ``created``
time: looking at the image, the clicks, and the steps and keys spent on
the box before it (moving to the next image included). The first box of
a session has no time (nothing before it is known). A box made more than
``idle`` seconds after the one before is an **idle gap** (the annotator
was away): it gets no time and the gap is counted, not added. Time spent
on a box later deleted goes to the next box kept.

**Actions per box** are the ``actions`` cells: the clicks that made it
(2 for a pick), plus one per step, relabel, move or accepted suggestion.

Spreads are the median, the 90th percentile (``numpy.percentile``,
linear interpolation) and the mean.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .formats.boxtable import (
    ACTIONS_COLUMN,
    CREATED_COLUMN,
    SESSION_COLUMN,
    BoxTable,
    BoxTableError,
    is_box_table,
    parse_time,
    read_box_table,
)

__all__ = [
    "IDLE_S",
    "Spread",
    "TimeStats",
    "TimedBox",
    "box_stats",
    "folder_stats",
    "plot_stats",
    "read_tables",
    "timed_boxes",
]

#: Gaps between two boxes longer than this (seconds) are idle by default.
IDLE_S = 60.0


@dataclass(frozen=True)
class TimedBox:
    """One box with a time.

    ``table`` names its box table, ``row`` its row there; ``created`` is in
    seconds since the epoch; ``actions`` is None when its cell is empty or
    not a whole number; ``seconds`` (see the module docstring) is None for
    the first box of a session and after an idle gap.
    """

    table: str
    row: int
    label: str
    created: float
    actions: int | None
    session: str
    seconds: float | None = None


@dataclass(frozen=True)
class Spread:
    """Count, median, 90th percentile and mean of some values (NaN when
    there are none)."""

    n: int
    median: float
    p90: float
    mean: float

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Spread:
        """The spread of the values that are not None."""
        v = np.array([x for x in values if x is not None], dtype=np.float64)
        if not len(v):
            return cls(0, float("nan"), float("nan"), float("nan"))
        return cls(
            len(v),
            float(np.median(v)),
            float(np.percentile(v, 90)),
            float(v.mean()),
        )


@dataclass
class TimeStats:
    """What :func:`box_stats` found.

    Attributes
    ----------
    idle : float
        The idle threshold used (seconds).
    boxes : list of TimedBox
        Every box with a time, by session and time.
    untimed : int
        Boxes without a (readable) ``created`` cell.
    idle_gaps : int
        Gaps longer than ``idle`` left out.
    tables : int
        Box tables read.
    """

    idle: float
    boxes: list[TimedBox] = field(default_factory=list)
    untimed: int = 0
    idle_gaps: int = 0
    tables: int = 0

    @property
    def seconds(self) -> Spread:
        """Seconds per box."""
        return Spread.of(b.seconds for b in self.boxes)

    @property
    def actions(self) -> Spread:
        """Actions per box."""
        return Spread.of(b.actions for b in self.boxes)

    def per(self, key: str) -> dict[str, tuple[Spread, Spread]]:
        """Seconds and actions per ``"label"`` or per ``"session"``, in
        order of first appearance (sessions: by start)."""
        groups: dict[str, list[TimedBox]] = {}
        for b in self.boxes:
            groups.setdefault(getattr(b, key), []).append(b)
        return {
            k: (Spread.of(b.seconds for b in v), Spread.of(b.actions for b in v))
            for k, v in groups.items()
        }

    def active_s(self, session: str | None = None) -> float:
        """Seconds counted (idle gaps left out), of one session or all."""
        return float(
            sum(
                b.seconds or 0.0
                for b in self.boxes
                if session is None or b.session == session
            )
        )

    def text(self) -> str:
        """The report printed by ``napari-samboxes stats``."""
        n = len(self.boxes)
        s, a = self.seconds, self.actions
        lines = [
            f"{n} box(es) with a time in {self.tables} table(s), "
            f"{self.untimed} without; {self.idle_gaps} idle gap(s) over "
            f"{self.idle:g} s left out"
        ]
        if not n:
            return lines[0]
        active = self.active_s()
        rate = f", {3600 * s.n / active:.0f} boxes/hour" if active > 0 else ""
        lines += [
            f"seconds per box: median {_num(s.median)}, p90 {_num(s.p90)}, "
            f"mean {_num(s.mean)} ({s.n} boxes timed; "
            f"{_clock(active)} active{rate})",
            f"actions per box: median {_num(a.median)}, p90 {_num(a.p90)}, "
            f"mean {_num(a.mean)} ({a.n} boxes)",
            "",
            _row("class", "boxes", "median s", "p90 s", "mean act"),
        ]
        for label, (sec, act) in sorted(self.per("label").items()):
            count = sum(b.label == label for b in self.boxes)
            lines.append(
                _row(label, count, _num(sec.median), _num(sec.p90), _num(act.mean))
            )
        lines += ["", _row("session", "boxes", "median s", "p90 s", "mean act")]
        for sid, (sec, act) in self.per("session").items():
            count = sum(b.session == sid for b in self.boxes)
            lines.append(
                _row(sid, count, _num(sec.median), _num(sec.p90), _num(act.mean))
                + f"  started {_start(self, sid)}, {_clock(self.active_s(sid))} active"
            )
        return "\n".join(lines)


def _num(v: float) -> str:
    return "-" if np.isnan(v) else f"{v:.1f}"


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


def _row(name: object, *cells: object) -> str:
    text = str(name)
    text = text if len(text) <= 24 else text[:23] + "~"
    return f"  {text:<24}" + "".join(f"{c!s:>10}" for c in cells)


def _start(stats: TimeStats, session: str) -> str:
    t = min(b.created for b in stats.boxes if b.session == session)
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def timed_boxes(tables: Mapping[str, BoxTable]) -> tuple[list[TimedBox], int]:
    """The boxes of ``tables`` (name -> table) that have a time, and the
    number of those that have none."""
    out: list[TimedBox] = []
    untimed = 0
    for name, table in tables.items():
        extra = table.extra
        created = extra.get(CREATED_COLUMN, [""] * len(table))
        actions = extra.get(ACTIONS_COLUMN, [""] * len(table))
        sessions = extra.get(SESSION_COLUMN, [""] * len(table))
        for i in range(len(table)):
            t = parse_time(created[i])
            if t is None:
                untimed += 1
                continue
            n = actions[i].strip()
            out.append(
                TimedBox(
                    name,
                    i,
                    table.labels[i],
                    t,
                    int(n) if n.isascii() and n.isdigit() else None,
                    sessions[i].strip(),
                )
            )
    return out, untimed


def with_seconds(
    boxes: Sequence[TimedBox], idle: float = IDLE_S
) -> tuple[list[TimedBox], int]:
    """The boxes by session (sessions by start) and time, each with its
    seconds; and the number of idle gaps (see the module docstring)."""
    by_session: dict[str, list[TimedBox]] = {}
    for b in sorted(boxes, key=lambda b: (b.created, b.table, b.row)):
        by_session.setdefault(b.session, []).append(b)
    out: list[TimedBox] = []
    gaps = 0
    for items in by_session.values():
        before: float | None = None
        for b in items:
            gap = None if before is None else b.created - before
            if gap is not None and gap > idle:
                gaps += 1
                gap = None
            out.append(
                TimedBox(b.table, b.row, b.label, b.created, b.actions, b.session, gap)
            )
            before = b.created
    return out, gaps


def box_stats(tables: Mapping[str, BoxTable], idle: float = IDLE_S) -> TimeStats:
    """Seconds and actions per box of some box tables (name -> table).

    Raises
    ------
    ValueError
        For an ``idle`` threshold that is not a positive number.
    """
    if not idle > 0 or not np.isfinite(idle):
        raise ValueError(f"the idle threshold must be a positive number, not {idle}")
    found, untimed = timed_boxes(tables)
    boxes, gaps = with_seconds(found, idle)
    return TimeStats(idle, boxes, untimed, gaps, len(tables))


def read_tables(folder: str | Path) -> tuple[dict[str, BoxTable], list[str]]:
    """The box tables of a folder: ``DIR/annotations/**/*.csv`` of an image
    folder (subfolders too), else ``DIR/**/*.csv`` (other CSV files and the
    copies kept by a conflict, ``*.conflict-*.csv``, skipped); and one
    message per table that cannot be read."""
    from .dataset import ANNOTATIONS

    root = Path(folder)
    where = root / ANNOTATIONS if (root / ANNOTATIONS).is_dir() else root
    tables: dict[str, BoxTable] = {}
    problems: list[str] = []
    for path in sorted(where.rglob("*.csv")):
        rel = path.relative_to(where).as_posix()
        if ".conflict-" in path.name or rel.startswith(".") or not is_box_table(path):
            continue  # a conflict's copy holds boxes counted in the table
        try:
            tables[rel] = read_box_table(path)
        except (BoxTableError, OSError) as e:
            problems.append(str(e))
    return tables, problems


def folder_stats(
    folder: str | Path, idle: float = IDLE_S
) -> tuple[TimeStats, list[str]]:
    """:func:`box_stats` of the box tables of a folder (:func:`read_tables`),
    and the messages of the tables that could not be read."""
    tables, problems = read_tables(folder)
    return box_stats(tables, idle), problems


def plot_stats(stats: TimeStats, path: str | Path) -> Path:
    """Draw seconds and actions per box over the annotation time to a PNG.

    The x axis is active annotation time in minutes (idle gaps left out),
    session after session; each session has its colour, and the line is
    the running median of the last 9 boxes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .atomic import atomic_write_bytes

    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 5.5))
    x0 = 0.0
    xs: list[float] = []
    secs: list[float] = []
    for k, sid in enumerate(stats.per("session")):
        items = [b for b in stats.boxes if b.session == sid]
        x = x0 + np.cumsum([b.seconds or 0.0 for b in items]) / 60
        colour = f"C{k % 10}"
        timed = [(xi, b.seconds) for xi, b in zip(x, items, strict=True) if b.seconds]
        if timed:
            tx, ty = zip(*timed, strict=True)
            top.scatter(tx, ty, s=12, color=colour, label=sid)
            xs += list(tx)
            secs += [float(v) for v in ty]
        acted = [(xi, b.actions) for xi, b in zip(x, items, strict=True) if b.actions]
        if acted:
            ax_, ay = zip(*acted, strict=True)
            bottom.scatter(ax_, ay, s=12, color=colour)
        x0 = float(x[-1]) if len(x) else x0
    if secs:
        run = [float(np.median(secs[max(0, i - 8) : i + 1])) for i in range(len(secs))]
        top.plot(xs, run, color="black", lw=1.5, label="running median (9 boxes)")
    s = stats.seconds
    top.set_ylabel("seconds per box")
    top.set_title(
        f"{len(stats.boxes)} boxes: median {_num(s.median)} s, p90 {_num(s.p90)} s "
        f"(idle gaps over {stats.idle:g} s left out)"
    )
    top.legend(fontsize=7, loc="upper right")
    bottom.set_ylabel("actions per box")
    bottom.set_xlabel("active annotation time (minutes)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
