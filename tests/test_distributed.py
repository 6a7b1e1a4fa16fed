"""propose over folders: collision-free output names, and Dask workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_samboxes.batch import output_keys, plan_jobs
from napari_samboxes.cli import main
from napari_samboxes.dataset import file_keys


def test_output_names_never_collide(tmp_path):
    paths = [
        tmp_path / "d1" / "a.png",
        tmp_path / "d1" / "a.jpg",
        tmp_path / "d1" / "b.png",
        tmp_path / "d2" / "a.png",
        tmp_path / "d2" / "sub" / "c.tif",
        tmp_path / "d3" / "sub" / "c.tif",
        tmp_path / "d1" / "B.tif",
    ]
    keys = output_keys(paths)
    assert [keys[p] for p in paths] == [
        "d1__a.png",
        "a.jpg",
        "b.png",
        "d2__a.png",
        "d2__sub__c.tif",
        "d3__sub__c.tif",
        "B.tif",
    ]
    assert len({k.casefold() for k in keys.values()}) == len(paths)
    # one folder: the same names as folder mode's annotations/<key>.csv
    one = [tmp_path / n for n in ("x.png", "x.jpg", "y.png", "Y.bmp", "z.gif")]
    assert {p.name: k for p, k in output_keys(one).items()} == file_keys(
        p.name for p in one
    )


def test_plan_walks_folders_once_and_keeps_inputs_safe(tmp_path):
    from PIL import Image

    d = tmp_path / "imgs"
    d.mkdir()
    for n in ("b.png", "a10.png", "a2.png", ".hidden.png", "notes.txt"):
        (d / n).write_bytes(b"")
    Image.new("RGB", (8, 8)).save(d / "a2.png")
    (tmp_path / "empty").mkdir()
    plan = plan_jobs(
        [str(d), str(d / "b.png"), str(tmp_path / "empty")], tmp_path / "out"
    )
    assert [p.name for p, _ in plan.jobs] == ["a2.png", "a10.png", "b.png"]
    assert [t.name for _, t in plan.jobs] == ["a2.csv", "a10.csv", "b.csv"]
    assert len(plan.failed) == 1 and "empty: no images" in plan.failed[0]


def _images(tmp_path: Path, photo: np.ndarray, synthetic: np.ndarray) -> list[str]:
    """3 tiny images (64-128 px), two with the same name in two folders,
    and one broken file."""
    from PIL import Image

    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    Image.fromarray(photo[:96, :128]).save(tmp_path / "d1" / "x.png")
    Image.fromarray(synthetic[:64, :96]).save(tmp_path / "d1" / "y.png")
    Image.fromarray(photo[64:192:2, 0:256:2]).save(tmp_path / "d2" / "x.png")
    (tmp_path / "d2" / "broken.png").write_bytes(b"not an image")
    return [str(tmp_path / "d1"), str(tmp_path / "d2")]


def test_workers_give_the_same_box_tables_as_in_process(
    tmp_path, photo, synthetic, structured_ckpt, capsys
):
    pytest.importorskip("dask.distributed")
    inputs = _images(tmp_path, photo, synthetic)
    common = ["--points-per-side", "2", "--checkpoint", str(structured_ckpt)]
    common += ["--device", "cpu"]
    here, there = tmp_path / "here", tmp_path / "there"
    rc = main(
        [
            "propose",
            *inputs,
            "--out",
            str(here),
            "--cache",
            str(tmp_path / "c1"),
            *common,
        ]
    )
    err_here = capsys.readouterr().err
    rc2 = main(
        ["propose", *inputs, "--out", str(there), "--cache", str(tmp_path / "c2")]
        + ["--workers", "2", *common]
    )
    err_there = capsys.readouterr().err
    for code, err in ((rc, err_here), (rc2, err_there)):
        assert code == 1 and "broken.png: cannot read image" in err
        assert err.strip().splitlines()[-1].endswith("1 of 4 images failed")
    names = sorted(p.name for p in here.glob("*.csv"))
    assert names == ["d1__x.png.csv", "d2__x.png.csv", "y.csv"]
    assert sorted(p.name for p in there.glob("*.csv")) == names
    for n in names:
        assert (there / n).read_text() == (here / n).read_text()
        assert len((here / n).read_text().splitlines()) > 1  # has boxes
    # the workers wrote the cache too: a rerun in-process reads it
    cached = list((tmp_path / "c2").rglob("*.npz"))
    embeddings = [
        p for p in cached if p.parent.name == "embeddings" or ".emb." in p.name
    ]
    assert len(cached) == 6 and len(embeddings) == 3  # candidates + embeddings


def test_scheduler_that_cannot_be_reached_is_one_line(
    tmp_path, synthetic, structured_ckpt, capsys
):
    pytest.importorskip("dask.distributed")
    from PIL import Image

    Image.fromarray(synthetic).save(tmp_path / "s.png")
    rc = main(
        ["propose", str(tmp_path / "s.png"), "--out", str(tmp_path / "o")]
        + ["--checkpoint", str(structured_ckpt), "--points-per-side", "1"]
        + ["--scheduler", "tcp://127.0.0.1:9", "--device", "cpu"]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "cannot reach the scheduler at tcp://127.0.0.1:9" in err
    assert "Traceback" not in err
