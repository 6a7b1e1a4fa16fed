"""Every worker of a panel, in one private thread pool (``RunController``).

Qt's global thread pool has as many threads as cores (two here) and napari
needs it: its activity dock's spinner converts images through it while the
UI thread holds the GIL. Workers of ours in that pool can freeze the viewer
for good, so a panel runs its work in a ``QThreadPool`` of its own:

* one job per *slot* at a time: ``run`` (the shown image: reading it and
  its candidates), ``lookahead`` (folder mode's precomputation),
  ``prompt`` (box prompts, tighten), ``masks`` (the masks of picked boxes)
  and ``download`` (the weights);
* a new job for a busy slot asks the running one to stop and starts when
  it has ended (a worker still inside the image encoder is waited for,
  never forgotten); a job queued behind it is replaced, not piled up;
* the model runs for one image at a time: a ``run`` stops the look-ahead
  and starts when it has ended, a look-ahead waits for the run
  (:data:`PREEMPTS`); a stopped look-ahead leaves its finished batches
  and the embedding in the cache, so nothing it did is lost;
* :meth:`RunController.shutdown` stops every job and waits for this
  panel's own workers only, at most :data:`SHUTDOWN_WAIT_MS`; a worker
  that ends later emits into nothing (never an abort at exit).

:class:`CandidateRun` is one run of the pipeline for the shown image: its
events change the :class:`~napari_samboxes.session.Session`, and it ends
with exactly one outcome: ``done``, ``cached``, ``cancelled``, ``stopped``
(the image went away or changed) or ``error``; on all but the first two
the session rolls back, so the candidates shown before come back.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from qtpy.QtCore import QObject, QRunnable, QThreadPool, Signal

from ..cache import CandidateCache
from ..candidates import RawMasks
from ..order import Steer
from ..pipeline import (
    BatchDone,
    Encoded,
    FromCache,
    ModelReady,
    PlaneReady,
    Resumed,
    RunEvent,
    RunRequest,
    run_candidates,
)
from ..session import Session

__all__ = [
    "SHUTDOWN_WAIT_MS",
    "SLOTS",
    "CandidateRun",
    "Job",
    "RunController",
    "without_collection",
]

#: The kinds of work a panel runs, at most one job of each at a time.
SLOTS = ("run", "lookahead", "prompt", "masks", "download", "open", "count")
_GC_LOCK = threading.Lock()
_GC_PAUSES = [0]


def without_collection(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` with Python's cyclic garbage collector paused
    (for a worker that makes many long-lived objects, such as the list of a
    100,000-image folder: each full collection it would trigger scans every
    object of the process while holding the interpreter lock, 0.3-0.5 s of
    frozen viewer each, measured here). Nested and concurrent calls are
    counted; the collector runs again when the last one ends."""
    import gc

    with _GC_LOCK:
        if _GC_PAUSES[0] == 0 and not gc.isenabled():
            return fn(*args, **kwargs)  # someone else turned it off
        _GC_PAUSES[0] += 1
        gc.disable()
    try:
        return fn(*args, **kwargs)
    finally:
        with _GC_LOCK:
            _GC_PAUSES[0] -= 1
            if _GC_PAUSES[0] == 0:
                gc.enable()


#: How long closing a panel waits for its stopped workers (ms).
SHUTDOWN_WAIT_MS = 2000
#: Slots whose jobs never run at the same time as another slot's: the
#: model runs for one image at a time (two would share the cores, and
#: the shown image would wait for the look-ahead). A job of the first
#: stops the second's and starts when it has ended; the second's waits.
PREEMPTS = {"run": "lookahead"}


class _Signals(QObject):
    yielded = Signal(object)
    returned = Signal(object)
    errored = Signal(object)
    aborted = Signal()
    finished = Signal()


class Job(QRunnable):
    """A function (or generator function) run in a worker thread.

    A generator is stopped between two of its yields by :meth:`quit`. The
    signals (``signals.yielded``, ``returned``, ``errored``, ``aborted``,
    ``finished``) arrive on the main thread; ``finished`` comes last, once.
    """

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.setAutoDelete(False)  # the controller keeps it until it ends
        self.signals = _Signals()
        self._fn, self._args, self._kwargs = fn, args, kwargs
        self._quit = threading.Event()
        self._ended = threading.Event()

    def quit(self) -> None:
        """Ask the job to stop at its next yield."""
        self._quit.set()

    @property
    def abort_requested(self) -> bool:
        """Whether :meth:`quit` was called."""
        return self._quit.is_set()

    @property
    def ended(self) -> bool:
        """Whether the job has ended (or was dropped before it started)."""
        return self._ended.is_set()

    def _emit(self, name: str, *args: Any) -> None:
        try:
            getattr(self.signals, name).emit(*args)
        except RuntimeError:  # the panel is gone: nobody listens
            pass

    def run(self) -> None:  # noqa: D102 - QRunnable's
        try:
            result = self._fn(*self._args, **self._kwargs)
            if inspect.isgenerator(result):
                result = self._drain(result)
            if result is _ABORTED:
                self._emit("aborted")
            else:
                self._emit("returned", result)
        except BaseException as e:  # noqa: BLE001 - reported, never raised in Qt
            self._emit("errored", e)
        finally:
            self._ended.set()
            self._emit("finished")

    def _drain(self, gen: Any) -> Any:
        while True:
            if self._quit.is_set():
                gen.close()
                return _ABORTED
            try:
                event = next(gen)
            except StopIteration as stop:
                return stop.value
            if self._quit.is_set():
                gen.close()
                return _ABORTED
            self._emit("yielded", event)

    def drop(self) -> None:
        """End a job that never started: ``aborted`` then ``finished``."""
        self._quit.set()
        self._ended.set()
        self._emit("aborted")
        self._emit("finished")


_ABORTED = object()


class RunController:
    """The jobs of one panel, in a private ``QThreadPool`` (see the module
    docstring)."""

    def __init__(self) -> None:
        self.pool = QThreadPool()
        self.pool.setMaxThreadCount(len(SLOTS))
        self._current: dict[str, Job] = {}
        self._queued: dict[str, Job] = {}
        self.closed = False

    def submit(
        self,
        slot: str,
        fn: Callable[..., Any],
        *args: Any,
        on_yield: Callable[[Any], Any] | None = None,
        on_return: Callable[[Any], Any] | None = None,
        on_error: Callable[[BaseException], Any] | None = None,
        on_abort: Callable[[], Any] | None = None,
        on_finish: Callable[[], Any] | None = None,
    ) -> Job:
        """Run ``fn(*args)`` in ``slot``: now, or when the slot's running
        job (asked to stop) has ended. Callbacks run on the main thread."""
        if slot not in SLOTS:
            raise ValueError(f"unknown slot {slot!r}")
        job = Job(fn, *args)
        for name, cb in (
            ("yielded", on_yield),
            ("returned", on_return),
            ("errored", on_error),
            ("aborted", on_abort),
            ("finished", on_finish),
        ):
            if cb is not None:
                getattr(job.signals, name).connect(cb)
        job.signals.finished.connect(lambda: self._ended(slot, job))
        if self.closed:
            job.drop()
            return job
        running = self._current.get(slot)
        if running is not None:
            running.quit()
        lesser = PREEMPTS.get(slot)
        if lesser is not None:
            self.stop(lesser)
        dropped = self._queued.pop(slot, None)
        if dropped is not None:
            dropped.drop()
        self._queued[slot] = job
        self._start_queued()
        return job

    def _blocked(self, slot: str) -> bool:
        """Whether ``slot``'s queued job must wait (see :data:`PREEMPTS`)."""
        if slot in self._current:
            return True
        for high, low in PREEMPTS.items():
            if slot == high and low in self._current:
                return True
            if slot == low and (high in self._current or high in self._queued):
                return True
        return False

    def _start_queued(self) -> None:
        for slot in SLOTS:
            if slot in self._queued and not self._blocked(slot):
                job = self._queued.pop(slot)
                self._current[slot] = job
                self.pool.start(job)

    def _ended(self, slot: str, job: Job) -> None:
        if self._current.get(slot) is not job:
            return
        del self._current[slot]
        self._start_queued()

    def current(self, slot: str) -> Job | None:
        """The job running in ``slot`` (or waiting for one to stop)."""
        return self._queued.get(slot) or self._current.get(slot)

    def busy(self, slot: str) -> bool:
        """Whether ``slot`` has a job queued, or running and not asked to
        stop."""
        running = self._current.get(slot)
        return slot in self._queued or (
            running is not None and not running.abort_requested
        )

    def alive(self, slot: str) -> bool:
        """Whether a worker of ``slot`` is still running (perhaps stopping)."""
        return slot in self._current or slot in self._queued

    def stop(self, slot: str) -> None:
        """Stop ``slot``'s job (at its next yield) and drop a queued one."""
        dropped = self._queued.pop(slot, None)
        if dropped is not None:
            dropped.drop()
        running = self._current.get(slot)
        if running is not None:
            running.quit()

    def shutdown(self, wait_ms: int = SHUTDOWN_WAIT_MS) -> bool:
        """Stop every job and wait for this panel's workers (not napari's);
        True if they all ended within ``wait_ms``."""
        self.closed = True
        for slot in SLOTS:
            self.stop(slot)
        return bool(self.pool.waitForDone(wait_ms))


class CandidateRun:
    """One run of the pipeline for the shown image (see the module docstring).

    Parameters
    ----------
    request : RunRequest
    session : Session
        Receives ``begin_run``/``add_batch``/``commit``/``rollback``.
    cache : CandidateCache
    render : callable
        Called on the main thread whenever the shown candidates changed.
    status : callable
        Called with a short status text.
    ended : callable
        Called once with the run, its outcome and a message.
    """

    def __init__(
        self,
        request: RunRequest,
        session: Session,
        cache: CandidateCache,
        render: Callable[[], Any],
        status: Callable[[str], Any],
        ended: Callable[[CandidateRun, str, str], Any],
    ) -> None:
        self.request = request
        self.session = session
        self.cache = cache
        self._render, self._status, self._ended = render, status, ended
        self.embedding: Any = None
        self.outcome = ""
        self._stop_reason = ""
        self._message = ""
        self.job: Job | None = None
        #: The image layer it runs on (its data events stop the run).
        self.image: Any = None
        #: No notification when it stops (the user moved on).
        self.quiet = False
        #: Takes the annotator's clicks: their prompts run next.
        self.steer = Steer()
        #: Click requests answered by the batches so far.
        self.served = 0
        #: Called on the main thread after each change of the candidates
        #: or the embedding (a waiting pick retries).
        self.progressed: Callable[[], Any] | None = None

    def start(self, runs: RunController) -> None:
        """Start in ``runs``' ``run`` slot."""
        self._status("loading the image and the model...")
        self.job = runs.submit(
            "run",
            partial(run_candidates, cache=self.cache, steer=self.steer),
            self.request,
            on_yield=self._on_event,
            on_return=self._on_returned,
            on_error=self._on_errored,
            on_abort=self._on_aborted,
            on_finish=self._on_finished,
        )

    def prefer(self, points_xy: Any) -> int:
        """Run the prompts nearest these points (x, y, the run's pixels)
        next; returns the request's number (see :attr:`served`)."""
        return self.steer.prefer(points_xy)

    @property
    def prompts_left(self) -> bool:
        """Whether prompts are still to run (True before the run knows)."""
        left = self.steer.remaining
        return left is None or left > 0

    def stop(self, reason: str = "") -> None:
        """Stop at the next batch; ``reason`` (if any) is reported as such."""
        self._stop_reason = self._stop_reason or reason
        if self.job is not None:
            self.job.quit()

    @property
    def live(self) -> bool:
        """Whether the run goes on (not asked to stop, not ended)."""
        return (
            not self._stop_reason
            and self.job is not None
            and not self.job.abort_requested
            and not self.outcome
        )

    # -- the job's signals (main thread) ----------------------------------
    # Progress is the status line's "batch k/n". No napari progress bar: its
    # activity spinner repaints the window for as long as it runs, and with
    # software OpenGL (no GPU, Xvfb) that took 45 % of a 2-core CPU from
    # the decoder (1.75 s per batch of 64 prompts instead of 0.95 s).
    def _on_event(self, ev: RunEvent) -> None:
        if not self.live:
            return
        s = self.session
        if isinstance(ev, PlaneReady):
            s.begin_run(ev.plane.index, ev.plane.scale)
        elif isinstance(ev, ModelReady):
            self._status("encoding the image...")
        elif isinstance(ev, Encoded):
            self.embedding = ev.embedding
            self._progressed()
        elif isinstance(ev, Resumed):
            s.add_batch(ev.raw)
            self._status(
                f"resumed: {ev.batches} batches from before, "
                f"{len(s.candidates)} candidates"
            )
            self._render()
            self._progressed()
        elif isinstance(ev, FromCache):
            s.commit(ev.raw)
            self.outcome = "cached"
            self._status(f"{len(s.candidates)} candidates (from cache)")
            self._render()
        elif isinstance(ev, BatchDone):
            s.add_batch(ev.raw)
            self.served = max(self.served, ev.served)
            self._status(
                f"batch {ev.index + 1}/{ev.total}: {len(s.candidates)} candidates"
            )
            self._render()
            self._progressed()

    def _progressed(self) -> None:
        if self.progressed is not None:
            self.progressed()

    def _on_returned(self, raw: RawMasks) -> None:
        if not self.live:
            return
        if self.session.running:
            self.session.commit(raw)  # in the grid's order, as cached
        self.outcome = "done"
        self._status(f"{len(self.session.candidates)} candidates")

    def _rollback(self, outcome: str, message: str) -> None:
        self.session.rollback()
        self.outcome = outcome
        self._render()
        self._status(message)

    def _on_errored(self, exc: BaseException) -> None:
        if self.outcome in ("cached", "done"):
            return
        self._message = str(exc)
        self._rollback("error", f"error: {exc}")

    def _on_aborted(self) -> None:
        if self.outcome in ("cached", "done"):
            return
        if self._stop_reason:
            self._rollback("stopped", f"run stopped: {self._stop_reason}")
        else:
            self._rollback("cancelled", "cancelled")

    def _on_finished(self) -> None:
        if not self.outcome:  # stopped after its last batch, before returning
            self._on_aborted()
        self._ended(self, self.outcome, self._message or self._stop_reason)
