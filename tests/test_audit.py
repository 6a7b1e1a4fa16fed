"""The tightness audit: boxes against the structured checkpoint's
candidates and against their own masks, and the ``audit`` command."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_samboxes.audit import (
    audit_boxes,
    flagged,
    largest_part_box,
    mask_fragments,
)
from napari_samboxes.boxes import Boxes
from napari_samboxes.cache import CandidateCache
from napari_samboxes.candidates import Candidates
from napari_samboxes.cli import main
from napari_samboxes.formats.columns import MASK_COLUMN
from napari_samboxes.formats.rle import encode_cell
from napari_samboxes.pipeline import drain, raw_results
from napari_samboxes.settings import DEFAULTS

S4 = DEFAULTS.with_(points_per_side=4)


@pytest.fixture(scope="module")
def run4(photo, structured_model, tmp_path_factory):
    """The photo's candidates at 4 points per side, and their cache."""
    cache_dir = tmp_path_factory.mktemp("auditcache")
    raw = drain(
        raw_results(photo, S4, cache=CandidateCache(cache_dir), model=structured_model)
    )
    return raw.candidates(S4), cache_dir


def boxes_of(xyxy, labels=None, masks=None) -> Boxes:
    n = len(xyxy)
    return Boxes(
        np.asarray(xyxy, float).reshape(-1, 4),
        tuple(labels or [f"b{i}" for i in range(n)]),
        np.full(n, np.nan),
        ("hand",) * n,
        np.zeros((n, 0)),
        {MASK_COLUMN: masks} if masks else {},
    )


def fragmented_mask():
    """A 30 x 30 blob at x 40..69, y 50..79 and a 2 x 2 fragment 9 px right
    of it and 6 px below (x 78..79, y 84..85)."""
    m = np.zeros((192, 256), bool)
    m[50:80, 40:70] = True
    m[84:86, 78:80] = True
    return m


def test_a_box_moved_3_px_is_flagged_and_exact_boxes_are_not(run4):
    cands, _ = run4
    a, b, c = cands.boxes[0], cands.boxes[5], cands.boxes[9]
    moved = b + [3, 0, 3, 0]  # 3 px to the right
    grown = c + [0, 0, 0, 3]  # bottom edge 3 px too low
    audits = audit_boxes(boxes_of([a, moved, grown]), cands)
    exact, off, low = audits
    assert exact.kind == "ok" and not exact.flagged
    assert exact.iou == 1.0 and exact.edge_px == 0.0
    assert off.kind == "off-candidate" and off.edge_px == 3.0
    assert off.candidate == tuple(b) and off.suggestion == tuple(b)
    w = b[2] - b[0] + 1
    assert off.iou == pytest.approx((w - 3) / (w + 3))
    assert low.edge_px == 3.0 and low.suggestion == tuple(c)
    # largest problem first: equal edges, the lower IoU first
    assert [x.row for x in flagged(audits)] == [1, 2]
    # a tolerance of 3 px leaves both alone
    assert not any(
        x.flagged for x in audit_boxes(boxes_of([moved]), cands, tolerance_px=3)
    )


def test_every_candidate_as_a_box_is_left_alone(run4):
    cands, _ = run4
    audits = audit_boxes(boxes_of(cands.boxes), cands)
    assert flagged(audits) == []
    assert all(x.iou == 1.0 and x.edge_px == 0 for x in audits)


def test_a_box_far_from_every_candidate_has_nothing_to_suggest(run4):
    cands, _ = run4
    [x] = audit_boxes(boxes_of([[0, 0, 255, 191]]), cands)  # the whole photo
    assert x.kind == "no candidate" and not x.flagged and x.iou < 0.5
    [y] = audit_boxes(boxes_of([[0, 0, 9, 9]]), Candidates.empty())
    assert y.kind == "no candidate" and y.candidate is None


def test_mask_fragments_make_the_box_larger_than_its_largest_part():
    m = fragmented_mask()
    assert largest_part_box(m) == ((40.0, 50.0, 69.0, 79.0), 2)
    f = mask_fragments(encode_cell(m))
    assert f is not None and f.parts == 2 and f.enlarges
    assert f.mask_box == (40.0, 50.0, 79.0, 85.0)
    assert f.part_box == (40.0, 50.0, 69.0, 79.0)
    assert f.px == 10.0  # right edge 79 -> 69; bottom 85 -> 79 is 6
    assert f.gain == pytest.approx(40 * 36 / (30 * 30) - 1)
    one = np.zeros((20, 20), bool)
    one[2:5, 3:9] = True
    g = mask_fragments(encode_cell(one))
    assert g is not None and g.parts == 1 and not g.enlarges and g.gain == 0
    assert mask_fragments("") is None and mask_fragments("1 2 x") is None


def test_a_box_enlarged_by_fragments_is_flagged_with_the_parts_box():
    m = fragmented_mask()
    box = [40, 50, 79, 85]
    [x] = audit_boxes(boxes_of([box], masks=[encode_cell(m)]), Candidates.empty())
    assert x.kind == "fragments" and x.problem_px == 10.0
    assert x.suggestion == (40.0, 50.0, 69.0, 79.0)
    # a mask that no longer fits its box (the box was moved) is not used
    [y] = audit_boxes(boxes_of([[41, 50, 80, 85]], masks=[encode_cell(m)]),
                      Candidates.empty())  # fmt: skip
    assert y.fragments is None and not y.flagged


def test_audit_command_writes_the_report_largest_problem_first(
    tmp_path, photo, run4, structured_ckpt, capsys
):
    from PIL import Image

    from napari_samboxes.dataset import Dataset

    cands, cache_dir = run4
    d = tmp_path / "set"
    d.mkdir()
    Image.fromarray(photo).save(d / "photo.png")
    a, b = cands.boxes[0], cands.boxes[5]
    frag_mask = fragmented_mask()
    rows = [a, b + [3, 0, 3, 0], b + [-1, 0, 0, 0], [40, 50, 79, 85]]
    masks = ["", "", "", encode_cell(frag_mask)]
    table = boxes_of(rows, ["cup", "cup", "dog", "blob"], masks).to_table()
    Dataset(d).save_boxes("photo.png", table)
    before = (d / "annotations" / "photo.csv").read_bytes()
    args = ["audit", str(d), "--points-per-side", "4", "--device", "cpu"]
    args += ["--checkpoint", str(structured_ckpt), "--cache", str(cache_dir)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "4 box(es) in 1 image(s): 3 flagged" in out
    with open(d / "audit.csv", newline="") as f:
        report = list(csv.DictReader(f))
    assert [r["row"] for r in report] == ["3", "1", "2", "0"]
    assert [r["kind"] for r in report[1:]] == ["off-candidate", "off-candidate", "ok"]
    assert report[0]["kind"] == "fragments" and report[0]["problem_px"] == "10"
    assert (
        report[0]["suggested_x_max"] == "69" and report[0]["fragment_gain"] == "0.6000"
    )
    assert report[1]["edge_px"] == "3" and report[2]["edge_px"] == "1"
    assert report[1]["suggested_x_min"] == f"{b[0]:g}"
    assert report[3]["suggested_x_min"] == "" and report[3]["iou"] == "1.0000"
    assert (d / "annotations" / "photo.csv").read_bytes() == before  # read only


def test_audit_argument_errors_are_one_line(tmp_path, capsys):
    d = tmp_path / "set"
    d.mkdir()
    cases = [
        (["audit", str(d / "none")], "not a folder"),
        (["audit", str(d), "--out", str(d)], "not a file"),
        (["audit", str(d), "--tolerance", "-1"], "--tolerance"),
        (["audit", str(d), "--min-iou", "2"], "--min-iou"),
        (["audit", str(d), "--crop-n-layers", "9"], "crop layers"),
    ]
    for args, words in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, (args, err)


def test_audit_never_writes_over_a_file_it_did_not_write(tmp_path, capsys):
    """Reproduced: ``audit --out DIR/annotations/a.csv`` replaced a box table
    with the report; ``--tolerance nan`` flagged nothing and exited 0."""
    import numpy as np
    from PIL import Image

    from napari_samboxes.cli import main

    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "a.png")
    ann = tmp_path / "annotations"
    ann.mkdir()
    table = ann / "a.csv"
    table.write_text("label,x_min,y_min,x_max,y_max,score,source\ncup,1,1,5,5,,hand\n")
    before = table.read_bytes()
    for extra in (["--out", str(table)], ["--tolerance", "nan"]):
        assert main(["audit", str(tmp_path), *extra]) == 2, extra
        assert "error" in capsys.readouterr().err
    assert table.read_bytes() == before
