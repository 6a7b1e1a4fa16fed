"""Masks with the boxes: picked and prompted boxes keep their SAM mask.

The real MobileSAM vit_t (a structured test checkpoint) picks boxes in a
session; their masks are computed from the stored prompts with one
decoder call and exported as COCO RLE and YOLO-seg polygons. The reference
is ``mobile_sam``'s own ``SamAutomaticMaskGenerator`` on the same model.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from napari_samboxes import engine
from napari_samboxes.boxes import Boxes
from napari_samboxes.dataset import Dataset
from napari_samboxes.export import export_dataset
from napari_samboxes.formats.boxtable import read_box_table
from napari_samboxes.formats.rle import cell_box, decode_cell
from napari_samboxes.masks import fill_folder, fill_masks, needs_mask
from napari_samboxes.pipeline import Encoded, drain, raw_results
from napari_samboxes.session import Session
from napari_samboxes.settings import DEFAULTS

SETTINGS = DEFAULTS.with_(points_per_side=4)


@pytest.fixture(scope="module")
def run(structured_model, synthetic):
    """Candidates, embedding and the reference generator's masks."""
    from mobile_sam import SamAutomaticMaskGenerator

    events = []
    raw = drain(raw_results(synthetic, SETTINGS, model=structured_model), events.append)
    emb = next(e.embedding for e in events if isinstance(e, Encoded))
    gen = SamAutomaticMaskGenerator(structured_model.sam, points_per_side=4)
    with torch.inference_mode():
        reference = gen.generate(synthetic)
    return raw, emb, reference


def reference_mask(reference, box, point):
    """The reference generator's mask with this box, from this grid point."""
    x0, y0, x1, y1 = box
    for r in reference:
        if r["bbox"] == [x0, y0, x1 - x0, y1 - y0] and np.allclose(
            r["point_coords"][0], point
        ):
            return r["segmentation"]
    raise AssertionError(f"no reference mask for {box} at {point}")


def picked_session(raw, emb):
    s = Session(SETTINGS)
    s.begin_run()
    s.commit(raw)
    s.embedding = emb
    c = s.candidates
    for i in (0, len(c) // 2, len(c) - 1):  # small, middle, large
        x0, y0, x1, y1 = c.boxes[i]
        assert s.pick(np.array([[x0, y0], [x1, y1]]), f"obj{i}").change is not None
    s.pick(np.array([[c.boxes[1][0], c.boxes[1][1]]] * 2), "stepped")
    assert s.step(+1).changed
    return s


def test_picked_boxes_export_their_candidate_masks_to_coco(
    structured_model, synthetic, run, tmp_path
):
    from pycocotools import mask as mask_utils

    raw, emb, reference = run
    s = picked_session(raw, emb)
    boxes = s.boxes.added([2, 3, 40, 50], "hand", source="hand")  # no mask
    assert needs_mask(boxes) == [0, 1, 2, 3]
    boxes = fill_masks(boxes, structured_model, emb)
    assert needs_mask(boxes) == [] and boxes.cell("mask", 4) == ""
    d = tmp_path / "data"
    d.mkdir()
    Image.fromarray(synthetic).save(d / "synthetic.png")
    Dataset(d).save_boxes("synthetic.png", boxes.to_table())
    export_dataset(d, "coco", tmp_path / "out")
    doc = json.loads((tmp_path / "out" / "annotations.json").read_text())
    anns = doc["annotations"]
    assert len(anns) == 5
    for i, a in enumerate(anns[:4]):
        rle = {"size": a["segmentation"]["size"]}
        rle["counts"] = a["segmentation"]["counts"].encode()
        m = mask_utils.decode(rle).astype(bool)
        box = [int(v) for v in boxes.xyxy[i]]
        point = [float(v) for v in boxes.cell("prompt", i).split()[1:]]
        assert np.array_equal(m, reference_mask(reference, box, point)), i
        ys, xs = np.nonzero(m)
        assert [xs.min(), ys.min(), xs.max(), ys.max()] == box
        x, y, w, h = a["bbox"]
        assert mask_utils.toBbox(rle).tolist() == [x, y, w, h]
        assert a["area"] == m.sum() == mask_utils.area(rle)
    assert anns[4]["segmentation"] == [] and anns[4]["area"] == 39 * 48


def test_a_prompted_box_keeps_its_mask_and_a_moved_box_loses_it(structured_model, run):
    raw, emb, _ = run
    s = Session(SETTINGS)
    s.begin_run()
    s.commit(raw)
    # the structured checkpoint answers a box prompt with a point inside it
    prompt, point = np.array([[60.0, 20.0, 130.0, 90.0]]), [[[95.0, 55.5]]]
    got, ious = engine.prompt_boxes(structured_model, emb, prompt, points=point)
    assert got[0].any()
    s.add_prompted(got[0], ious[0], "cup", prompt_box=prompt[0], prompt_points=point[0])
    assert s.boxes.cell("prompt", 0) == "box 60 20 130 90 95 55.5"
    boxes = fill_masks(s.boxes, structured_model, emb)
    x0, y0, crop = decode_cell(boxes.cell("mask", 0))
    assert cell_box(boxes.cell("mask", 0)) == tuple(int(v) for v in got[0])
    assert crop.any(axis=0).all() and crop.any(axis=1).all()
    moved = boxes.replaced(0, got[0] + 1, 0.5, "hand")
    assert moved.cell("mask", 0) == "" and moved.cell("prompt", 0) == ""
    # a layer edit reads boxes back without columns: unchanged boxes keep them
    edited = Boxes(boxes.xyxy, ("mug",), boxes.scores, ("prompt",))
    assert edited.carrying(boxes).cell("mask", 0) == boxes.cell("mask", 0)


def test_masks_command_fills_a_folder_from_the_cache(
    structured_model, synthetic, run, tmp_path
):
    from napari_samboxes.cache import CandidateCache

    raw, emb, _ = run
    s = picked_session(raw, emb)
    d = tmp_path / "data"
    d.mkdir()
    Image.fromarray(synthetic).save(d / "synthetic.png")
    Dataset(d).save_boxes("synthetic.png", s.boxes.to_table())
    cache = CandidateCache(tmp_path / "cache")
    report = fill_folder(d, structured_model, cache=cache, settings=SETTINGS)
    assert (report.images, report.masks, report.unmatched) == (1, 4, 0)
    table = read_box_table(d / "annotations" / "synthetic.csv")
    want = fill_masks(s.boxes, structured_model, emb)
    assert table.extra["mask"] == list(want.extra["mask"])
    assert (
        len(list((tmp_path / "cache" / "embeddings").glob("*.npz"))) == 1
    )  # one encode
    again = fill_folder(d, structured_model, cache=cache, settings=SETTINGS)
    assert again.images == 0  # nothing left to do
