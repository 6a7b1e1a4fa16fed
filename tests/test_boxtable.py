"""Box table: write, read back, decline other CSVs; atomic writes."""

from __future__ import annotations

import numpy as np
import pytest

from napari_samboxes._napari.reader import napari_get_reader
from napari_samboxes.formats.boxtable import (
    BoxTable,
    BoxTableError,
    is_box_table,
    read_box_table,
    write_box_table,
)


def table(n_slice=0):
    return BoxTable(
        labels=["cat", 'dog, "big"', "naïve ü"],
        boxes=np.array([[1, 2, 10, 20], [0.5, 3.25, 7, 9], [100, 50, 300, 60]], float),
        scores=np.array([0.91, np.nan, 0.5]),
        slices=np.arange(3 * n_slice, dtype=float).reshape(3, n_slice),
        sources=["candidate", "hand", "import"],
    )


@pytest.mark.parametrize("n_slice", [0, 1, 2])
def test_round_trip(tmp_path, n_slice):
    p = tmp_path / "b.csv"
    t = table(n_slice)
    write_box_table(p, t)
    header = p.read_text(encoding="utf-8").splitlines()[0]
    assert header.endswith("label,x_min,y_min,x_max,y_max,score,source")
    back = read_box_table(p)
    assert back.labels == t.labels
    np.testing.assert_array_equal(back.boxes, t.boxes)
    np.testing.assert_array_equal(back.scores, t.scores)
    np.testing.assert_array_equal(back.slices, t.slices)
    assert back.sources == t.sources


def test_empty_table_is_header_only(tmp_path):
    p = tmp_path / "e.csv"
    write_box_table(p, BoxTable())
    assert p.read_bytes() == b"label,x_min,y_min,x_max,y_max,score,source\r\n"
    assert len(read_box_table(p)) == 0


def test_reader_declines_other_csv(tmp_path):
    other = tmp_path / "shapes.csv"
    other.write_text("index,shape-type,vertex-index,axis-0,axis-1\n0,rectangle,0,1,2\n")
    assert not is_box_table(other)
    # any other CSV goes to napari's own reader (so a *.csv preference for the
    # plugin never breaks napari's shapes and points CSVs)
    from napari_builtins.io import napari_get_reader as builtin

    assert napari_get_reader(str(other)) is builtin(str(other))
    good = tmp_path / "good.csv"
    write_box_table(good, table())
    assert napari_get_reader(str(good)) is not None
    assert napari_get_reader(str(tmp_path / "x.txt")) is None


@pytest.mark.parametrize(
    "text, match",
    [
        ("label,x_min,y_min,x_max,score\n", "line 1: missing column.*y_max"),
        (
            "label,x_min,y_min,x_max,y_max,score\na,1,2,x,4,0.5\n",
            "line 2: x_max is not a number",
        ),
        (
            "label,x_min,y_min,x_max,y_max,score\na,1,2,3,4,0.5\nb,9,2,3,4,0.5\n",
            "line 3: x_min > x_max",
        ),
        ("label,x_min,y_min,x_max,y_max,score\na,1,2,3\n", "line 2: 4 fields"),
        ("", "empty"),
    ],
)
def test_errors_name_file_and_line(tmp_path, text, match):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(BoxTableError, match=match) as e:
        read_box_table(p)
    assert "bad.csv" in str(e.value)


def test_extra_columns_are_ignored_and_order_is_free(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text(
        "note,score,y_max,x_max,y_min,x_min,label,axis-0\nhi,0.5,4,3,2,1,cat,7\n"
    )
    t = read_box_table(p)
    assert t.labels == ["cat"] and t.boxes.tolist() == [[1, 2, 3, 4]]
    assert t.scores.tolist() == [0.5] and t.slices.tolist() == [[7]]


def test_negative_and_out_of_image_coordinates_are_kept(tmp_path):
    # the table knows no image: boxes partly outside it are legitimate
    p = tmp_path / "n.csv"
    p.write_text("label,x_min,y_min,x_max,y_max,score\ncat,-5,-2.5,1e6,4,\n")
    assert read_box_table(p).boxes.tolist() == [[-5, -2.5, 1e6, 4]]


def test_100k_rows(tmp_path):
    n = 100_000
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 1000, (n, 2)).round(2)
    t = BoxTable(
        labels=[f"c{i % 7}" for i in range(n)],
        boxes=np.hstack([xy, xy + 5]),
        scores=rng.random(n).round(4),
        slices=np.zeros((n, 0)),
    )
    p = tmp_path / "big.csv"
    write_box_table(p, t)
    back = read_box_table(p)
    assert len(back) == n and back.labels[-1] == t.labels[-1]
    np.testing.assert_array_equal(back.boxes, t.boxes)


def test_read_only_folder_keeps_previous_file(tmp_path, monkeypatch):
    from napari_samboxes import atomic

    p = tmp_path / "keep.csv"
    write_box_table(p, table())
    before = p.read_bytes()

    def denied(*a, **k):  # what a read-only folder answers (root ignores modes)
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr(atomic, "_create_temp", denied)
    with pytest.raises(PermissionError):
        write_box_table(p, BoxTable())
    assert p.read_bytes() == before


def test_bom_and_windows_line_endings(tmp_path):
    p = tmp_path / "w.csv"
    p.write_bytes(
        "\ufefflabel,x_min,y_min,x_max,y_max,score\r\ncat,1,2,3,4,0.5\r\n".encode()
    )
    assert is_box_table(p)
    t = read_box_table(p)
    assert t.labels == ["cat"] and t.boxes.tolist() == [[1, 2, 3, 4]]


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    import os

    p = tmp_path / "keep.csv"
    write_box_table(p, table())
    before = p.read_bytes()

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="No space"):
        write_box_table(p, BoxTable())
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["keep.csv"]  # no temp left


def test_writer_of_an_empty_layer_writes_a_header(tmp_path):
    import pandas as pd

    from napari_samboxes._napari.writer import write_box_table_layer

    p = tmp_path / "empty.csv"
    write_box_table_layer(
        str(p), [], {"features": pd.DataFrame({"label": [], "score": []})}
    )
    assert p.read_bytes() == b"label,x_min,y_min,x_max,y_max,score,source\r\n"
    assert len(read_box_table(p)) == 0


# --- issue 11: every table the writer accepts reads back identically ------


def test_very_long_and_odd_labels_round_trip(tmp_path):
    # item 1: a 1 MB label failed with "_csv.Error: field larger than field limit"
    labels = [
        "x" * 1_000_000,
        "",
        "a\x00b",
        'say "hi",\r\nthen\rgo\n',
        "  pad  ",
        "ü😀",
    ]
    n = len(labels)
    t = BoxTable(labels, np.tile([1.0, 2, 3, 4], (n, 1)), np.full(n, 0.5))
    p = tmp_path / "long.csv"
    write_box_table(p, t)
    back = read_box_table(p)
    assert back.labels == labels
    assert back.sources == ["import"] * n


@pytest.mark.parametrize(
    "boxes, match",
    [
        ([[np.nan, 1, 2, 3]], "box 0 has a non-finite box"),
        ([[0, 0, 1, 1], [5, 1, 4, 3]], "box 1 has x_min > x_max"),
        ([[0, 0, np.inf, 1]], "box 0 has a non-finite"),
    ],
)
def test_writer_refuses_what_the_reader_would_refuse(tmp_path, boxes, match):
    # item 1: NaN and flipped boxes were written, then refused on reading
    p = tmp_path / "b.csv"
    b = np.array(boxes, float)
    with pytest.raises(BoxTableError, match=match):
        write_box_table(p, BoxTable(["a"] * len(b), b, np.zeros(len(b))))
    assert not p.exists()


def test_extra_fields_are_an_error_naming_the_line(tmp_path):
    # item 2: an unquoted "big, red dog" in the last column read as "big"
    p = tmp_path / "extra.csv"
    p.write_text("x_min,y_min,x_max,y_max,label\n1,2,3,4,cat\n1,2,3,4,big, red dog\n")
    with pytest.raises(
        BoxTableError, match=r"extra\.csv, line 3: 6 fields, expected 5"
    ):
        read_box_table(p)


def test_error_line_counts_quoted_line_breaks(tmp_path):
    p = tmp_path / "q.csv"
    p.write_text('label,x_min,y_min,x_max,y_max\n"two\nlines",1,2,3,4\ncat,1,2,x,4\n')
    with pytest.raises(BoxTableError, match="line 4: x_max is not a number"):
        read_box_table(p)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"boxes": np.zeros(4)}, r"boxes have shape \(4,\); expected \(1, 4\)"),
        ({"boxes": np.zeros((1, 5))}, r"expected \(1, 4\)"),
        ({"boxes": np.zeros((2, 4))}, r"expected \(1, 4\)"),
        ({"scores": np.zeros(2)}, r"scores have shape \(2,\)"),
        ({"slices": np.zeros((2, 1))}, r"slices have shape \(2, 1\)"),
        ({"sources": ["hand", "hand"]}, "2 sources for 1 boxes"),
        ({"sources": ["robot"]}, "source of box 0 is 'robot'"),
        ({"labels": [None]}, "label of box 0 is NoneType"),
        ({"labels": ["bad \udc80"]}, "not valid Unicode"),
    ],
)
def test_writer_refuses_wrong_shapes_and_values(tmp_path, kwargs, match):
    # item 8: wrong-shape arrays were silently reshaped or dropped
    args = {"labels": ["a"], "boxes": np.zeros((1, 4)), "scores": np.zeros(1)}
    p = tmp_path / "w.csv"
    with pytest.raises(BoxTableError, match=match):
        write_box_table(p, BoxTable(**{**args, **kwargs}))
    assert not p.exists()


def test_old_tables_without_source_read_as_import(tmp_path):
    p = tmp_path / "old.csv"
    p.write_text("label,x_min,y_min,x_max,y_max,score\ncat,1,2,3,4,0.5\n")
    assert read_box_table(p).sources == ["import"]
    p.write_text(
        "label,x_min,y_min,x_max,y_max,source\ncat,1,2,3,4,\ndog,1,2,3,4,hand\n"
    )
    assert read_box_table(p).sources == ["import", "hand"]
    p.write_text("label,x_min,y_min,x_max,y_max,source\ncat,1,2,3,4,robot\n")
    with pytest.raises(BoxTableError, match="line 2: source is 'robot'"):
        read_box_table(p)


# --- issue 11 item 5: file modes and symbolic links -----------------------


def test_new_file_respects_umask_and_old_file_keeps_its_mode(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        p = tmp_path / "new.csv"
        write_box_table(p, table())
        assert p.stat().st_mode & 0o777 == 0o644  # was 0o600
        os.umask(0o077)
        q = tmp_path / "kept.csv"
        q.write_text("x")
        q.chmod(0o664)
        write_box_table(q, table())
        assert q.stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(old)


def test_writing_through_a_symlink_keeps_the_link(tmp_path):
    real = tmp_path / "data" / "boxes.csv"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    write_box_table(link, table())
    assert link.is_symlink() and link.resolve() == real
    assert read_box_table(real).labels == table().labels
    assert sorted(f.name for f in real.parent.iterdir()) == ["boxes.csv"]


def test_a_folder_at_the_path_is_refused(tmp_path):
    d = tmp_path / "out.csv"
    d.mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        write_box_table(d, table())
    assert list(tmp_path.iterdir()) == [d] and not any(d.iterdir())


def test_further_columns_round_trip_in_order_and_every_writer_keeps_them(tmp_path):
    from napari_samboxes.boxes import Boxes

    p = tmp_path / "x.csv"
    p.write_text(
        "label,x_min,y_min,x_max,y_max,difficult,pose,note\n"
        'cat,1,2,3,4,1,Left,"a, b"\ndog,5,6,7,8,,,\n'
    )
    t = read_box_table(p)
    assert t.extra == {
        "difficult": ["1", ""],
        "pose": ["Left", ""],
        "note": ["a, b", ""],
    }
    b = Boxes.from_table(t)
    b = b.relabeled([1], "bird").added([0, 0, 1, 1], "fox", cells={"pose": "Up"})
    b = b.without([0])
    write_box_table(p, b.to_table())
    back = read_box_table(p)
    assert back.labels == ["bird", "fox"]
    assert back.extra == {"difficult": ["", ""], "pose": ["", "Up"], "note": ["", ""]}
    assert p.read_text().splitlines()[0].endswith(",source,difficult,pose,note")


@pytest.mark.parametrize(
    "extra, match",
    [
        ({"label": ["x"]}, "one of the box table's own"),
        ({"axis-0": ["x"]}, "one of the box table's own"),
        ({" padded": ["x"]}, "empty or padded"),
        ({"note": ["x", "y"]}, "needs 1 text cells"),
        ({"note": ["\ud800"]}, "note of box 0 is not valid Unicode"),
    ],
)
def test_writer_refuses_bad_further_columns(tmp_path, extra, match):
    t = table()
    t = BoxTable(t.labels[:1], t.boxes[:1], t.scores[:1], t.slices[:1], extra=extra)
    with pytest.raises(BoxTableError, match=match):
        write_box_table(tmp_path / "x.csv", t)
    assert not (tmp_path / "x.csv").exists()


def test_a_write_kept_inside_a_folder_refuses_a_link_out_of_it(tmp_path):
    from napari_samboxes.atomic import OutsideError

    d = tmp_path / "dir"
    d.mkdir()
    outside = tmp_path / "outside.csv"
    outside.write_text("precious")
    (d / "a.csv").symlink_to(outside)
    with pytest.raises(OutsideError, match="outside"):
        write_box_table(d / "a.csv", table(), within=d)
    assert outside.read_text() == "precious"
    (d / "b.csv").symlink_to(d / "real.csv")  # inside: written through
    write_box_table(d / "b.csv", table(), within=d)
    assert read_box_table(d / "real.csv").labels == table().labels


def test_time_columns_and_island_boxes_read_back_as_written(tmp_path):
    from napari_samboxes.formats.boxtable import TIME_COLUMNS, time_cell

    t = BoxTable(
        labels=["cup", "plate"],
        boxes=np.array([[1.0, 2, 30, 40], [5, 5, 9, 9]]),
        scores=np.array([0.9, np.nan]),
        sources=["island", "hand"],
        extra={
            "created": [time_cell(1_790_000_000.5), ""],
            "actions": ["3", ""],
            "session": ["20260921T141320Z-0a1b", ""],
        },
    )
    path = write_box_table(tmp_path / "t.csv", t)
    header = path.read_text().splitlines()[0].split(",")
    assert header[-3:] == list(TIME_COLUMNS)
    back = read_box_table(path)
    assert back.sources == ["island", "hand"]
    assert back.extra == t.extra
    assert back.extra["created"][0] == "2026-09-21T14:13:20.500+00:00"
