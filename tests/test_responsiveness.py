"""The viewer stays responsive: moving fast while the look-ahead computes,
and closing the viewer with a run going (real viewer, real model)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from qtpy.QtCore import Qt, QTimer
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication

from gui_helpers import shown_folder, wait_image
from napari_samboxes._napari.input import canvas_widget


@pytest.fixture
def folder(tmp_path, photo):
    """Six different 8-bit photos."""
    from PIL import Image

    d = tmp_path / "shots"
    d.mkdir()
    for i in range(6):
        img = np.roll(photo, 23 * i, axis=1) if i % 2 else np.roll(photo, 17 * i, 0)
        Image.fromarray(img).save(d / f"img{i + 1}.png")
    return d


def test_next_and_prev_while_the_look_ahead_computes_never_stall(
    make_napari_viewer, folder, structured_ckpt, tmp_path, qtbot
):
    viewer, widget = shown_folder(
        make_napari_viewer, folder, structured_ckpt, tmp_path / "cache", qtbot, pps=8
    )
    qtbot.waitUntil(lambda: widget.folder_mode.looking_ahead, timeout=60_000)
    assert QApplication.focusWidget() is canvas_widget(viewer)
    gaps, last = [], [time.perf_counter()]

    def tick():
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(5)
    busy = 0
    for k in range(20):
        busy += widget.folder_mode.looking_ahead or widget.runs.alive("run")
        QTest.keyClick(
            QApplication.focusWidget(), Qt.Key.Key_D if k % 2 == 0 else Qt.Key.Key_A
        )
        qtbot.wait(40 + 10 * (k % 4))
    wait_image(widget, qtbot, 0)  # 10 x d, 10 x a: back at the first
    timer.stop()
    assert busy >= 10  # the presses did land while workers were computing
    assert len(gaps) > 50 and max(gaps) < 2.0, f"longest stall {max(gaps):.2f} s"
    assert widget.folder_mode.index == 0


def test_closing_the_viewer_with_a_run_going_ends_at_once(
    folder, structured_ckpt, tmp_path
):
    script = textwrap.dedent(
        f"""
        import time
        import napari
        from qtpy.QtWidgets import QApplication
        from napari_samboxes._napari.widget import SamBoxesWidget
        from napari_samboxes.cache import CandidateCache
        viewer = napari.Viewer(show=False)
        w = SamBoxesWidget(viewer, cache=CandidateCache({str(tmp_path / "c")!r}),
                           points_per_batch=16)
        viewer.window.add_dock_widget(w)
        w.checkpoint.value = {str(structured_ckpt)!r}
        w.points_per_side.value = 32
        w.folder.value = {str(folder)!r}
        app = QApplication.instance()
        t = time.time()
        while "batch" not in w.status.value:
            app.processEvents(); time.sleep(0.01)
            assert time.time() - t < 120, "the run did not start"
        print("CLOSING", w.current_run is not None, flush=True)
        t = time.perf_counter()
        viewer.close()
        print("CLOSED", time.perf_counter() - t, w.runs.pool.activeThreadCount(), flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    line = proc.stdout.readline()
    t = time.perf_counter()
    assert line.split() == ["CLOSING", "True"], line + proc.stderr.read()
    closed = proc.stdout.readline().split()
    proc.wait(timeout=60)
    ended = time.perf_counter() - t
    err = proc.stderr.read()
    assert proc.returncode == 0, err
    assert closed[0] == "CLOSED", err
    # the close itself (the run stopped and waited for): under 2 s; then
    # Python and torch end the process (about 2 s here without the plugin)
    assert float(closed[1]) < 2.0 and closed[2] == "0", closed
    assert ended < 10.0, f"the process took {ended:.1f} s to end"
    assert "Traceback" not in err and "deleted" not in err, err
