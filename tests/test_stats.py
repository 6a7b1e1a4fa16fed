"""Time per box: the session stamps its boxes, the box table keeps the
stamps through autosave, reopen, export and import, and ``stats`` reads
them into seconds and actions per box."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from napari_samboxes.boxes import Boxes
from napari_samboxes.cli import main
from napari_samboxes.dataset import Dataset
from napari_samboxes.folder import FolderSession
from napari_samboxes.formats.boxtable import (
    BoxTable,
    parse_time,
    read_box_table,
    time_cell,
    write_box_table,
)
from napari_samboxes.session import Session
from napari_samboxes.stats import box_stats, folder_stats
from test_session import raw

T0 = 1_790_000_000.0  # 2026-09-21 (UTC), a whole second


def timed(labels, seconds, actions, session="s1"):
    """A box table whose boxes were made ``seconds`` after T0."""
    n = len(labels)
    return BoxTable(
        labels=list(labels),
        boxes=np.tile([[0.0, 0.0, 9.0, 9.0]], (n, 1)),
        scores=np.full(n, np.nan),
        sources=["candidate"] * n,
        extra={
            "created": [time_cell(T0 + s) for s in seconds],
            "actions": [str(a) for a in actions],
            "session": [session] * n,
        },
    )


def test_time_cells_are_iso_utc_and_read_back():
    assert time_cell(T0 + 0.25) == "2026-09-21T14:13:20.250+00:00"
    assert parse_time(time_cell(T0 + 0.25)) == pytest.approx(T0 + 0.25)
    assert parse_time("2026-09-21T14:13:20Z") == T0
    assert parse_time("2026-09-21T14:13:20") == T0  # no zone: UTC
    assert parse_time(str(T0)) == T0  # epoch seconds
    assert parse_time("") is parse_time("yesterday") is parse_time("nan") is None


def test_seconds_and_actions_per_box_from_known_times():
    # session s1 over two images: boxes at 0, 4, 10 s (a.png), 13 s (b.png),
    # then a coffee (200 s later) and 3 more s; session s2: 0, 8 s
    tables = {
        "a.csv": timed(["cup", "cup", "plate"], [0, 4, 10], [2, 3, 2]),
        "b.csv": timed(["cup", "plate", "cup"], [13, 213, 216], [2, 5, 2]),
        "c.csv": timed(["plate", "plate"], [1000, 1008], [2, 4], "s2"),
    }
    tables["c.csv"].extra["created"].append("")  # a box from elsewhere
    tables["c.csv"].labels.append("cup")
    tables["c.csv"].boxes = np.vstack([tables["c.csv"].boxes, [[1, 1, 5, 5]]])
    tables["c.csv"].scores = np.append(tables["c.csv"].scores, np.nan)
    tables["c.csv"].sources.append("import")
    tables["c.csv"].extra["actions"].append("")
    tables["c.csv"].extra["session"].append("")
    st = box_stats(tables, idle=60)
    assert (len(st.boxes), st.untimed, st.idle_gaps, st.tables) == (8, 1, 1, 3)
    # timed: 4, 6, 3 (s1), 3 (after the idle gap), 8 (s2)
    assert sorted(b.seconds for b in st.boxes if b.seconds) == [3, 3, 4, 6, 8]
    s = st.seconds
    assert (s.n, s.median, s.mean) == (5, 4.0, 4.8)
    assert s.p90 == pytest.approx(7.2)  # numpy's linear 90th percentile
    a = st.actions
    assert (a.n, a.median, a.mean) == (8, 2.0, 22 / 8)
    per_class = st.per("label")
    assert per_class["cup"][0].median == 3.0  # 4 (a.csv), 3 and 3 (b.csv)
    assert per_class["plate"][0].n == 2  # 6 and 8 s (one after the idle gap)
    assert per_class["plate"][1].mean == pytest.approx((2 + 5 + 2 + 4) / 4)
    per_session = st.per("session")
    assert list(per_session) == ["s1", "s2"]
    assert per_session["s1"][0].n == 4 and per_session["s2"][0].median == 8.0
    assert st.active_s("s1") == 16 and st.active_s() == 24
    # a longer idle threshold counts the coffee break as one box's time
    assert box_stats(tables, idle=300).seconds.n == 6
    text = st.text()
    assert "median 4.0, p90 7.2, mean 4.8" in text
    assert "1 idle gap(s) over 60 s left out" in text and "1 without" in text
    with pytest.raises(ValueError, match="positive"):
        box_stats(tables, idle=0)


def test_the_session_stamps_what_made_each_box():
    now = [T0]
    s = Session(clock=lambda: now[0], session_id="test-session")
    s.set_thresholds(0.88, 0.95, 1.0)
    s.begin_run()
    s.commit(raw())
    now[0] = T0 + 5
    s.pick(np.array([[48, 48], [52, 53]]), "cup")  # two clicks
    now[0] = T0 + 7
    s.step(+1)  # one step
    s.relabel([0], "plate")  # one key
    s.relabel([0], "plate")  # the same label again: no action, no change
    now[0] = T0 + 12
    s.replace_all(s.boxes.added([0, 0, 20, 20], "cup", source="hand"))  # drawn
    s.add_prompted([5, 5, 150, 90], 0.8, "cup")  # the prompt fallback
    b = s.boxes
    assert b.extra["created"] == (
        time_cell(T0 + 5),
        time_cell(T0 + 12),
        time_cell(T0 + 12),
    )
    assert b.extra["actions"] == ("4", "1", "2")
    assert b.extra["session"] == ("test-session",) * 3
    s.undo()
    s.undo()
    assert s.boxes.extra["actions"] == ("4",)  # the history keeps them
    # boxes from a file have no time and are not counted
    s.show_image("other", Boxes().added([1, 1, 9, 9], "cup", source="import"))
    s.relabel([0], "plate")
    s.replace_all(s.boxes.replaced(0, [2, 2, 9, 9], float("nan"), "hand"))
    assert s.boxes.cell("created", 0) == s.boxes.cell("actions", 0) == ""


def test_stamps_survive_autosave_reopen_export_and_import(tmp_path, capsys):
    d = tmp_path / "shots"
    d.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(d / name)
    now = [T0]
    s = Session(clock=lambda: now[0], session_id="s1")
    fs = FolderSession(d)
    for i, (label, t) in enumerate([("cup", 3), ("plate", 9)]):
        s.show_image(fs.key(i))
        now[0] = T0 + t
        s.add([4, 4, 20, 30], label, actions=2)
        fs.record(fs.key(i), s.boxes)
    assert fs.flush() == []
    # reopened as folder mode does
    again = FolderSession(d)
    got = again.read_boxes(0)
    assert got.extra["created"] == (time_cell(T0 + 3),)
    assert (got.cell("actions", 0), got.cell("session", 0)) == ("2", "s1")
    st, problems = folder_stats(d)
    assert problems == [] and [b.seconds for b in st.boxes] == [None, 6.0]
    # exports cannot hold the columns and leave the tables as they were
    before = {p.name: p.read_text() for p in (d / "annotations").glob("*.csv")}
    for fmt in ("yolo", "voc", "coco"):
        assert (
            main(["export", str(d), "--format", fmt, "--out", str(tmp_path / fmt)]) == 0
        )
    after = {p.name: p.read_text() for p in (d / "annotations").glob("*.csv")}
    assert after == before
    # imported elsewhere, the boxes have no time: stats says so, exit 1
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for name in ("a.png", "b.png"):
        (fresh / name).write_bytes((d / name).read_bytes())
    assert main(["import", str(tmp_path / "voc"), "--format", "voc", str(fresh)]) == 0
    t = Dataset(fresh).load_boxes("a.png")
    assert len(t) == 1 and "created" not in t.extra
    capsys.readouterr()
    assert main(["stats", str(fresh)]) == 1
    out, err = capsys.readouterr()
    assert "2 box(es) with a time" not in out and "no box has a time" in err
    # a table written and read again (any writer of the box table) keeps them
    write_box_table(tmp_path / "copy.csv", got.to_table())
    assert read_box_table(tmp_path / "copy.csv").extra == {
        k: list(v) for k, v in got.extra.items()
    }


def test_stats_command_prints_the_numbers_and_draws_them(tmp_path, capsys):
    ann = tmp_path / "shots" / "annotations"
    ann.mkdir(parents=True)
    write_box_table(ann / "a.csv", timed(["cup"] * 4, [0, 4, 10, 100], [2, 3, 2, 2]))
    write_box_table(ann / "b.csv", timed(["plate"] * 3, [101, 104, 109], [2, 2, 3]))
    plot = tmp_path / "stats.png"
    rc = main(["stats", str(tmp_path / "shots"), "--idle", "30", "--plot", str(plot)])
    out, err = capsys.readouterr()
    assert rc == 0 and err == ""
    # gaps 4, 6, (90: idle), 1, 3, 5
    assert "7 box(es) with a time in 2 table(s)" in out
    assert "seconds per box: median 4.0, p90 5.6, mean 3.8 (5 boxes timed" in out
    assert "actions per box: median 2.0" in out
    assert "cup" in out and "plate" in out and "s1" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(plot) as im:
        assert im.size == (800, 550)
        # something was drawn besides the white page and the axes
        assert len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) > 20


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["nowhere"], "is not a folder"),
        (["{d}", "--idle", "0"], "--idle must be a positive number"),
        (["{d}", "--idle", "nan"], "--idle must be a positive number"),
        (["{d}", "--plot", "{d}/x.txt"], "give a .png file"),
        (["{d}", "--plot", "{d}/no/x.png"], "no folder"),
        (["{d}", "--idle", "soon"], "invalid float value"),
    ],
)
def test_stats_bad_arguments_are_one_line_and_exit_2(tmp_path, capsys, args, says):
    try:
        rc = main(["stats", *(a.format(d=tmp_path) for a in args)])
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert says in err and len(err.strip().splitlines()) == 1


def test_stats_reports_broken_tables_and_goes_on(tmp_path, capsys):
    write_box_table(tmp_path / "a.csv", timed(["cup"] * 2, [0, 4], [2, 2]))
    (tmp_path / "b.csv").write_text("label,x_min,y_min,x_max,y_max\ncup,1,2,x,4\n")
    (tmp_path / "notes.csv").write_text("just,some,notes\n")  # not a box table
    rc = main(["stats", str(tmp_path)])
    out, err = capsys.readouterr()
    assert rc == 1 and "2 box(es) with a time in 1 table(s)" in out
    assert "b.csv, line 2" in err and "notes.csv" not in err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.csv").write_text("just,some,notes\n")
    assert main(["stats", str(tmp_path / "empty")]) == 1  # no box tables there
    assert "no box tables" in capsys.readouterr().err


def test_stats_reads_subfolders_skips_conflict_copies_and_odd_cells(tmp_path, capsys):
    ann = tmp_path / "annotations"
    (ann / "train").mkdir(parents=True)
    write_box_table(ann / "a.csv", timed(["cup"] * 2, [0, 4], [2, 2]))
    write_box_table(ann / "train" / "b.csv", timed(["plate"] * 2, [10, 16], [2, 3]))
    write_box_table(ann / "a.conflict-20260921-141400.csv", timed(["cup"], [0], [2]))
    odd = timed(["cup"] * 3, [0, 0, 20], [2, 2, 2])
    odd.extra["created"][:2] = ["1e20", "-1e12"]  # no time a box can have
    odd.extra["actions"][2] = "\u00b2"  # a digit to str.isdigit, not a number
    write_box_table(ann / "train" / "c.csv", odd)
    rc = main(["stats", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "5 box(es) with a time in 3 table(s), 2 without" in out
