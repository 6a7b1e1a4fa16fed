"""The panel's workers (``RunController``): a private pool, one job per
slot, a stopped job waited for, a bounded shutdown. Real Qt threads."""

from __future__ import annotations

import threading
import time

import pytest
from qtpy.QtCore import QThreadPool

from napari_samboxes._napari.runs import RunController


@pytest.fixture
def runs(qapp):
    controller = RunController()
    yield controller
    controller.shutdown(5000)


def blocking(gate: threading.Event, seen: list, name: str):
    """A job that is not a generator: it cannot stop before ``gate``."""

    def job():
        seen.append(f"{name} started")
        gate.wait(30)
        seen.append(f"{name} ended")
        return name

    return job


def test_jobs_run_in_the_panels_pool_not_qts_global_one(runs, qtbot):
    gate, seen, got = threading.Event(), [], []
    runs.submit("run", blocking(gate, seen, "a"), on_return=got.append)
    qtbot.waitUntil(lambda: seen == ["a started"], timeout=10_000)
    assert runs.pool.activeThreadCount() == 1
    assert QThreadPool.globalInstance().activeThreadCount() == 0
    gate.set()
    qtbot.waitUntil(lambda: got == ["a"], timeout=10_000)


def test_a_stopped_job_is_waited_for_and_a_queued_one_replaced(runs, qtbot):
    gate, seen = threading.Event(), []
    ended = {"a": [], "b": [], "c": []}
    got = []
    for name in "abc":
        if name != "a":
            qtbot.waitUntil(lambda: "a started" in seen, timeout=10_000)
        runs.submit(
            "run",
            blocking(gate, seen, name),
            on_return=got.append,
            on_abort=lambda name=name: ended[name].append("aborted"),
            on_finish=lambda name=name: ended[name].append("finished"),
        )
    time.sleep(0.2)  # b was queued, then replaced by c: neither started
    assert seen == ["a started"] and runs.current("run") is not None
    assert ended["b"] == ["aborted", "finished"]
    gate.set()  # a ends (its result still arrives), then c runs
    qtbot.waitUntil(lambda: got == ["a", "c"], timeout=10_000)
    assert seen == ["a started", "a ended", "c started", "c ended"]
    assert ended["c"] == ["finished"] and not runs.alive("run")


def test_a_generator_stops_between_yields_and_errors_are_reported(runs, qtbot):
    def count():
        for i in range(10_000):
            time.sleep(0.001)
            yield i

    seen, aborted, errors = [], [], []
    job = runs.submit(
        "lookahead", count, on_yield=seen.append, on_abort=lambda: aborted.append(1)
    )
    qtbot.waitUntil(lambda: len(seen) > 3, timeout=10_000)
    runs.stop("lookahead")
    qtbot.waitUntil(lambda: bool(aborted), timeout=10_000)
    assert job.ended and len(seen) < 10_000

    def fail():
        raise RuntimeError("decoder exploded")

    runs.submit("prompt", fail, on_error=errors.append)
    qtbot.waitUntil(lambda: bool(errors), timeout=10_000)
    assert str(errors[0]) == "decoder exploded"


def test_shutdown_waits_at_most_its_limit_and_a_late_job_is_harmless(qapp, qtbot):
    """Shutdown returns after its limit even when a job cannot stop; the
    job's late result reaches no callback of the closed panel."""
    runs = RunController()
    gate, seen, got = threading.Event(), [], []
    runs.submit("run", blocking(gate, seen, "a"), on_return=got.append)
    qtbot.waitUntil(lambda: seen == ["a started"], timeout=10_000)
    t = time.perf_counter()
    assert runs.shutdown(300) is False  # still inside its step
    assert time.perf_counter() - t < 1.0
    assert runs.submit("run", lambda: 1).ended  # refused after shutdown
    gate.set()
    assert runs.shutdown(5000) is True
    qtbot.wait(50)  # its signals, delivered after the shutdown
    assert seen == ["a started", "a ended"] and got == ["a"]


def test_the_shown_images_run_and_the_look_ahead_never_overlap(runs, qtbot):
    # one model at a time: a run stops the look-ahead and starts when it has
    # ended (a look-ahead inside the encoder cannot stop before); a
    # look-ahead asked for during a run waits for it
    ahead_gate, run_gate, seen = threading.Event(), threading.Event(), []
    runs.submit("lookahead", blocking(ahead_gate, seen, "ahead"))
    qtbot.waitUntil(lambda: seen == ["ahead started"], timeout=10_000)
    runs.submit("run", blocking(run_gate, seen, "run"))
    time.sleep(0.2)
    assert seen == ["ahead started"] and runs.current("lookahead").abort_requested
    ahead_gate.set()
    qtbot.waitUntil(lambda: "run started" in seen, timeout=10_000)
    assert seen == ["ahead started", "ahead ended", "run started"]
    ahead_gate.clear()
    runs.submit("lookahead", blocking(ahead_gate, seen, "ahead 2"))
    time.sleep(0.2)
    assert "ahead 2 started" not in seen
    run_gate.set()
    qtbot.waitUntil(lambda: "ahead 2 started" in seen, timeout=10_000)
    assert seen.index("run ended") < seen.index("ahead 2 started")
    ahead_gate.set()
