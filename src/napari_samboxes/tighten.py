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
  folder (``napari-samboxes tighten DIR``).

No napari or Qt here; torch is imported lazily by the engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .boxes import Boxes
from .candidates import Candidates
from .geometry import level_to_full
from .settings import DEFAULTS, Settings

__all__ = [
    "PROMPT_WITH_POINTS",
    "TIGHTEN_MIN_IOU",
    "Prompter",
    "Tightened",
    "iou_matrix",
    "tighten_boxes",
    "tighten_folder",
]

#: A candidate replaces a box when their IoU is at least this.
TIGHTEN_MIN_IOU = 0.5
#: Whether a fallback prompt adds the two clicks as positive points to the
#: box they span. Measured on the test checkpoints, the points changed
#: nothing (see benchmarks/bench_pick.py), so the box alone is used.
PROMPT_WITH_POINTS = False

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

    Returns
    -------
    Tightened
        Labels and slices are kept; a snapped box gets the candidate's score
        and ``source="candidate"``, a prompted one the predicted IoU and
        ``source="prompt"``. Empty prompt masks leave the box as it was.
    """
    idx = np.arange(len(boxes)) if indices is None else np.asarray(indices, int)
    if slice_index is not None and len(idx) and boxes.slices.shape[1]:
        on = np.all(boxes.slices[idx] == np.asarray(slice_index, float), axis=1)
        idx = idx[on]
    new = boxes.xyxy[idx].copy()
    scores = boxes.scores[idx].copy()
    sources = [boxes.sources[i] for i in idx]
    if len(idx) and len(candidates):
        iou = iou_matrix(new, candidates.boxes)
        best = iou.argmax(axis=1)
        ok = iou[np.arange(len(idx)), best] >= min_iou
        new[ok] = candidates.boxes[best[ok]]
        scores[ok] = candidates.scores[best[ok]]
        for k in np.flatnonzero(ok):
            sources[k] = "candidate"
    else:
        ok = np.zeros(len(idx), dtype=bool)
    rest = np.flatnonzero(~ok)
    if prompt is not None and len(rest):
        got, ious = prompt(new[rest])
        good = ~is_empty(got)
        new[rest[good]] = np.asarray(got, dtype=np.float64)[good]
        scores[rest[good]] = np.asarray(ious, dtype=np.float64)[good]
        for k in rest[good]:
            sources[k] = "prompt"
    shift = np.abs(new - boxes.xyxy[idx]).max(axis=1) if len(idx) else np.zeros(0)
    out = boxes
    moved = np.flatnonzero(shift > 0)
    for k in moved:
        out = out.replaced(int(idx[k]), new[k], float(scores[k]), sources[k])
    return Tightened(
        out,
        len(moved),
        float(shift.max()) if len(moved) else 0.0,
        sum(sources[k] == "prompt" for k in moved),
    )


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
    """

    def __init__(
        self,
        request: Any,
        scale: tuple[float, float] = (1.0, 1.0),
        embedding: Any = None,
        cache: Any = None,
    ) -> None:
        self.request = request
        self.scale = np.asarray([*scale, *scale], dtype=np.float64)
        self.embedding = embedding
        self.cache = cache
        #: How many times this prompter ran the image encoder (0 or 1).
        self.encoded = 0
        #: Seconds the last prompt took (decoder only).
        self.last_seconds = float("inf")

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
        pixels; returns their mask boxes (level-0) and predicted IoUs."""
        from . import engine

        emb = self.ensure_embedding()
        t = time.perf_counter()
        b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        pts = None if points is None else np.asarray(points, float) / self.scale[:2]
        got, ious = engine.prompt_boxes(self.model(), emb, b / self.scale, pts)
        self.last_seconds = time.perf_counter() - t
        empty = is_empty(np.asarray(got, dtype=np.float64))
        out = level_to_full(got, self.scale)
        out[empty] = 0
        return out, np.asarray(ious, dtype=np.float64)


def tighten_folder(
    folder: str | Path,
    checkpoint: str | Path | None = None,
    device: str = "auto",
    settings: Settings = DEFAULTS,
    cache: Any = None,
    min_iou: float = TIGHTEN_MIN_IOU,
    progress: Callable[[str, Tightened], Any] | None = None,
) -> dict[str, Tightened]:
    """Tighten the boxes of every annotated image of a folder, in place.

    Each image's candidates come from the cache (or a run at ``settings``);
    boxes no candidate matches are prompted. Box tables are rewritten
    atomically, only where a box moved.

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
        Called with each image's name and result.

    Returns
    -------
    dict of str to Tightened
        Per annotated image file name.
    """
    from .dataset import Dataset
    from .image import to_rgb8
    from .imread import read_image
    from .pipeline import Encoded, RunRequest, drain, raw_results

    ds = Dataset(folder)
    out: dict[str, Tightened] = {}
    for path in ds.images:
        if ds.find_annotation(path) is None:
            continue
        boxes = Boxes.from_table(ds.load_boxes(path))
        if not len(boxes):
            continue
        rgb = to_rgb8(read_image(path))
        seen: list[Any] = []

        def keep(ev: Any, seen: list[Any] = seen) -> None:
            if isinstance(ev, Encoded):
                seen.append(ev.embedding)

        raw = drain(raw_results(rgb, settings, checkpoint, device, cache=cache), keep)
        cands = raw.candidates(settings)
        req = RunRequest(rgb, checkpoint, device, settings, rgb=True)
        prompter = Prompter(req, embedding=seen[0] if seen else None, cache=cache)
        result = tighten_boxes(boxes, cands, prompt=prompter, min_iou=min_iou)
        if result.moved:
            ds.save_boxes(path, result.boxes.to_table())
        out[path.name] = result
        if progress is not None:
            progress(path.name, result)
    return out
