"""One run pipeline: plane -> model -> cache -> batches, as typed events.

The widget runs :func:`run_candidates` in a worker thread and turns its
events into layer updates; the CLI and :func:`propose_boxes` drive the same
generator. No napari or Qt here; torch is imported lazily by the engine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .cache import CandidateCache, cache_key
from .candidates import Candidates, RawMasks
from .image import Plane, extract_plane, to_rgb8
from .order import Steer
from .settings import DEFAULTS, Settings

__all__ = [
    "BatchDone",
    "Encoded",
    "FromCache",
    "ModelReady",
    "PlaneReady",
    "Precomputed",
    "Resumed",
    "RunError",
    "RunEvent",
    "RunRequest",
    "get_model",
    "precompute",
    "propose_boxes",
    "run_candidates",
]


# -- events ---------------------------------------------------------------
@dataclass(frozen=True)
class PlaneReady:
    """The plane was read and converted to 8-bit RGB."""

    plane: Plane


@dataclass(frozen=True)
class ModelReady:
    """The model is loaded (or was already)."""

    model: Any


@dataclass(frozen=True)
class Encoded:
    """The image embedding, for prompts later (fallback, tighten)."""

    embedding: Any


@dataclass(frozen=True)
class FromCache:
    """The complete raw results came from the cache."""

    raw: RawMasks


@dataclass(frozen=True)
class BatchDone:
    """One batch of prompts was decoded (``index`` counts from 0).

    ``served``: the click requests (:meth:`~napari_samboxes.order.Steer.
    prefer`) answered by this batch or an earlier one.
    """

    index: int
    total: int
    raw: RawMasks
    served: int = 0


@dataclass(frozen=True)
class Resumed:
    """The run goes on from a partial cache entry: its finished batches."""

    raw: RawMasks
    batches: int


@dataclass(frozen=True)
class Precomputed:
    """One image of a look-ahead is in the cache (or was skipped)."""

    path: Path
    ok: bool


RunEvent = (
    PlaneReady | ModelReady | Encoded | FromCache | Resumed | BatchDone | Precomputed
)


class RunError(Exception):
    """A failure inside a run, worded for the user.

    superqt's generator worker takes a ``RuntimeError`` raised by the
    generator for "the worker was deleted" and stops without a signal, so
    runtime errors from torch are re-raised as this type.
    """


@dataclass(frozen=True)
class RunRequest:
    """What to segment: a layer's data and how to read it, and with what.

    ``data`` may be lazy (dask, zarr) or multiscale: reading and converting
    it happens inside :func:`run_candidates`, in the worker.
    """

    data: Any
    checkpoint: str | Path | None = None
    device: str = "auto"
    settings: Settings = DEFAULTS
    index: tuple[int, ...] = ()
    rgb: bool = True
    multiscale: bool = False
    contrast_limits: tuple[float, float] | None = None


# -- the model, loaded once ---------------------------------------------
_models: dict[tuple[str, float, int, str], Any] = {}
_models_lock = threading.Lock()


def get_model(checkpoint: str | Path | None, device: str = "auto") -> Any:
    """Load the model once per checkpoint file (path, mtime, size) and device."""
    from .model import find_checkpoint, load_model

    path = Path(checkpoint) if checkpoint else find_checkpoint()
    if path is None or not path.is_file():
        return load_model(checkpoint, device=device)  # raises, naming the search
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime, st.st_size, device)
    with _models_lock:
        if key not in _models:
            _models.clear()  # one model at a time: they are large
            _models[key] = load_model(path, device=device)
        return _models[key]


# -- the pipeline ---------------------------------------------------------
def run_candidates(
    request: RunRequest,
    *,
    cache: CandidateCache | None = None,
    model: Any = None,
    steer: Steer | None = None,
) -> Generator[RunEvent, None, RawMasks]:
    """Read the plane, load the model, serve the cache or run the engine
    (see :func:`raw_results`; ``steer`` takes the annotator's clicks).

    Yields typed events; returns the complete :class:`RawMasks`. Out of
    memory and runtime errors of the model are raised as :class:`RunError`.
    """
    plane = extract_plane(
        request.data,
        index=request.index,
        rgb=request.rgb,
        multiscale=request.multiscale,
        contrast_limits=request.contrast_limits,
    )
    yield PlaneReady(plane)
    try:
        return (
            yield from raw_results(
                plane.rgb8,
                request.settings,
                request.checkpoint,
                request.device,
                cache=cache,
                model=model,
                steer=steer,
            )
        )
    except (MemoryError, RuntimeError) as e:
        if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
            h, w = plane.rgb8.shape[:2]
            raise RunError(
                f"out of memory while segmenting the {w} x {h} image ({e}). "
                "Close other programs, use the CPU device, or segment a "
                "downscaled copy."
            ) from e
        raise RunError(str(e)) from e


def raw_results(
    rgb8: np.ndarray,
    settings: Settings = DEFAULTS,
    checkpoint: str | Path | None = None,
    device: str = "auto",
    *,
    cache: CandidateCache | None = None,
    model: Any = None,
    steer: Steer | None = None,
) -> Generator[RunEvent, None, RawMasks]:
    """The model part of :func:`run_candidates`, for an 8-bit RGB image.

    The prompts run coarse to fine (clicks first, through ``steer``). A run
    stopped half way (the generator closed, or an error) leaves its
    finished batches and the embedding in the cache; the next run of the
    same key resumes from them and decodes only the prompts still to run.
    The complete entry is stored in the grid's order: the same bytes as a
    run in one go.
    """
    from . import engine

    if model is None:
        model = get_model(checkpoint, device)
    yield ModelReady(model)
    key = cache_key(rgb8, model.digest, settings) if cache is not None else ""
    raw = cache.load(key) if cache is not None else None
    if raw is not None:
        assert cache is not None
        embedding = cache.load_embedding(key, model.device)
        if embedding is not None:
            yield Encoded(embedding)
        yield FromCache(raw)
        return raw
    plan = engine.prompt_plan(rgb8.shape[:2], settings)
    n_prompts = sum(plan.sizes)
    part = cache.load_partial(key, n_prompts) if cache is not None else None
    # a run stopped inside or right after the encoder left the embedding
    # (float32 only: the remaining batches must be those of a fresh encode)
    embedding = (
        cache.load_embedding(key, model.device, exact=True)
        if cache is not None
        else None
    )
    stored = embedding is not None
    if embedding is None:
        embedding = engine.encode_image(rgb8, model)
    parts: list[RawMasks] = []
    rows: list[np.ndarray] = []
    saved = 0  # batches in the partial entry on disk
    try:
        yield Encoded(embedding)
        batch = settings.batch_for(str(model.device).split(":")[0])
        done = None
        if part is not None:
            parts.append(part[0])
            rows.append(part[1])
            done = np.unique(part[1])
        queue = plan.queue(batch, done=done)
        if steer is not None:
            steer.attach(queue)
        full = sum(-(-n // batch) for n in plan.sizes)
        saved = len(parts)
        if part is not None:
            yield Resumed(part[0], full - queue.remaining_batches())
        for b in engine.iter_prompt_batches(
            rgb8, model, settings, embedding=embedding, queue=queue, plan=plan
        ):
            parts.append(b.raw)
            rows.append(b.rows)
            yield BatchDone(b.index, b.total, b.raw, b.served)
    except BaseException:
        if cache is not None and len(parts) > saved:  # keep the work done
            cache.save_partial(key, RawMasks.concat(parts), np.concatenate(rows))
        if cache is not None and not stored:
            cache.save_embedding(key, embedding)
        raise
    every = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    raw = RawMasks.concat(parts).take(np.argsort(every, kind="stable"))
    if cache is not None:
        cache.save(key, raw)
        if not stored:
            cache.save_embedding(key, embedding)
        cache.drop_partial(key)
    return raw


def drain(
    events: Generator[RunEvent, None, RawMasks],
    on_event: Callable[[RunEvent], Any] | None = None,
) -> RawMasks:
    """Run a pipeline generator to its end; return its result."""
    while True:
        try:
            ev = next(events)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        if on_event is not None:
            on_event(ev)


def propose_boxes(
    image: np.ndarray,
    model: Any,
    settings: Settings | None = None,
    *,
    progress: Callable[[int, int], Any] | None = None,
    cache: CandidateCache | None = None,
    **overrides: Any,
) -> Candidates:
    """Candidate boxes for an image: MobileSAM's "segment everything".

    Parameters
    ----------
    image : numpy.ndarray
        2D grayscale, H x W x 3 or H x W x 4, any numeric dtype (mapped to
        8-bit RGB over its full range; see :func:`~napari_samboxes.image.to_rgb8`).
    model : SamModel
        From :func:`~napari_samboxes.model.load_model`.
    settings : Settings, optional
        Default :data:`~napari_samboxes.settings.DEFAULTS`; keyword
        ``overrides`` (``points_per_side=16``, ...) change single fields.
        Same meaning as in ``mobile_sam.SamAutomaticMaskGenerator``.
    progress : callable, optional
        Called as ``progress(done_batches, n_batches)`` after each batch.

    Returns
    -------
    Candidates
        Sorted by area, smallest first; the same set as the reference
        generator returns for the same settings.
    """
    s = (settings or DEFAULTS).with_(**overrides) if overrides else settings or DEFAULTS

    def report(ev: RunEvent) -> None:
        if progress is not None and isinstance(ev, BatchDone):
            progress(ev.index + 1, ev.total)

    raw = drain(raw_results(to_rgb8(image), s, cache=cache, model=model), report)
    return raw.candidates(s)


def precompute(
    paths: Sequence[str | Path], template: RunRequest, cache: CandidateCache
) -> Generator[RunEvent, None, None]:
    """Fill the cache for image files (folder mode's look-ahead).

    Uses ``template``'s checkpoint, device and settings. Yields after every
    batch, so that a worker can stop it within one batch; an image that
    cannot be read or segmented is skipped (the user sees the error when
    the image is shown).
    """
    from .imread import read_image

    for path in paths:
        ok = True
        try:
            rgb8 = to_rgb8(read_image(path))
            yield from raw_results(
                rgb8,
                template.settings,
                template.checkpoint,
                template.device,
                cache=cache,
            )
        except (OSError, ValueError, RuntimeError, MemoryError):
            ok = False
        yield Precomputed(Path(path), ok)
