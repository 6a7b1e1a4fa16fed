"""Runs of the pipeline in a napari thread worker, feeding the session.

The worker reads the plane, loads the model and decodes; its typed events
(:mod:`napari_samboxes.pipeline`) arrive on the main thread, where they
change the session and the layers. A run ends with exactly one outcome:
``done``, ``cached``, ``cancelled``, ``stopped`` (image removed or changed)
or ``error``; on any outcome but the first two the session rolls back, so
the candidates shown before the run come back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .cache import CandidateCache
from .candidates import RawMasks
from .pipeline import (
    BatchDone,
    Encoded,
    FromCache,
    ModelReady,
    PlaneReady,
    RunEvent,
    RunRequest,
    run_candidates,
)
from .session import Session

__all__ = ["CandidateRun"]


class CandidateRun:
    """One run: a worker plus the bookkeeping of its outcome.

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
        Called once with the outcome and a message.
    """

    def __init__(
        self,
        request: RunRequest,
        session: Session,
        cache: CandidateCache,
        render: Callable[[], Any],
        status: Callable[[str], Any],
        ended: Callable[[str, str], Any],
    ) -> None:
        from napari.qt.threading import thread_worker

        self.session = session
        self._render, self._status, self._ended = render, status, ended
        self.embedding: Any = None
        self._stop_reason = ""
        self._outcome = ""
        n = request.settings.points_per_side**2
        self.worker = thread_worker(
            run_candidates,
            progress={"total": 0, "desc": f"SAM candidates ({n} prompts)"},
            start_thread=False,
            ignore_errors=True,
        )(request, cache=cache)
        self.worker.yielded.connect(self._on_event)
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_errored)
        self.worker.aborted.connect(self._on_aborted)
        self.worker.finished.connect(self._on_finished)

    def start(self) -> None:
        """Start the worker."""
        self._status("loading the image and the model...")
        self.worker.start()

    def stop(self, reason: str = "") -> None:
        """Stop at the next batch; ``reason`` (if any) is reported as such."""
        self._stop_reason = self._stop_reason or reason
        self.worker.quit()

    # -- worker signals (main thread) ------------------------------------
    def _live(self) -> bool:
        return not self._stop_reason and not self.worker.abort_requested

    def _on_event(self, ev: RunEvent) -> None:
        if not self._live():
            return
        s = self.session
        if isinstance(ev, PlaneReady):
            s.begin_run(ev.plane.index, ev.plane.scale)
        elif isinstance(ev, ModelReady):
            self._status("encoding the image...")
        elif isinstance(ev, Encoded):
            self.embedding = ev.embedding
        elif isinstance(ev, FromCache):
            s.commit(ev.raw)
            self._outcome = "cached"
            self._status(f"{len(s.candidates)} candidates (from cache)")
            self._render()
        elif isinstance(ev, BatchDone):
            s.add_batch(ev.raw)
            self._status(
                f"batch {ev.index + 1}/{ev.total}: {len(s.candidates)} candidates"
            )
            self._render()

    def _on_returned(self, raw: RawMasks) -> None:
        if not self._live() or self._outcome == "cached":
            return
        if self.session.running:
            self.session.commit()
        self._outcome = "done"
        self._status(f"{len(self.session.candidates)} candidates")

    def _rollback(self, outcome: str, message: str) -> None:
        self.session.rollback()
        self._outcome = outcome
        self._render()
        self._status(message)

    def _on_errored(self, exc: BaseException) -> None:
        self._rollback("error", f"error: {exc}")
        self._message = str(exc)

    def _on_aborted(self) -> None:
        if self._stop_reason:
            self._rollback("stopped", f"run stopped: {self._stop_reason}")
        else:
            self._rollback("cancelled", "cancelled")

    def _on_finished(self) -> None:
        if not self._outcome:  # quit after the last batch, before returning
            self._on_aborted()
        message = getattr(self, "_message", "") or self._stop_reason
        self._ended(self._outcome, message)
