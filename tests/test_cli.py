"""The napari-samboxes command, run as a user would (real files)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from napari_samboxes.cli import main
from napari_samboxes.formats.boxtable import read_box_table


def exe() -> str:
    return str(Path(sys.executable).with_name("napari-samboxes"))


def test_help_and_bad_arguments():
    r = subprocess.run([exe(), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "propose" in r.stdout
    r = subprocess.run([exe(), "propose", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--points-per-side" in r.stdout
    r = subprocess.run([exe(), "propose", "x.png"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "--out" in r.stderr


def test_propose_writes_box_tables_and_reports_bad_files(
    tmp_path, photo, structured_ckpt, structured_model, capsys
):
    import imageio.v3 as iio

    from napari_samboxes import propose_boxes

    good = tmp_path / "photo.png"
    iio.imwrite(good, photo)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    out = tmp_path / "out"
    rc = main(
        [
            "propose",
            str(good),
            str(bad),
            str(tmp_path / "missing.png"),
            "--out",
            str(out),
            "--points-per-side",
            "2",
            "--checkpoint",
            str(structured_ckpt),
            "--device",
            "cpu",
            "--cache",
            str(tmp_path / "cache"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1
    assert (
        "broken.png" in err and "missing.png" in err and "2 of 3 images failed" in err
    )
    t = read_box_table(out / "photo.csv")
    want = propose_boxes(photo, structured_model, points_per_side=2)
    assert len(t) == len(want) > 0
    np.testing.assert_array_equal(t.boxes, want.boxes)
    assert list((tmp_path / "cache").glob("*.npz"))  # cached for the widget


def test_missing_checkpoint_is_one_line_error(tmp_path, capsys):
    rc = main(
        [
            "propose",
            "a.png",
            "--out",
            str(tmp_path),
            "--checkpoint",
            str(tmp_path / "no.pt"),
        ]
    )
    assert rc == 1
    assert "does not exist" in capsys.readouterr().err


def test_corrupt_cache_entry_is_recomputed_and_overwritten(
    tmp_path, photo, structured_ckpt, capsys
):
    import imageio.v3 as iio

    img = tmp_path / "p.png"
    iio.imwrite(img, photo)
    args = [
        "propose",
        str(img),
        "--out",
        str(tmp_path / "o"),
        "--points-per-side",
        "2",
        "--checkpoint",
        str(structured_ckpt),
        "--device",
        "cpu",
        "--cache",
        str(tmp_path / "c"),
    ]
    assert main(args) == 0
    first = (tmp_path / "o" / "p.csv").read_text()
    (entry,) = (tmp_path / "c").glob("*.npz")
    entry.write_bytes(b"garbage, not an npz")
    (tmp_path / "o" / "p.csv").unlink()
    assert main(args) == 0
    assert (tmp_path / "o" / "p.csv").read_text() == first
    with np.load(entry) as z:  # overwritten with a valid entry
        assert len(z["areas"]) == 12


def test_outputs_never_overwrite_inputs(tmp_path, structured_ckpt, capsys):
    inp = tmp_path / "scan.csv"  # an input that is where its output would go
    inp.write_text("keep me")
    rc = main(["propose", str(inp), "--out", str(tmp_path), "--checkpoint", str(structured_ckpt),
               "--device", "cpu", "--points-per-side", "1"])
    assert rc == 1 and inp.read_text() == "keep me"
    assert "would overwrite" in capsys.readouterr().err
