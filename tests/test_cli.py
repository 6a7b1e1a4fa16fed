"""The napari-samboxes command, run as a user would (real files)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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
    assert list((tmp_path / "cache").rglob("*.npz"))  # cached for the widget


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
    assert rc == 2  # an argument error, found before the model loads
    assert "no.pt: no such file" in one_line(capsys.readouterr().err)


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
    (entry,) = [p for p in (tmp_path / "c").rglob("*.npz") if not is_embedding(p)]
    entry.write_bytes(b"garbage, not an npz")
    (tmp_path / "o" / "p.csv").unlink()
    assert main(args) == 0
    assert (tmp_path / "o" / "p.csv").read_text() == first
    with np.load(entry) as z:  # overwritten with a valid entry
        assert len(z["areas"]) == 12


def is_embedding(p: Path) -> bool:
    """Whether a cache file holds an embedding (``*.emb.npz`` or
    ``embeddings/*.npz``)."""
    return ".emb." in p.name or p.parent.name == "embeddings"


def test_outputs_never_overwrite_inputs(tmp_path, structured_ckpt, capsys):
    inp = tmp_path / "scan.csv"  # an input that is where its output would go
    inp.write_text("keep me")
    rc = main(
        [
            "propose",
            str(inp),
            "--out",
            str(tmp_path),
            "--checkpoint",
            str(structured_ckpt),
            "--device",
            "cpu",
            "--points-per-side",
            "1",
        ]
    )
    assert rc == 1 and inp.read_text() == "keep me"
    assert "would overwrite" in capsys.readouterr().err


# --- issue 11: every failure is one line, and the batch goes on -------------


def run_cli(*args, env=None):
    """The command in a fresh process, importing this checkout's package."""
    import os

    import napari_samboxes

    src = str(Path(napari_samboxes.__file__).resolve().parents[1])
    e = {**os.environ, "PYTHONPATH": src, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "napari_samboxes.cli", *args],
        capture_output=True,
        text=True,
        env=e,
    )


def one_line(err):
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "option, value, match",
    [
        ("--points-per-side", "0", "points per side must be an integer from 1"),
        ("--points-per-side", "-1", "points per side"),
        ("--points-per-side", "1000000", "points per side"),  # was 7.28 TiB
        ("--pred-iou-thresh", "nan", "pred iou thresh must be a number from 0 to 1"),
        ("--stability-score-thresh", "1.5", "stability score thresh"),
        ("--box-nms-thresh", "-0.1", "box nms thresh"),
    ],
)
def test_bad_settings_are_refused_before_the_model_loads(
    tmp_path, capsys, option, value, match
):
    # the checkpoint does not exist: a check after loading would say so
    argv = ["propose", "a.png", "--out", str(tmp_path), option, value]
    rc = main([*argv, "--checkpoint", str(tmp_path / "none.pt")])
    err = one_line(capsys.readouterr().err)
    assert rc == 2 and match in err and "none.pt" not in err


def test_out_that_is_a_file_and_unavailable_device(tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert main(["propose", "a.png", "--out", str(f)]) == 2
    assert "--out" in one_line(capsys.readouterr().err)
    rc = main(["propose", "a.png", "--out", str(tmp_path / "o"), "--device", "mps"])
    err = one_line(capsys.readouterr().err)
    assert rc == 2 and "'mps' asked for, but MPS" in err


@pytest.mark.parametrize("content", [b"hello", b"\x00" * 64])
def test_bad_checkpoint_is_one_line_in_a_real_process(tmp_path, content):
    ckpt = tmp_path / "hello.pt"
    ckpt.write_bytes(content)
    r = run_cli("propose", "a.png", "--out", str(tmp_path), "--checkpoint", str(ckpt))
    assert r.returncode == 1 and "hello.pt could not be read" in one_line(r.stderr)


def test_view_missing_image_is_one_line_before_napari(tmp_path):
    code = (
        "import sys; from napari_samboxes.cli import main; "
        "rc = main(['view', 'missing.png']); "
        "print('napari' in sys.modules); sys.exit(rc)"
    )
    import napari_samboxes

    src = str(Path(napari_samboxes.__file__).resolve().parents[1])
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    assert r.returncode == 2 and r.stdout.strip() == "False"
    assert "missing.png: no such file" in one_line(r.stderr)


def test_one_failed_image_or_write_does_not_stop_the_batch(
    tmp_path, photo, structured_ckpt, capsys, monkeypatch
):
    import os

    from PIL import Image

    Image.fromarray(photo).save(tmp_path / "a.gif")  # single frame, palette
    Image.fromarray(photo).save(tmp_path / "b.png")
    Image.fromarray(photo).save(tmp_path / "c.png")
    os.mkfifo(tmp_path / "pipe.png")  # hung the CLI
    out = tmp_path / "out"
    (out / "a.csv").mkdir(parents=True)  # an output path that is a folder
    real_fsync = os.fsync

    def full_disk_for_b(fd):  # the disk fills up while b.csv is written
        if ".b.csv." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk_for_b)
    imgs = [tmp_path / n for n in ("a.gif", "pipe.png", "b.png", "c.png")]
    rc = main(
        ["propose", *map(str, imgs), "--out", str(out), "--points-per-side", "2"]
        + ["--checkpoint", str(structured_ckpt), "--device", "cpu"]
    )
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and "Traceback" not in "\n".join(lines)
    assert any("a.gif: cannot write" in ln and "is a folder" in ln for ln in lines)
    assert any("pipe.png: cannot read image: not a regular file" in ln for ln in lines)
    assert any("b.png: cannot write" in ln and "No space" in ln for ln in lines)
    assert lines[-1].endswith("3 of 4 images failed")
    assert "warning: " in lines[0] and "not the official" in lines[0]
    assert not (out / "b.csv").exists()
    t = read_box_table(out / "c.csv")  # the batch went on after the failures
    assert len(t) > 0 and t.sources == ["candidate"] * len(t)


# --- issue 8 item 6: export and import ---------------------------------------


@pytest.fixture
def labelled_folder(tmp_path, photo, synthetic):
    """Two real images (256x192 and 224x160) with box tables, as saved by
    folder mode."""
    from PIL import Image

    from napari_samboxes.dataset import Dataset
    from napari_samboxes.formats.boxtable import BoxTable

    d = tmp_path / "ds"
    d.mkdir()
    Image.fromarray(photo).save(d / "astro.png")
    Image.fromarray(synthetic).save(d / "discs.png")
    ds = Dataset(d)
    ds.save_boxes(
        "astro.png",
        BoxTable(
            labels=["face", "suit"],
            boxes=np.array([[10.0, 20, 59, 79], [0, 100, 255, 191]]),
            scores=np.array([0.9, np.nan]),
            slices=np.zeros((2, 0)),
            sources=["candidate", "hand"],
        ),
    )
    ds.save_boxes(
        "discs.png",
        BoxTable(
            labels=["disc"],
            boxes=np.array([[25.0, 15, 74, 64]]),
            scores=np.array([0.95]),
            slices=np.zeros((1, 0)),
            sources=["prompt"],
        ),
    )
    return d


def test_export_coco_yolo_voc_files(labelled_folder, tmp_path, capsys):
    import json
    import xml.etree.ElementTree as ET

    assert (
        main(
            [
                "export",
                str(labelled_folder),
                "--format",
                "coco",
                "--out",
                str(tmp_path / "c"),
            ]
        )
        == 0
    )
    assert "2 images, 3 boxes, 0 skipped" in capsys.readouterr().out
    coco = json.loads((tmp_path / "c" / "annotations.json").read_text())
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    files = {i["id"]: i["file_name"] for i in coco["images"]}
    got = sorted(
        (files[a["image_id"]], cats[a["category_id"]], a["bbox"])
        for a in coco["annotations"]
    )
    assert got == [
        ("astro.png", "face", [10, 20, 50, 60]),  # x, y, w, h of inclusive box
        ("astro.png", "suit", [0, 100, 256, 92]),
        ("discs.png", "disc", [25, 15, 50, 50]),
    ]

    assert (
        main(
            [
                "export",
                str(labelled_folder),
                "--format",
                "yolo",
                "--out",
                str(tmp_path / "y"),
            ]
        )
        == 0
    )
    import yaml

    names = yaml.safe_load((tmp_path / "y" / "data.yaml").read_text())["names"]
    line = (tmp_path / "y" / "labels" / "train" / "discs.txt").read_text().split()
    assert names[int(line[0])] == "disc"
    np.testing.assert_allclose(
        [float(v) for v in line[1:]], [50 / 224, 40 / 160, 50 / 224, 50 / 160]
    )

    assert (
        main(
            [
                "export",
                str(labelled_folder),
                "--format",
                "voc",
                "--out",
                str(tmp_path / "v"),
            ]
        )
        == 0
    )
    root = ET.parse(tmp_path / "v" / "astro.xml").getroot()
    assert (
        root.findtext("size/width") == "256" and root.findtext("size/height") == "192"
    )
    objs = [
        (
            o.findtext("name"),
            [int(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")],
        )
        for o in root.iter("object")
    ]
    assert objs == [("face", [11, 21, 60, 80]), ("suit", [1, 101, 256, 192])]


@pytest.mark.parametrize("fmt", ["coco", "yolo", "voc"])
def test_import_is_the_inverse_of_export(labelled_folder, tmp_path, capsys, fmt):
    import shutil

    from napari_samboxes.dataset import Dataset

    out = tmp_path / fmt
    assert (
        main(["export", str(labelled_folder), "--format", fmt, "--out", str(out)]) == 0
    )
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for img in labelled_folder.glob("*.png"):
        shutil.copy(img, fresh / img.name)
    src = out / "annotations.json" if fmt == "coco" else out
    capsys.readouterr()
    assert main(["import", str(src), "--format", fmt, str(fresh)]) == 0
    assert "2 images, 3 boxes" in capsys.readouterr().out
    a, b = Dataset(labelled_folder), Dataset(fresh)
    for name in ("astro.png", "discs.png"):
        want, got = a.load_boxes(name), b.load_boxes(name)
        assert got.labels == want.labels
        np.testing.assert_array_equal(got.boxes, want.boxes)  # to the pixel
    # existing boxes are kept unless --overwrite
    assert main(["import", str(src), "--format", fmt, str(fresh)]) == 0
    assert "0 images" in capsys.readouterr().out
    assert main(["import", str(src), "--format", fmt, str(fresh), "--overwrite"]) == 0
    assert "2 images" in capsys.readouterr().out


def test_export_import_errors_are_one_line(labelled_folder, tmp_path, capsys):
    assert (
        main(
            [
                "export",
                str(tmp_path / "nope"),
                "--format",
                "coco",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2  # a folder argument that is not there
    )
    assert "nope" in one_line(capsys.readouterr().err)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["import", str(bad), "--format", "coco", str(labelled_folder)]) == 1
    assert "bad.json" in one_line(capsys.readouterr().err)
    assert (
        main(
            ["import", str(tmp_path / "none"), "--format", "voc", str(labelled_folder)]
        )
        == 2
    )
    assert "none" in one_line(capsys.readouterr().err)
    with pytest.raises(SystemExit) as e:
        main(["export", str(labelled_folder), "--format", "csv", "--out", "x"])
    assert e.value.code == 2


def test_tighten_folder_snaps_a_shifted_box_onto_its_candidate(
    tmp_path, photo, structured_ckpt, structured_model, capsys
):
    from PIL import Image

    from napari_samboxes import propose_boxes
    from napari_samboxes.dataset import Dataset
    from napari_samboxes.formats.boxtable import BoxTable

    d = tmp_path / "set"
    d.mkdir()
    Image.fromarray(photo).save(d / "a.png")
    c = propose_boxes(photo, structured_model, points_per_side=4)
    target = c.boxes[len(c) // 2]
    shifted = target + np.array([2, -1, 1, 2])
    ds = Dataset(d)
    ds.save_boxes(
        "a.png",
        BoxTable(
            labels=["cup"],
            boxes=shifted[None],
            scores=np.array([np.nan]),
            sources=["hand"],
        ),
    )
    args = ["tighten", str(d), "--points-per-side", "4"]
    args += ["--checkpoint", str(structured_ckpt), "--cache", str(tmp_path / "c")]
    assert main(args) == 0
    back = Dataset(d).load_boxes("a.png")
    np.testing.assert_array_equal(back.boxes[0], target)
    assert back.labels == ["cup"] and "1 box(es) moved" in capsys.readouterr().out


def test_export_flags_and_their_errors(labelled_folder, tmp_path, capsys):
    out = tmp_path / "voc"
    args = ["export", str(labelled_folder), "--format", "voc", "--out", str(out)]
    assert main([*args, "--layout", "devkit", "--split", "0.5,0.5", "--seed", "2"]) == 0
    lists = sorted(p.name for p in (out / "ImageSets" / "Main").iterdir())
    assert lists == ["train.txt", "val.txt"]
    assert all((out / "JPEGImages").iterdir())
    capsys.readouterr()
    for bad, says in (
        (["--split", "0.5,0.6"], "add up to 1"),
        (["--layout", "subsets"], "--layout subsets is not one of voc's"),
        (["--split", "0.8,0.2"], "--split needs subsets: use --layout devkit"),
    ):
        o = tmp_path / "bad"
        rc = main(
            ["export", str(labelled_folder), "--format", "voc", "--out", str(o), *bad]
        )
        assert rc == 2 and says in one_line(capsys.readouterr().err)
        assert not o.exists()


def test_masks_command_on_a_folder_without_prompts(
    labelled_folder, structured_ckpt, capsys
):
    rc = main(
        ["masks", str(labelled_folder), "--checkpoint", str(structured_ckpt),
         "--device", "cpu"]
    )  # fmt: skip
    assert rc == 0 and "0 masks stored in 0 images" in capsys.readouterr().out


# --- issue 18: argument errors exit 2 in every command, before loading ------


@pytest.fixture
def unreadable_ckpt(tmp_path):
    """A checkpoint file that cannot be loaded: a command that loaded it
    before checking its arguments would say "could not be read"."""
    ckpt = tmp_path / "hello.pt"
    ckpt.write_bytes(b"hello")
    return ckpt


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["view", "{tmp}/missing"], "missing: no such file or folder"),
        (["view", ""], "empty"),
        (["view", "{tmp}/pics", "--no-recursive"], "no images in this folder"),
        (["view", "{tmp}/pics", "--checkpoint", "{tmp}/no.pt"], "no such checkpoint"),
        (["propose", "a.png", "--out", "{tmp}/o", "--cache", "{tmp}/f.txt"],
         "--cache {tmp}/f.txt is a file"),
        (["propose", "a.png", "--out", ""], "--out is empty"),
        (["propose", "a.png", "--out", "{tmp}/o", "--checkpoint", "{tmp}"],
         "a folder"),
        (["propose", "a.png", "--out", "{tmp}/o", "--device", "tpu"],
         "no device name"),
        (["export", "{tmp}/pics", "--format", "coco", "--out", "{tmp}/f.txt"],
         "--out {tmp}/f.txt is a file"),
        (["export", "{tmp}/f.txt", "--format", "yolo", "--out", "{tmp}/o"],
         "is not a folder"),
        (["import", "{tmp}/none.json", "--format", "coco", "{tmp}/pics"],
         "none.json: no such file or folder"),
        (["import", "{tmp}/f.txt", "--format", "coco", "{tmp}/nope"],
         "nope: no such folder"),
        (["masks", "{tmp}/pics", "--checkpoint", "{tmp}/no.pt"], "no.pt: no such file"),
        (["masks", "{tmp}/pics", "--cache", "{tmp}/f.txt", "--checkpoint", "{ckpt}"],
         "is a file"),
        (["masks", "{tmp}/pics", "--device", "cuda:7", "--checkpoint", "{ckpt}"],
         "'cuda:7' asked for"),
        (["masks", "{tmp}/nope", "--checkpoint", "{ckpt}"], "no such folder"),
        (["fetch-weights", "--dest", "{tmp}/f.txt"], "is a file, not a folder"),
        (["fetch-weights", "--dest", "{tmp}/f.txt/sub/w.pt"], "is a file, not a folder"),
        (["fetch-weights", "--dest", ""], "--dest is empty"),
    ],
)  # fmt: skip
def test_argument_errors_exit_2_before_anything_loads(
    tmp_path, unreadable_ckpt, capsys, argv, says
):
    from PIL import Image

    (tmp_path / "pics" / "sub").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "pics" / "sub" / "a.png")
    (tmp_path / "f.txt").write_text("a file")
    fill = {"{tmp}": str(tmp_path), "{ckpt}": str(unreadable_ckpt)}
    for k, v in fill.items():
        argv = [a.replace(k, v) for a in argv]
        says = says.replace(k, v)
    before = sorted(tmp_path.rglob("*"))
    rc = main(argv)
    err = one_line(capsys.readouterr().err)
    assert rc == 2 and says in err and "could not be read" not in err, err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_export_and_import_walk_subfolders_unless_no_recursive(tmp_path, photo, capsys):
    import json
    import shutil

    from PIL import Image

    from napari_samboxes.dataset import Dataset
    from napari_samboxes.formats.boxtable import BoxTable

    d = tmp_path / "ds"
    (d / "train").mkdir(parents=True)
    Image.fromarray(photo).save(d / "train" / "a.png")
    Image.fromarray(photo[::2, ::2]).save(d / "b.png")
    ds = Dataset(d)
    for name in ("train/a.png", "b.png"):
        ds.save_boxes(
            name,
            BoxTable(labels=["cat"], boxes=[[1.0, 2, 30, 40]], sources=["hand"]),
        )
    assert (d / "annotations" / "train" / "a.csv").is_file()

    def exported(*flag: str) -> list[str]:
        out = tmp_path / f"coco{len(flag)}"
        assert (
            main(["export", str(d), "--format", "coco", "--out", str(out), *flag]) == 0
        )
        doc = json.loads((out / "annotations.json").read_text())
        return sorted(i["file_name"] for i in doc["images"])

    assert exported() == ["b.png", "train/a.png"]
    assert exported("--no-recursive") == ["b.png"]

    fresh = tmp_path / "fresh"
    shutil.copytree(d, fresh, ignore=shutil.ignore_patterns("annotations"))
    src = tmp_path / "coco0" / "annotations.json"
    capsys.readouterr()
    assert (
        main(["import", str(src), "--format", "coco", str(fresh), "--no-recursive"])
        == 0
    )
    tables = sorted(p.relative_to(fresh).as_posix() for p in fresh.rglob("*.csv"))
    assert tables == ["annotations/b.csv"]
    assert main(["import", str(src), "--format", "coco", str(fresh)]) == 0
    tables = sorted(p.relative_to(fresh).as_posix() for p in fresh.rglob("*.csv"))
    assert tables == ["annotations/b.csv", "annotations/train/a.csv"]
