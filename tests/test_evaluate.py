"""The simulated annotator (``evaluate``) against ground truth built from
known candidates of the structured checkpoint, and the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_samboxes.boxes import Boxes
from napari_samboxes.cache import CandidateCache
from napari_samboxes.cli import main
from napari_samboxes.dataset import Dataset
from napari_samboxes.evaluate import (
    BoxResult,
    annotate_image,
    click_points,
    evaluate_folder,
    summarize,
)
from napari_samboxes.formats.columns import MASK_COLUMN
from napari_samboxes.formats.rle import encode_cell
from napari_samboxes.pipeline import Encoded, RunRequest, drain, raw_results
from napari_samboxes.settings import DEFAULTS
from napari_samboxes.tighten import Prompter

S4 = DEFAULTS.with_(points_per_side=4)
#: A strip across the photo: wider than any blob, so no candidate holds
#: both clicks, and the structured checkpoint's box prompts give nothing.
STRIP = [0.0, 180.0, 255.0, 191.0]


@pytest.fixture(scope="module")
def run4(photo, structured_model, tmp_path_factory):
    """Raw results and embedding of the photo at 4 points per side, and the
    cache that holds them (the commands below read it)."""
    cache_dir = tmp_path_factory.mktemp("evalcache")
    seen = []
    raw = drain(
        raw_results(photo, S4, cache=CandidateCache(cache_dir), model=structured_model),
        lambda ev: seen.append(ev.embedding) if isinstance(ev, Encoded) else None,
    )
    return raw, seen[0], cache_dir


def chain(cands, point):
    """The candidates of one grid point, smallest first."""
    idx = np.flatnonzero(np.all(cands.points == point, axis=1))
    return cands.boxes[idx[np.argsort(cands.areas[idx], kind="stable")]]


def gt_of(boxes, labels=None, cells=None) -> Boxes:
    n = len(boxes)
    extra = {MASK_COLUMN: cells} if cells is not None else {}
    return Boxes(
        np.asarray(boxes, float).reshape(-1, 4),
        tuple(labels or ["obj"] * n),
        np.full(n, np.nan),
        ("import",) * n,
        np.zeros((n, 0)),
        extra,
    )


def test_click_policy_is_on_the_diagonal_or_on_the_mask():
    np.testing.assert_array_equal(
        click_points([10, 20, 50, 60]), [[20.0, 30.0], [40.0, 50.0]]
    )
    mask = np.zeros((80, 80), bool)
    mask[20:31, 10:21] = True  # top-left blob: x 10..20, y 20..30
    mask[60, 50] = True  # a lone pixel makes the box x 10..50, y 20..60
    cell = encode_cell(mask)
    pts = click_points([10, 20, 50, 60], cell)
    np.testing.assert_array_equal(pts, [[20.0, 30.0], [50.0, 60.0]])
    # a mask that does not fit the box is not used
    np.testing.assert_array_equal(
        click_points([10, 20, 52, 60], cell), [[20.5, 30.0], [41.5, 50.0]]
    )


def test_a_box_equal_to_a_candidate_is_iou_1_in_2_actions(run4):
    raw, _, _ = run4
    cands = raw.candidates(S4)
    points = np.unique(cands.points, axis=0)
    smallest = np.array([chain(cands, p)[0] for p in points])
    assert len(smallest) >= 12
    results = annotate_image(gt_of(smallest), raw, S4)
    for r in results:
        assert r.first_iou == 1.0 and r.best_iou == 1.0, r
        assert r.actions_to(0.9) == 2 and r.actions == 2 and r.path == "candidate"
    assert summarize(results).within == {2: 1.0, 3: 1.0, 5: 1.0}


def test_a_nested_candidate_is_reached_in_the_right_number_of_steps(run4):
    raw, _, _ = run4
    cands = raw.candidates(S4)
    small, mid, large = chain(cands, [96.0, 168.0])  # three nested blobs
    assert np.all(small[:2] > mid[:2]) and np.all(mid[:2] > large[:2])
    # the diagonal clicks of the largest lie in the middle one: one step up
    [r] = annotate_image(gt_of([large]), raw, S4)
    assert r.path == "step" and r.best_iou == 1.0
    assert r.actions_to(0.9) == 3 and r.actions_to(0.5) == 2
    area = (mid[2] - mid[0] + 1) * (mid[3] - mid[1] + 1)
    want = area / ((large[2] - large[0] + 1) * (large[3] - large[1] + 1))
    assert r.first_iou == pytest.approx(want)
    # a ground-truth mask (the smallest blob and two corner pixels) moves
    # the clicks into the smallest one: two steps up
    mask = np.zeros((192, 256), bool)
    x0, y0, x1, y1 = small.astype(int)
    mask[y0 : y1 + 1, x0 : x1 + 1] = True
    mask[int(large[1]), int(large[0])] = mask[int(large[3]), int(large[2])] = True
    [r] = annotate_image(gt_of([large], cells=[encode_cell(mask)]), raw, S4)
    assert [s[0] for s in r.states] == [2, 3, 4]  # no smaller box: no [ step
    assert r.actions_to(0.9) == 4 and r.path == "step"


def test_a_box_no_candidate_or_prompt_gives_is_not_reachable(
    run4, photo, structured_ckpt
):
    raw, emb, _ = run4
    prompter = Prompter(RunRequest(photo, structured_ckpt, "cpu", S4), embedding=emb)
    [r] = annotate_image(gt_of([STRIP]), raw, S4, prompter)
    assert r.states == () and r.path == "none" and r.best_iou == 0.0
    assert all(r.actions_to(t) is None for t in (0.9, 0.75, 0.5))
    d = r.as_dict()
    assert d["actions_to_iou_0.9"] == "not reachable"
    assert d["best_reachable_iou"] == 0.0 and d["path"] == "none"


def test_the_prompt_fallback_gives_the_box_of_the_prompt(run4):
    raw, _, _ = run4
    asked = []

    def prompt(boxes, points):  # SAM's answer: the ground-truth box
        asked.append(boxes.copy())
        return np.array([STRIP]), np.array([0.9])

    [r] = annotate_image(gt_of([STRIP]), raw, S4, prompt)
    np.testing.assert_allclose(asked[0], [[63.75, 182.75, 191.25, 188.25]])
    assert r.states == ((2, 1.0, "prompt"),) and r.path == "prompt"


def test_summary_figures():
    def res(label, states):
        return BoxResult("a.png", 0, label, (0, 0, 9, 9), ((2, 2), (7, 7)), states)

    results = [
        res("cup", ((2, 1.0, "candidate"),)),
        res("cup", ((2, 0.6, "candidate"), (3, 0.95, "step"))),
        res("dog", ((2, 0.3, "candidate"), (3, 0.5, "step"), (4, 0.7, "step"))),
        res("dog", ()),
    ]
    s = summarize(results)
    assert s.boxes == 4 and s.median_first_iou == pytest.approx(0.45)
    assert s.within == {2: 0.25, 3: 0.5, 5: 0.5} and s.not_reachable == 2
    # kept boxes: 2, 3, the best one at 4, nothing after the 2 clicks
    assert s.mean_actions == pytest.approx((2 + 3 + 4 + 2) / 4)
    assert s.paths == {"candidate": 1, "step": 2, "prompt": 0, "none": 1}
    assert results[2].path == "step" and results[2].actions_to(0.75) is None


VOC = """<annotation>
\t<folder>images</folder>
\t<filename>{name}</filename>
\t<path>/home/annotator/images/{name}</path>
\t<source>
\t\t<database>Unknown</database>
\t</source>
\t<size>
\t\t<width>{w}</width>
\t\t<height>{h}</height>
\t\t<depth>3</depth>
\t</size>
\t<segmented>0</segmented>
{objects}</annotation>
"""
OBJECT = """\t<object>
\t\t<name>{label}</name>
\t\t<pose>Unspecified</pose>
\t\t<truncated>0</truncated>
\t\t<difficult>0</difficult>
\t\t<bndbox>
\t\t\t<xmin>{x0}</xmin>
\t\t\t<ymin>{y0}</ymin>
\t\t\t<xmax>{x1}</xmax>
\t\t\t<ymax>{y1}</ymax>
\t\t</bndbox>
\t</object>
"""


def labelimg_voc(path: Path, name: str, size, objects) -> Path:
    """A VOC file as LabelImg writes it (1-based pixel corners, tabs)."""
    body = "".join(
        OBJECT.format(label=lab, x0=int(b[0]) + 1, y0=int(b[1]) + 1,
                      x1=int(b[2]) + 1, y1=int(b[3]) + 1)
        for lab, b in objects
    )  # fmt: skip
    path.write_text(VOC.format(name=name, w=size[0], h=size[1], objects=body))
    return path


def test_evaluate_command_compares_settings_and_writes_json_and_plots(
    tmp_path, photo, run4, structured_ckpt, capsys
):
    from PIL import Image

    raw, _, cache_dir = run4
    cands = raw.candidates(S4)
    small, mid, large = chain(cands, [96.0, 168.0])
    d = tmp_path / "images"
    d.mkdir()
    Image.fromarray(photo).save(d / "photo.png")
    objects = [("cup", small), ("plate", large), ("table", STRIP)]
    labelimg_voc(tmp_path / "photo.xml", "photo.png", (256, 192), objects)
    out = d / "evaluation"  # the default
    args = ["evaluate", str(d), "--gt", str(tmp_path / "photo.xml")]
    args += ["--format", "voc", "--device", "cpu"]
    args += ["--checkpoint", str(structured_ckpt), "--cache", str(cache_dir)]
    assert main([*args, "--compare", "points_per_side=4,2"]) == 0
    text = capsys.readouterr().out
    assert "points_per_side=4" in text and "points_per_side=2" in text
    assert "IoU >= 0.9 within 2 actions" in text and "plate" in text
    doc = json.loads((out / "evaluation.json").read_text())
    assert doc["official_checkpoint"] is False
    run = doc["runs"][0]
    assert (
        run["name"] == "points_per_side=4" and run["settings"]["points_per_side"] == 4
    )
    by_label = {b["label"]: b for b in run["boxes"]}
    assert by_label["cup"]["best_reachable_iou"] == 1.0
    assert by_label["cup"]["actions_to_iou_0.9"] == 2
    assert by_label["plate"]["actions_to_iou_0.9"] == 3
    assert by_label["plate"]["path"] == "step"
    assert by_label["table"]["actions_to_iou_0.5"] == "not reachable"
    assert run["summary"]["share_iou_0.9_within_2_actions"] == pytest.approx(
        1 / 3, abs=1e-4
    )
    assert run["summary"]["share_iou_0.9_within_3_actions"] == pytest.approx(
        2 / 3, abs=1e-4
    )
    assert set(run["per_class"]) == {"cup", "plate", "table"}
    assert doc["runs"][1]["settings"]["points_per_side"] == 2
    for png in ("evaluate_iou_histogram.png", "evaluate_actions_curve.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    # the plots are not images of the folder; no box table was written
    assert Dataset(d).names == ["photo.png"] and not (d / "annotations").exists()


def test_evaluate_runs_on_a_labelimg_file_of_the_sample_photo(
    tmp_path, structured_model
):
    from skimage import data

    from napari_samboxes.imread import read_image

    d = tmp_path / "images"
    d.mkdir()
    from PIL import Image

    Image.fromarray(data.coffee()).save(d / "coffee.jpg", quality=95)
    objects = [
        ("cup", (173, 17, 412, 305)),
        ("spoon", (320, 65, 425, 325)),
        ("saucer", (76, 71, 480, 387)),
    ]
    labelimg_voc(tmp_path / "coffee.xml", "coffee.jpg", (600, 400), objects)
    s = DEFAULTS.with_(points_per_side=2)
    [ev], messages = evaluate_folder(
        d, tmp_path / "coffee.xml", "voc", s, model=structured_model
    )
    assert messages == [] and [r.label for r in ev.results] == [
        "cup",
        "spoon",
        "saucer",
    ]
    assert ev.results[0].gt == (173.0, 17.0, 412.0, 305.0)
    assert read_image(d / "coffee.jpg").shape == (400, 600, 3)
    assert 0.0 <= ev.summary.median_best_iou <= 1.0


def test_ground_truth_of_images_in_subfolders(tmp_path):
    from PIL import Image

    from napari_samboxes.evaluate import read_ground_truth

    (tmp_path / "set" / "train").mkdir(parents=True)
    Image.new("RGB", (40, 30)).save(tmp_path / "set" / "train" / "x.png")
    Image.new("RGB", (40, 30)).save(tmp_path / "set" / "y.png")
    labelimg_voc(tmp_path / "x.xml", "x.png", (40, 30), [("cup", (2, 3, 20, 25))])
    gt, messages = read_ground_truth(tmp_path / "x.xml", "voc", tmp_path / "set")
    assert list(gt) == ["train/x.png"] and messages == []
    np.testing.assert_array_equal(gt["train/x.png"].xyxy, [[2, 3, 20, 25]])
    assert gt["train/x.png"].labels == ("cup",)
    assert sorted(p.name for p in (tmp_path / "set").iterdir()) == ["train", "y.png"]


def test_evaluate_argument_errors_are_one_line_before_the_model(tmp_path, capsys):
    d = tmp_path / "images"
    d.mkdir()
    xml = tmp_path / "a.xml"
    xml.write_text("<annotation>")
    base = ["evaluate", str(d), "--format", "voc"]
    cases = [
        ([*base, "--gt", str(tmp_path / "none")], "no such file"),
        ([*base, "--gt", str(xml), "--compare", "points=4"], "SETTING=V1,V2"),
        ([*base, "--gt", str(xml), "--compare", "points_per_side=a"], "not numbers"),
        ([*base, "--gt", str(xml), "--compare", "points_per_side=0"], "points per"),
        ([*base, "--gt", str(xml), "--points-per-side", "0"], "points per side"),
        (["evaluate", str(xml), "--gt", str(xml), "--format", "voc"], "not a folder"),
        ([*base, "--gt", str(xml), "--checkpoint", str(d / "x.pt")], "checkpoint"),
        ([*base, "--gt", str(xml), "--out", str(xml)], "not a folder"),
    ]
    for args, words in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, (args, err)
    with pytest.raises(SystemExit) as e:
        main([*base[:2], "--gt", str(xml), "--format", "pdf"])
    assert e.value.code == 2
    capsys.readouterr()
    # failures while running: exit 1, one line (no model was needed yet)
    assert main([*base, "--gt", str(xml)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a.xml" in err
    other = labelimg_voc(xml, "other.png", (8, 8), [("cup", (1, 1, 4, 4))])
    assert main([*base, "--gt", str(other)]) == 1
    assert "matched" in capsys.readouterr().err


def test_the_island_of_a_fragmented_mask_is_one_step_below_its_box():
    from napari_samboxes.candidates import RawMasks

    # three nested candidates around (50, 50); the largest one's mask is a
    # blob (x 35..60, y 36..64) with a fragment at each of two corners
    nested = np.array([[45, 45, 55, 55], [40, 40, 60, 60], [30, 30, 70, 70]])
    areas = (nested[:, 2] - nested[:, 0] + 1) * (nested[:, 3] - nested[:, 1] + 1)
    raw = RawMasks(nested, areas, np.full(3, 0.95, np.float32),
                   np.full(3, 0.97, np.float32), np.full((3, 2), 50.0))  # fmt: skip
    blob = np.zeros((100, 130), bool)
    blob[36:65, 35:61] = True
    whole = blob.copy()
    whole[30:32, 30:33] = whole[69:71, 68:71] = True
    computed = []

    def masks(boxes, rows):  # the masks SAM gives for these boxes
        computed.append(rows)
        for i in rows:
            box = tuple(int(v) for v in boxes.xyxy[i])
            m = whole.copy() if box == (30, 30, 70, 70) else np.zeros_like(blob)
            if box != (30, 30, 70, 70):
                m[box[1] : box[3] + 1, box[0] : box[2] + 1] = True
            boxes = boxes.with_cells(i, {MASK_COLUMN: encode_cell(m)})
        return boxes

    s = DEFAULTS.with_(box_nms_thresh=1.0)
    part = [35.0, 36.0, 60.0, 64.0]
    [r] = annotate_image(gt_of([part]), raw, s, masks=masks)
    # pick [40..60] (2), ] to [30..70] (3), [ to its island (4)
    assert [a for a, _, _ in r.states] == [2, 3, 4]
    assert r.best_iou == 1.0 and r.actions_to(0.9) == 4 and r.path == "step"
    assert computed  # masks were asked for after the pick and the steps
    [r] = annotate_image(gt_of([part]), raw, s)  # no masks: no island
    assert r.actions_to(0.9) is None
