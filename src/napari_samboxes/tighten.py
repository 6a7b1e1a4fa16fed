"""Tighten boxes with SAM, and box prompts on the image of a run.

* :func:`tighten_boxes` snaps boxes (hand-drawn, imported, picked) to the
  candidate with the highest IoU if that IoU is at least
  :data:`TIGHTEN_MIN_IOU`, else to the box of a SAM box prompt. The choice
  is vectorised numpy; prompting is a callable, so the logic runs without a
  model in tests.
* :class:`Prompter` answers box prompts for the image the candidates came
  from, encoding it at most once (the run's embedding, else the cache's,
  else one encode that is kept).
* :func:`tighten_folder` does the same for every annotated image of a
  folder (``napari-samboxes tighten DIR``), going on past images or tables
  it cannot read.

**Memory.** Whatever the number of boxes, memory stays bounded: boxes are
matched to candidates in blocks of at most :data:`MATCH_BLOCK` box x
candidate pairs (a few MB), and the boxes no candidate matches go to SAM's
decoder at most :func:`prompt_batch` per call: :data:`PROMPT_BATCH` (4) on
the CPU, :data:`GPU_PROMPT_BATCH` (32) on a GPU. One decoder call holds
about 28 MB per box prompt (the image embedding repeated per prompt, the
two-way transformer's tokens, the 256 x 256 upscaled masks, the mask
statistics), so a CPU call peaks at about 0.1 GB above the loaded model
(measured at 1024 px by ``benchmarks/bench_tighten_memory.py``; smaller
calls are also faster per box on a CPU: 44-52 ms for 1-4 boxes, 85 ms for
16 or 64), and a GPU call at about 0.9 GB of device memory (the same
tensors; not measured on a GPU here). Before, all unmatched boxes went to
one call: 1,000 boxes took over 12 GB. The boxes do not depend on the
batch size (each prompt is decoded on its own); predicted IoUs (the scores
of prompted boxes) agree to float32 rounding, as the CPU's matrix kernels
sum in another order for another batch size.

No napari or Qt here; torch is imported lazily by the engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .boxes import GEOMETRY_COLUMNS, Boxes
from .candidates import Candidates
from .geometry import level_to_full
from .settings import DEFAULTS, Settings

__all__ = [
    "MATCH_BLOCK",
    "GPU_PROMPT_BATCH",
    "PROMPT_BATCH",
    "PROMPT_WITH_POINTS",
    "TIGHTEN_MIN_IOU",
    "FolderTightened",
    "Prompter",
    "Tightened",
    "best_matches",
    "iou_matrix",
    "prompt_batch",
    "tighten_boxes",
    "tighten_folder",
]

#: A candidate replaces a box when their IoU is at least this.
TIGHTEN_MIN_IOU = 0.5
#: Whether a fallback prompt adds the two clicks as positive points to the
#: box they span. Measured on the test checkpoints, the points changed
#: nothing (see benchmarks/bench_pick.py), so the box alone is used.
PROMPT_WITH_POINTS = False
#: Box prompts per decoder call on the CPU: bounds the memory of a tighten
#: (about 28 MB per prompt, so about 0.1 GB per call; see the module
#: docstring).
PROMPT_BATCH = 4
#: Box prompts per decoder call on a GPU (about 0.9 GB of device memory).
GPU_PROMPT_BATCH = 32
#: Box x candidate pairs whose IoUs are computed at once (each of the few
#: float64 arrays of a block is 4 MB).
MATCH_BLOCK = 1 << 19

#: ``prompt(boxes_xyxy) -> (boxes_xyxy, ious)``, both in level-0 pixels.
PromptFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4).

    Boxes are inclusive pixel indices (xyxy), so a box ``[3, 3, 3, 3]``
    covers one pixel. Returns an (N, M) float array.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)[:, None]
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)[None]

    def side(lo: int, hi: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.clip(
            np.minimum(x[..., hi], y[..., hi]) - np.maximum(x[..., lo], y[..., lo]) + 1,
            0,
            None,
        )

    inter = side(0, 2, a, b) * side(1, 3, a, b)
    union = (
        side(0, 2, a, a) * side(1, 3, a, a)
        + side(0, 2, b, b) * side(1, 3, b, b)
        - inter
    )
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def prompt_batch(device: str) -> int:
    """Box prompts per decoder call on ``device`` (``cpu``, ``cuda``...)."""
    return PROMPT_BATCH if str(device) == "cpu" else GPU_PROMPT_BATCH


def best_matches(
    xyxy: np.ndarray, candidates_xyxy: np.ndarray, block: int = MATCH_BLOCK
) -> tuple[np.ndarray, np.ndarray]:
    """Each box's best candidate and their IoU, in bounded memory.

    The same as ``iou_matrix(xyxy, candidates_xyxy)``'s ``argmax`` and
    ``max`` along its rows, computed ``block // M`` boxes at a time.

    Parameters
    ----------
    xyxy, candidates_xyxy : numpy.ndarray
        (N, 4) boxes and (M, 4) candidate boxes, inclusive pixel indices.
    block : int
        Box x candidate pairs per step.

    Returns
    -------
    best : numpy.ndarray
        (N,) int index of the candidate with the highest IoU (the first
        such; 0 when there are no candidates).
    iou : numpy.ndarray
        (N,) float its IoU (0 when there are no candidates).
    """
    a = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    c = np.asarray(candidates_xyxy, dtype=np.float64).reshape(-1, 4)
    best = np.zeros(len(a), dtype=np.int64)
    iou = np.zeros(len(a), dtype=np.float64)
    if not len(c):
        return best, iou
    rows = max(1, block // len(c))
    for start in range(0, len(a), rows):
        m = iou_matrix(a[start : start + rows], c)
        b = m.argmax(axis=1)
        best[start : start + len(b)] = b
        iou[start : start + len(b)] = m[np.arange(len(b)), b]
    return best, iou


def is_empty(xyxy: np.ndarray) -> np.ndarray:
    """(N,) bool: boxes of empty prompt masks (the engine gives all zeros)."""
    return np.all(np.asarray(xyxy).reshape(-1, 4) == 0, axis=1)


@dataclass(frozen=True)
class Tightened:
    """The result of :func:`tighten_boxes`.

    ``moved`` boxes changed, by at most ``max_shift`` pixels (largest
    change of one coordinate); ``prompted`` of them came from a prompt.
    """

    boxes: Boxes
    moved: int
    max_shift: float
    prompted: int

    @property
    def message(self) -> str:
        """One line for the user."""
        if not self.moved:
            return "tighten: no box moved"
        return f"tightened {self.moved} box(es), by at most {self.max_shift:g} px" + (
            f" ({self.prompted} from a box prompt)" if self.prompted else ""
        )


def tighten_boxes(
    boxes: Boxes,
    candidates: Candidates,
    indices: Any = None,
    prompt: PromptFn | None = None,
    min_iou: float = TIGHTEN_MIN_IOU,
    slice_index: tuple[int, ...] | None = None,
    batch: int | None = None,
    progress: Callable[[int, int], Any] | None = None,
) -> Tightened:
    """Snap boxes to the best candidate, else to a box prompt's box.

    Parameters
    ----------
    boxes : Boxes
    candidates : Candidates
        In the same (level-0) pixels as ``boxes``.
    indices : sequence of int, optional
        The boxes to tighten (default: all).
    prompt : callable, optional
        Box prompts for boxes no candidate matches; without it they stay.
    min_iou : float
        The least IoU of a candidate that replaces a box.
    slice_index : tuple of int, optional
        Only boxes on this slice are tightened (the candidates' slice).
    batch : int, optional
        At most this many boxes per call of ``prompt`` (memory: see the
        module docstring); default: the prompt's own ``batch`` (a
        :class:`Prompter`'s, by device), else :data:`PROMPT_BATCH`. The
        boxes do not depend on it.
    progress : callable, optional
        ``progress(done, total)`` after each call of ``prompt``.

    Returns
    -------
    Tightened
        Labels and slices are kept; a snapped box gets the candidate's score
        and ``source="candidate"``, a prompted one the predicted IoU and
        ``source="prompt"``. Empty prompt masks leave the box as it was.
    """
    if batch is not None and batch < 1:
        raise ValueError(f"batch must be at least 1, not {batch}")
    idx = np.arange(len(boxes)) if indices is None else np.asarray(indices, int)
    if slice_index is not None and len(idx) and boxes.slices.shape[1]:
        on = np.all(boxes.slices[idx] == np.asarray(slice_index, float), axis=1)
        idx = idx[on]
    new = boxes.xyxy[idx].copy()
    scores = boxes.scores[idx].copy()
    sources = [boxes.sources[i] for i in idx]
    if len(idx) and len(candidates):
        best, iou = best_matches(new, candidates.boxes)
        ok = iou >= min_iou
        new[ok] = candidates.boxes[best[ok]]
        scores[ok] = candidates.scores[best[ok]]
        for k in np.flatnonzero(ok):
            sources[k] = "candidate"
    else:
        ok = np.zeros(len(idx), dtype=bool)
    rest = np.flatnonzero(~ok)
    if prompt is not None and len(rest):
        if batch is None:
            batch = int(getattr(prompt, "batch", None) or PROMPT_BATCH)
        for start in range(0, len(rest), batch):
            part = rest[start : start + batch]
            got, ious = prompt(new[part])
            got = np.asarray(got, dtype=np.float64).reshape(-1, 4)
            good = ~is_empty(got)
            new[part[good]] = got[good]
            scores[part[good]] = np.asarray(ious, dtype=np.float64)[good]
            for k in part[good]:
                sources[k] = "prompt"
            if progress is not None:
                progress(start + len(part), len(rest))
    shift = np.abs(new - boxes.xyxy[idx]).max(axis=1) if len(idx) else np.zeros(0)
    moved = np.flatnonzero(shift > 0)
    out = _moved(boxes, idx[moved], new[moved], scores[moved], sources, moved)
    return Tightened(
        out,
        len(moved),
        float(shift.max()) if len(moved) else 0.0,
        sum(sources[k] == "prompt" for k in moved),
    )


def _moved(
    boxes: Boxes,
    rows: np.ndarray,
    xyxy: np.ndarray,
    scores: np.ndarray,
    sources: list[str],
    which: np.ndarray,
) -> Boxes:
    """``boxes`` with ``rows`` moved to ``xyxy`` (score, source
    ``sources[which[k]]``), their geometry cells cleared: what
    :meth:`Boxes.replaced` does for each, in one copy (O(N), not O(N^2))."""
    if not len(rows):
        return boxes
    xy = boxes.xyxy.copy()
    xy[rows] = xyxy
    sc = boxes.scores.copy()
    sc[rows] = scores
    src = list(boxes.sources)
    extra = {k: list(v) for k, v in boxes.extra.items()}
    for k in GEOMETRY_COLUMNS:
        extra.setdefault(k, [""] * len(boxes))
    for r, k in zip(rows.tolist(), which.tolist(), strict=True):
        src[r] = sources[k]
        for col in GEOMETRY_COLUMNS:
            extra[col][r] = ""
    return Boxes(xy, boxes.labels, sc, tuple(src), boxes.slices, extra)


class Prompter:
    """Box prompts on the image of a run, encoding it at most once.

    Parameters
    ----------
    request : RunRequest
        The run the candidates came from (image data, checkpoint, device).
    scale : (float, float)
        Level-0 pixels per pixel of the segmented plane.
    embedding : Embedding, optional
        The run's embedding, if it is in memory.
    cache : CandidateCache, optional
        Consulted for a stored embedding (``load_embedding``) before encoding;
        an embedding computed here is stored (``save_embedding``) if it can.
    batch : int, optional
        At most this many prompts per decoder call (the memory bound);
        default :func:`prompt_batch` of the model's device. The boxes do
        not depend on it.
    """

    def __init__(
        self,
        request: Any,
        scale: tuple[float, float] = (1.0, 1.0),
        embedding: Any = None,
        cache: Any = None,
        batch: int | None = None,
    ) -> None:
        if batch is not None and batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        self.request = request
        self._batch = batch
        self.scale = np.asarray([*scale, *scale], dtype=np.float64)
        self.embedding = embedding
        self.cache = cache
        #: How many times this prompter ran the image encoder (0 or 1).
        self.encoded = 0
        #: Seconds the last prompt took (decoder only).
        self.last_seconds = float("inf")

    @property
    def batch(self) -> int:
        """Prompts per decoder call (by the model's device unless given;
        asking loads the model)."""
        if self._batch is None:
            self._batch = prompt_batch(self.model().device)
        return self._batch

    def model(self) -> Any:
        """The loaded model (loaded once per process, see ``get_model``)."""
        from .pipeline import get_model

        return get_model(self.request.checkpoint, self.request.device)

    def ensure_embedding(self) -> Any:
        """The embedding: kept, else from the cache, else encoded once."""
        if self.embedding is not None:
            return self.embedding
        from . import engine
        from .cache import cache_key
        from .image import extract_plane

        r = self.request
        fields = ("index", "rgb", "multiscale", "contrast_limits")
        plane = extract_plane(r.data, **{k: getattr(r, k) for k in fields})
        model = self.model()
        key = cache_key(plane.rgb8, model.digest, r.settings)
        load = getattr(self.cache, "load_embedding", None)
        if load is not None:
            self.embedding = load(key, device=model.device)
        if self.embedding is None:
            self.embedding = engine.encode_image(plane.rgb8, model)
            self.encoded += 1
            save = getattr(self.cache, "save_embedding", None)
            if save is not None:
                save(key, self.embedding)
        return self.embedding

    def __call__(
        self, boxes_xyxy: np.ndarray, points: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Prompt with boxes (and optional (K, P, 2) points), in level-0
        pixels; returns their mask boxes (level-0) and predicted IoUs.

        At most :attr:`batch` prompts go to the decoder at once.
        """
        from . import engine

        emb = self.ensure_embedding()
        model = self.model()
        t = time.perf_counter()
        b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4) / self.scale
        pts = None if points is None else np.asarray(points, float) / self.scale[:2]
        k = self.batch
        parts = [
            engine.prompt_boxes(
                model, emb, b[i : i + k], None if pts is None else pts[i : i + k]
            )
            for i in range(0, len(b), k)
        ]
        got = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, 4))
        ious = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
        self.last_seconds = time.perf_counter() - t
        empty = is_empty(np.asarray(got, dtype=np.float64))
        out = level_to_full(got, self.scale)
        out[empty] = 0
        return out, np.asarray(ious, dtype=np.float64)


@dataclass
class FolderTightened:
    """What :func:`tighten_folder` did.

    Attributes
    ----------
    results : dict of str to Tightened
        Per image tightened (its name in the folder).
    failed : dict of str to str
        Per image that could not be tightened: one line saying why.
    problems : list of str
        Entries of the folder skipped when listing it (links, say).
    """

    results: dict[str, Tightened] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def moved(self) -> int:
        """Boxes moved in all images."""
        return sum(r.moved for r in self.results.values())

    def __str__(self) -> str:
        text = f"{self.moved} box(es) moved in {len(self.results)} annotated image(s)"
        if self.failed:
            text += f"; {len(self.failed)} image(s) failed"
        return text


def _line(e: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(e).split()) or type(e).__name__


def tighten_folder(
    folder: str | Path,
    checkpoint: str | Path | None = None,
    device: str = "auto",
    settings: Settings = DEFAULTS,
    cache: Any = None,
    min_iou: float = TIGHTEN_MIN_IOU,
    progress: Callable[[str, Tightened], Any] | None = None,
    on_error: Callable[[str, str], Any] | None = None,
    batch: int | None = None,
    on_prompted: Callable[[int, int], Any] | None = None,
) -> FolderTightened:
    """Tighten the boxes of every annotated image of a folder, in place.

    Each image's candidates come from the cache (or a run at ``settings``);
    boxes no candidate matches are prompted, at most ``batch`` per decoder
    call (default by device, :func:`prompt_batch`: the memory bound, see
    the module docstring). Box tables are rewritten atomically, only where
    a box moved, and only if the file is still the one that was read.

    An image whose table or image cannot be read, or whose table changed
    on disk meanwhile, is left as it is and reported; the others go on. A
    checkpoint or device that cannot be loaded stops the whole run (its
    error is raised).

    Parameters
    ----------
    folder : str or Path
        A dataset folder (``DIR/annotations/<stem>.csv``).
    checkpoint, device : as for :func:`~napari_samboxes.load_model`
    settings : Settings
        Grid and thresholds of the candidates.
    cache : CandidateCache, optional
    min_iou : float
    progress : callable, optional
        Called with each tightened image's name and result.
    on_error : callable, optional
        Called with each failed image's name and one line saying why.
    batch : int, optional
        Box prompts per decoder call (default by device).
    on_prompted : callable, optional
        ``on_prompted(done, total)``: box prompts of the current image.

    Returns
    -------
    FolderTightened
    """
    from .dataset import ChangedOnDisk, Dataset
    from .pipeline import RunRequest, get_model

    ds = Dataset(folder)
    report = FolderTightened(problems=list(getattr(ds, "listing_problems", [])))

    def failed(name: str, why: str) -> None:
        report.failed[name] = why
        if on_error is not None:
            on_error(name, why)

    for path in ds.images:
        name = ds.name(path)
        if ds.find_annotation(path) is None:
            continue
        try:
            table, stamp = ds.load_boxes_stamped(path)
            boxes = Boxes.from_table(table)
        except (ValueError, OSError) as e:
            failed(name, f"cannot read its box table: {_line(e)}")
            continue
        if not len(boxes):
            continue
        model = get_model(checkpoint, device)  # failing here fails the run
        try:
            rgb = _read_rgb(path)
        except (ValueError, OSError, MemoryError) as e:
            failed(name, f"cannot read the image: {_line(e)}")
            continue
        try:
            result = _tighten_image(
                boxes,
                RunRequest(rgb, checkpoint, device, settings),
                model,
                cache,
                min_iou,
                batch,
                on_prompted,
            )
        except (ValueError, RuntimeError, MemoryError, OSError) as e:
            failed(name, f"cannot tighten: {type(e).__name__}: {_line(e)}")
            continue
        if result.moved:
            try:
                ds.save_boxes(path, result.boxes.to_table(), expect=stamp)
            except ChangedOnDisk:
                failed(
                    name,
                    "its box table changed on disk while it was tightened; "
                    "left as it is (run tighten again)",
                )
                continue
            except OSError as e:
                failed(name, f"cannot write its box table: {_line(e)}")
                continue
        report.results[name] = result
        if progress is not None:
            progress(name, result)
    return report


def _read_rgb(path: Path) -> np.ndarray:
    """An image file as 8-bit RGB."""
    from .image import to_rgb8
    from .imread import read_image

    return to_rgb8(read_image(path))


def _tighten_image(
    boxes: Boxes,
    request: Any,
    model: Any,
    cache: Any,
    min_iou: float,
    batch: int | None,
    on_prompted: Callable[[int, int], Any] | None,
) -> Tightened:
    """Candidates for one image (cached or run), then :func:`tighten_boxes`
    (``request``: the image as 8-bit RGB, the checkpoint, device and
    settings; ``model``: that checkpoint, loaded)."""
    from .pipeline import Encoded, RunError, drain, raw_results

    seen: list[Any] = []

    def keep(ev: Any) -> None:
        if isinstance(ev, Encoded):
            seen.append(ev.embedding)

    settings = request.settings
    try:
        raw = drain(raw_results(request.data, settings, cache=cache, model=model), keep)
    except RunError as e:
        raise RuntimeError(str(e)) from e
    cands = raw.candidates(settings)
    prompter = Prompter(
        request, embedding=seen[0] if seen else None, cache=cache, batch=batch
    )
    return tighten_boxes(
        boxes,
        cands,
        prompt=prompter,
        min_iou=min_iou,
        batch=batch,
        progress=on_prompted,
    )
