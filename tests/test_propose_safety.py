"""``propose`` never replaces what it did not write, and resumes after a
kill (issue 18 items 3 and 5), run as a user would on real files."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_samboxes.cli import main
from napari_samboxes.formats.boxtable import BoxTable, read_box_table, write_box_table

HEADER = "label,x_min,y_min,x_max,y_max,score,source\r\n"


def image(path: Path, seed: int, size: tuple[int, int] = (48, 64)) -> Path:
    """A small real image with a few bright rectangles."""
    rng = np.random.default_rng(seed)
    img = np.full((*size, 3), 40, np.uint8)
    for _ in range(3):
        y, x = rng.integers(0, size[0] - 12), rng.integers(0, size[1] - 12)
        img[y : y + 10, x : x + 12] = rng.integers(120, 255, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


def state(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and modification time (ns), by path in ``folder``
    (not propose's logs, nor a temporary file a kill left)."""
    return {
        p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".propose" not in p.parts and not p.name.endswith(".tmp")
    }


def computed(out: str) -> tuple[int, int]:
    """``(to compute, of N)`` from propose's plan line."""
    m = re.search(r"propose: (\d+) of (\d+) images to compute", out)
    assert m, out
    return int(m[1]), int(m[2])


def args(folder: Path, out: Path, ckpt: Path, cache: Path, *more: str) -> list[str]:
    return ["propose", str(folder), "--out", str(out), "--checkpoint", str(ckpt)] + [
        "--device", "cpu", "--points-per-side", "2", "--cache", str(cache), *more
    ]  # fmt: skip


@pytest.fixture
def annotated(tmp_path: Path) -> Path:
    """A folder of 7 images; 6 have tables that an annotator, an import, a
    text editor or an older propose made."""
    d = tmp_path / "ds"
    for i, n in enumerate("abcdefg"):
        image(d / f"{n}.png", i)
    ann = d / "annotations"
    ann.mkdir()
    write_box_table(  # an annotator's boxes
        ann / "a.csv",
        BoxTable(
            labels=["cat"],
            boxes=np.array([[3.0, 4, 20, 30]]),
            scores=np.array([np.nan]),
            sources=["hand"],
        ),
    )
    (ann / "b.csv").write_text("label,x_min,y_min,x_max,y_max\ndog,1,2,30,40\n")
    (ann / "c.csv").write_text(HEADER)  # looked at: nothing in it
    (ann / "d.csv").write_text("x,y\n1,2\n")  # no box table at all
    write_box_table(  # a candidate the annotator picked and labelled
        ann / "e.csv",
        BoxTable(
            labels=["bird"],
            boxes=np.array([[5.0, 5, 9, 9]]),
            scores=np.array([0.97]),
            sources=["candidate"],
        ),
    )
    # g: what an older propose wrote (no log): its to replace
    (ann / "g.csv").write_text(HEADER + "candidate,1,1,2,2,0.9,candidate\r\n")
    (ann / "done.json").write_text('{"done": ["c.png"]}\n')
    (d / "classes.txt").write_text("cat\ndog\nbird\n")
    return d


def test_propose_into_annotations_keeps_every_hand_made_table(
    annotated, structured_ckpt, tmp_path, capsys
):
    ann = annotated / "annotations"
    before = state(annotated)
    cache = tmp_path / "cache"
    assert main(args(annotated, ann, structured_ckpt, cache)) == 0
    said = capsys.readouterr().out
    assert computed(said) == (2, 7)  # f (no table) and g (an older propose's)
    assert "5 skipped: their tables hold boxes propose did not write" in said
    after = state(annotated)
    for name in ("a", "b", "c", "d", "e"):  # byte-identical, not even rewritten
        assert after[f"annotations/{name}.csv"] == before[f"annotations/{name}.csv"]
    for name in ("done.json",):
        assert after[f"annotations/{name}"] == before[f"annotations/{name}"]
    assert after["classes.txt"] == before["classes.txt"]
    for name in ("f", "g"):
        t = read_box_table(ann / f"{name}.csv")
        assert len(t) > 0 and set(t.sources) == {"candidate"}
    assert after["annotations/g.csv"] != before["annotations/g.csv"]

    # a re-run keeps all: nothing to compute, the model is not even loaded
    assert main(args(annotated, ann, structured_ckpt, cache)) == 0
    out, err = capsys.readouterr()
    assert computed(out) == (0, 7) and "2 done by an earlier propose" in out
    assert err == ""  # no "not the official checkpoint": nothing was loaded
    assert state(annotated) == after

    # an annotator removes a candidate from f: f is theirs now
    t = read_box_table(ann / "f.csv")
    write_box_table(
        ann / "f.csv",
        BoxTable(labels=t.labels[1:], boxes=t.boxes[1:], scores=t.scores[1:],
                 sources=t.sources[1:]),
    )  # fmt: skip
    edited = (ann / "f.csv").read_bytes()
    again = args(annotated, ann, structured_ckpt, cache, "--points-per-side", "3")
    assert main(again) == 0
    # other settings: g (propose's own, unchanged) is redone, f is kept
    out = capsys.readouterr().out
    assert computed(out) == (1, 7) and "6 skipped" in out
    assert (ann / "f.csv").read_bytes() == edited

    # --overwrite replaces them all
    assert main(args(annotated, ann, structured_ckpt, cache, "--overwrite")) == 0
    assert computed(capsys.readouterr().out) == (7, 7)  # g was done with grid 3
    for name in "abcdef":
        assert set(read_box_table(ann / f"{name}.csv").sources) == {"candidate"}


def test_a_changed_image_is_computed_again(tmp_path, structured_ckpt, capsys):
    d = tmp_path / "d"
    image(d / "a.png", 1)
    image(d / "b.png", 2)
    argv = args(d, tmp_path / "out", structured_ckpt, tmp_path / "c")
    assert main(argv) == 0
    kept = (tmp_path / "out" / "b.csv").stat().st_mtime_ns
    image(d / "a.png", 3, size=(40, 64))  # replaced by another picture
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert computed(out) == (1, 2) and "1 done by an earlier" in out
    assert (tmp_path / "out" / "b.csv").stat().st_mtime_ns == kept


def test_subfolders_keep_their_path_and_no_recursive_skips_them(
    tmp_path, structured_ckpt, capsys
):
    from napari_samboxes.dataset import Dataset

    d = tmp_path / "set"
    for rel in ("train/a.png", "val/a.png", "c.png", ".hidden/x.png"):
        image(d / rel, len(rel))
    image(d / "annotations" / "z.png", 9)  # the tables' folder: not an image
    out = d / "annotations"
    assert main(args(d, out, structured_ckpt, tmp_path / "c")) == 0
    assert computed(capsys.readouterr().out) == (3, 3)
    tables = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.csv"))
    assert tables == ["c.csv", "train/a.csv", "val/a.csv"]
    ds = Dataset(d)  # the names folder mode reads
    assert sorted(ds.annotation_path(n) for n in ds.names) == [out / t for t in tables]
    flat = tmp_path / "flat"
    assert main(args(d, flat, structured_ckpt, tmp_path / "c", "--no-recursive")) == 0
    assert computed(capsys.readouterr().out) == (1, 1)
    assert [p.name for p in flat.rglob("*.csv")] == ["c.csv"]


def run_propose(argv: list[str]) -> subprocess.Popen[str]:
    """The command in a new process group (as a terminal runs it)."""
    import napari_samboxes

    src = str(Path(napari_samboxes.__file__).resolve().parents[1])
    return subprocess.Popen(
        [sys.executable, "-m", "napari_samboxes.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": src},
        start_new_session=True,
        # Ctrl-C as a terminal delivers it: a test run before may have left
        # SIGINT ignored in this process, which a child would inherit (and
        # Python then keeps ignoring it, as for a job started with nohup)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def stderr_lines(err: str) -> list[str]:
    """stderr without the progress bars."""
    parts = re.split(r"[\r\n]", err)
    return [p for p in parts if p.strip() and not re.match(r"\s*images:", p)]


@pytest.mark.parametrize(
    ("how", "extra"),
    [("SIGKILL", []), ("SIGINT", ["--workers", "2"])],
    ids=["killed", "ctrl-c-on-dask-workers"],
)
def test_a_killed_run_is_resumed_with_only_the_rest(
    tmp_path, structured_ckpt, capsys, how, extra
):
    if extra:
        pytest.importorskip("dask.distributed")
    d = tmp_path / "d"
    n = 10  # enough that the run cannot end before the signal lands
    for i in range(n):
        image(d / f"i{i}.png", i)
    out = tmp_path / "out"
    argv = args(d, out, structured_ckpt, tmp_path / "c")
    proc = run_propose([*argv, *extra])
    deadline = time.monotonic() + 600
    while not list(out.glob("*.csv")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no table after 10 minutes"
        time.sleep(0.02)
    os.killpg(proc.pid, getattr(signal, how))  # the whole group, as Ctrl-C
    _, err = proc.communicate(timeout=300)
    if how == "SIGINT":
        assert proc.returncode == 130
        lines = stderr_lines(err)  # no worker traceback, no leaked semaphore
        assert lines[-1] == "napari-samboxes: interrupted", lines
        assert all("warning: " in ln and "official" in ln for ln in lines[:-1])
    else:
        assert proc.returncode == -signal.SIGKILL
    written = state(out)
    assert 1 <= len(written) < n, "killed too late: every image was done"
    for name in written:  # whole tables only: atomic writes
        assert len(read_box_table(out / name)) > 0

    assert main(argv) == 0  # the re-run
    said = capsys.readouterr().out
    assert computed(said) == (n - len(written), n)
    after = state(out)
    assert len(after) == n
    for name, (data, mtime) in written.items():  # kept, not rewritten
        assert after[name] == (data, mtime)
