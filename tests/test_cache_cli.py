"""``napari-samboxes cache info|clear``, and one cache for ``propose
--cache`` and the viewer (real files, the structured checkpoint)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from napari_samboxes.cache import CandidateCache, cache_key, format_size
from napari_samboxes.cli import main
from napari_samboxes.settings import DEFAULTS


def exe() -> str:
    return str(Path(sys.executable).with_name("napari-samboxes"))


def disk_bytes(root):
    return sum(p.stat().st_size for p in root.rglob("*.npz"))


@pytest.fixture
def proposed(tmp_path, synthetic, structured_ckpt, capsys):
    """A cache folder filled by ``propose --cache`` (one image, grid 2)."""
    import imageio.v3 as iio

    img = tmp_path / "syn.png"
    iio.imwrite(img, synthetic)
    root = tmp_path / "shared cache"
    argv = ["propose", str(img), "--out", str(tmp_path / "out")]
    argv += ["--points-per-side", "2", "--checkpoint", str(structured_ckpt)]
    assert main([*argv, "--device", "cpu", "--cache", str(root)]) == 0
    capsys.readouterr()
    return root


def test_propose_and_the_viewer_share_one_cache(
    proposed, synthetic, structured_model, monkeypatch
):
    from napari_samboxes.pipeline import FromCache, drain, raw_results

    monkeypatch.setenv("NAPARI_SAMBOXES_CACHE", str(proposed))
    viewer_cache = CandidateCache()  # what the panel makes
    s = DEFAULTS.with_(points_per_side=2)
    key = cache_key(synthetic, structured_model.digest, s)
    assert viewer_cache.load(key) is not None
    seen = []
    drain(
        raw_results(synthetic, s, model=structured_model, cache=viewer_cache),
        seen.append,
    )
    assert any(isinstance(e, FromCache) for e in seen)
    assert sorted(p.parent.name for p in proposed.rglob("*.npz")) == [
        "candidates",
        "embeddings",
    ]


def test_info_names_the_folder_the_entries_by_kind_the_bytes_and_the_limit(
    proposed, capsys, monkeypatch
):
    monkeypatch.setenv("NAPARI_SAMBOXES_CACHE_LIMIT", "2GB")
    assert main(["cache", "info", "--cache", str(proposed)]) == 0
    out = capsys.readouterr().out
    assert f"cache folder: {proposed}" in out
    assert "candidates: 1 entry," in out and "embeddings: 1 entry," in out
    assert "partial runs: 0 entries" in out
    assert f"total: {format_size(disk_bytes(proposed))} of limit 2 GB" in out
    # the default folder is the user cache (NAPARI_SAMBOXES_CACHE)
    monkeypatch.setenv("NAPARI_SAMBOXES_CACHE", str(proposed))
    assert main(["cache", "info"]) == 0
    assert capsys.readouterr().out == out


def test_clear_by_age_then_all_and_nothing_else(proposed, capsys):
    weights = proposed / "mobile_sam.pt"  # the user cache holds the weights too
    weights.write_bytes(b"weights")
    (emb,) = (proposed / "embeddings").glob("*.npz")
    t = time.time() - 3 * 86400
    os.utime(emb, (t, t))  # not used for three days
    size = emb.stat().st_size
    assert main(["cache", "clear", "--cache", str(proposed), "--older-than", "2d"]) == 0
    out = capsys.readouterr().out
    assert f"removed 1 file not used for 2d ({format_size(size)})" in out
    assert not emb.exists() and list((proposed / "candidates").glob("*.npz"))
    assert main(["cache", "clear", "--cache", str(proposed), "--all"]) == 0
    assert "removed 1 file " in capsys.readouterr().out
    assert not list(proposed.rglob("*.npz")) and weights.read_bytes() == b"weights"
    assert main(["cache", "info", "--cache", str(proposed)]) == 0
    assert "total: 0 B" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["cache"], "required"),
        (["cache", "clear"], "--all --older-than"),
        (["cache", "clear", "--all", "--older-than", "1d"], "not allowed"),
        (["cache", "clear", "--older-than", "3 days"], "30d"),
        (["cache", "clear", "--older-than", "-1d"], "--older-than"),
        (["cache", "info", "--cache", "FILE"], "not a folder"),
        (["cache", "info", "--cache", ""], "not a folder"),
        (["cache", "clean"], "invalid choice"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, capsys, argv, words):
    file = tmp_path / "a file"
    file.write_text("x")
    argv = [str(file) if a == "FILE" else a for a in argv]
    with pytest.raises(SystemExit) as e:  # argparse's own errors
        raise SystemExit(main(argv))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert words in err and err.strip().count("\n") == 0


def test_a_bad_limit_in_the_environment_is_one_line_in_a_real_process(tmp_path):
    env = {**os.environ, "NAPARI_SAMBOXES_CACHE": str(tmp_path)}
    env["NAPARI_SAMBOXES_CACHE_LIMIT"] = "lots"
    r = subprocess.run(
        [exe(), "cache", "info"], capture_output=True, text=True, env=env
    )
    assert r.returncode == 2
    assert (
        r.stderr.strip().count("\n") == 0 and "NAPARI_SAMBOXES_CACHE_LIMIT" in r.stderr
    )
    env["NAPARI_SAMBOXES_CACHE_LIMIT"] = "unlimited"
    r = subprocess.run(
        [exe(), "cache", "info"], capture_output=True, text=True, env=env
    )
    assert r.returncode == 0 and "no limit" in r.stdout and not r.stderr
