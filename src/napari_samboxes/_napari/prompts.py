"""Questions to SAM after a run, for the shown image (``SamPrompts``).

* The prompt fallback: two clicks no candidate holds become a box prompt.
* Tighten: boxes snapped to candidates, else to box prompts.
* Masks: a box picked from a candidate or a prompt gets its SAM mask,
  computed in the background and stored with it (no undo step).

Prompts reuse the run's image embedding (kept in the session, else the
cache's, else one encode); they run in the panel's ``prompt`` worker, or on
the UI thread when the last one on that device was quick.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from ..cache import CandidateCache
from ..pipeline import RunRequest
from ..session import Change, Session
from ..tighten import PROMPT_WITH_POINTS, Prompter, is_empty, tighten_boxes
from .runs import CandidateRun, RunController

__all__ = ["INLINE_PROMPT_S", "PromptHost", "SamPrompts"]


class PromptHost(Protocol):
    """What :class:`SamPrompts` needs of its owner (the
    :class:`~.annotator.Annotator`): the shown image's session, run and
    workers, and a way to show and apply what SAM answered."""

    session: Session
    request: RunRequest | None
    run: CandidateRun | None
    cache: CandidateCache
    runs: RunController
    closed: bool
    say: Callable[[str], Any]
    notify: Callable[..., Any]
    #: The Qt signal every change of some image's boxes is emitted on.
    changed: Any

    def apply(self, change: Change) -> Change: ...  # noqa: D102

    def add_with_mask(self, change: Change) -> Change: ...  # noqa: D102

    def selected(self, source: Any = None) -> list[int]: ...  # noqa: D102


#: A prompt runs on the UI thread when the last one on the device took less
#: than this (seconds) and no encode is needed; else in a worker.
INLINE_PROMPT_S = 0.05


class SamPrompts:
    """SAM prompted for the shown image of ``annotator`` (see the module
    docstring); owned by its :class:`~.annotator.Annotator`."""

    def __init__(self, annotator: PromptHost) -> None:
        self.a = annotator
        self._last_prompt_s: dict[str, float] = {}

    def prompter(self) -> Prompter | None:
        s, req = self.a.session, self.a.request
        cset = s.candidate_set
        if cset is None or req is None:
            return None
        emb = s.embedding
        if emb is None and self.a.run is not None:
            emb = self.a.run.embedding  # a run still streaming
        return Prompter(req, cset.scale, emb, self.a.cache)

    def ask(
        self, p: Prompter, job: Callable[[], Any], done: Callable[[Any], Any]
    ) -> None:
        """``done(job())``: inline when a prompt is known to be quick, else
        ``job`` in the ``prompt`` slot and ``done`` on the main thread."""
        s, key, cset = (
            self.a.session,
            self.a.session.image_key,
            self.a.session.candidate_set,
        )
        device = str(p.request.device)

        def finish(result: Any) -> None:
            self._last_prompt_s[device] = p.last_seconds
            if s.embedding is None and s.candidate_set is cset:
                s.embedding = p.embedding  # encoded (or loaded) once, kept
            if s.image_key == key and not self.a.closed:
                done(result)

        if p.embedding is not None and self._last_prompt_s.get(device, 1.0) < (
            INLINE_PROMPT_S
        ):
            return finish(job())
        self.a.say("asking SAM for a box...")
        self.a.runs.submit(
            "prompt",
            job,
            on_return=finish,
            on_error=lambda e: self.a.notify(f"SAM prompt failed: {e}", "error"),
            on_abort=lambda: self.a.say("a SAM prompt was dropped for a newer one"),
        )

    def fallback(
        self, span: tuple[float, float, float, float], points_xy: np.ndarray, label: str
    ) -> None:
        p = self.prompter()
        if p is None:
            return self.a.notify("no candidate box contains both points")
        box = np.asarray(span, dtype=np.float64)[None]
        points = np.asarray(points_xy, dtype=np.float64)[None]

        def job() -> tuple[np.ndarray, np.ndarray]:
            return p(box, points if PROMPT_WITH_POINTS else None)

        def done(result: tuple[np.ndarray, np.ndarray]) -> None:
            got, ious = result
            if is_empty(got)[0]:
                text = (
                    "no candidate holds both points and SAM found no object in "
                    "their box; draw it by hand."
                )
                self.a.say(text)
                return self.a.notify(text)
            kept = points[0] if PROMPT_WITH_POINTS else ()
            self.a.add_with_mask(
                self.a.session.add_prompted(
                    got[0], float(ious[0]), label, prompt_box=box[0], prompt_points=kept
                )
            )
            self.a.notify(
                f"no candidate held both points: box from SAM (IoU {ious[0]:.2f})"
            )

        self.ask(p, job, done)

    def tighten(self) -> None:
        """Snap the selected boxes (or all) to candidates, else to prompts."""
        s = self.a.session
        p = self.prompter()
        if p is None:
            return self.a.notify("press Run first: tighten snaps boxes to SAM's boxes.")
        chosen = self.a.selected()
        before = s.boxes
        asked: list[np.ndarray] = []

        def probe(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            asked.append(b)
            return np.zeros_like(b), np.zeros(len(b))

        cands, sl = s.candidates, s.slice_index  # read here, not in the worker

        def run(prompt: Any) -> Any:
            return tighten_boxes(before, cands, chosen or None, prompt, slice_index=sl)

        def done(result: Any) -> None:
            if s.boxes is not before:
                return self.a.notify(
                    "the boxes changed while tightening; tighten again."
                )
            self.a.apply(s.replace_all(result.boxes, result.message))
            self.a.notify(result.message)

        quick = run(probe)
        if not asked:
            return done(quick)
        self.ask(p, lambda: run(p), done)

    def fill_masks(self, change: Change) -> None:
        """Compute the masks of the boxes of ``change`` that have none, in
        the ``masks`` worker, and store them without an undo step (nothing
        when the boxes changed meanwhile: the next change computes them)."""
        a = self.a
        emb = a.session.embedding
        if emb is None and a.run is not None:
            emb = a.run.embedding
        req = a.request
        if not change.changed or emb is None or req is None or a.closed:
            return  # ``napari-samboxes masks DIR`` fills them in later
        from ..masks import fill_masks
        from ..pipeline import get_model

        before = change.boxes

        def job() -> Any:  # every box still without its mask, in the worker
            return fill_masks(before, get_model(req.checkpoint, req.device), emb)

        def done(after: Any) -> None:
            stored = a.session.set_masks(before, after, change.key)
            if stored.changed and not a.closed:
                a.changed.emit(stored)  # saved; nothing to redraw

        a.runs.submit("masks", job, on_return=done)
