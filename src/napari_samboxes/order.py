"""The order in which a run's prompts are decoded: coarse to fine, clicks first.

The reference runs the point grid row by row, so the first candidates only
cover the top of the image. Here:

* :func:`coarse_to_fine` orders an ``n x n`` grid so that every prefix
  covers the whole image evenly: first a centred lattice of every 16th (8th,
  4th, ...) point in each direction, then the points that refine it, down to
  every point; within a lattice the new points come in reversed Morton
  order, so even half a lattice is spread over the image;
* :class:`PromptQueue` hands out the batches, crop after crop, and when
  :meth:`PromptQueue.prefer` was called (a click where no candidate holds
  the point) the next batch is the not-yet-run prompts nearest the clicks.
  A prompt is never run twice, and a queue can start with prompts already
  done (a run resumed from a partial cache entry).

The order changes only when masks arrive, never which: the raw results are
put back in the grid's order (:func:`~napari_samboxes.engine.
iter_prompt_batches`'s ``prompts`` say whose masks each batch holds)
before thresholds and NMS, so the final candidates are those of a run in
grid order.

No napari or Qt; thread-safe (the UI thread calls :meth:`PromptQueue.prefer`
while a worker takes batches).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Batch", "PromptQueue", "Steer", "coarse_to_fine"]


def _bit_reverse(v: np.ndarray, bits: int) -> np.ndarray:
    out = np.zeros_like(v)
    for b in range(bits):
        out |= ((v >> b) & 1) << (bits - 1 - b)
    return out


def _spread(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Order of lattice points (integer row, column) by reversed Morton code:
    every prefix is spread over the lattice."""
    if len(rows) == 0:
        return np.zeros(0, dtype=np.int64)
    bits = int(max(rows.max(), cols.max())).bit_length() or 1
    z = np.zeros(len(rows), dtype=np.int64)
    for b in range(bits):
        z |= ((rows >> b) & 1) << (2 * b + 1)
        z |= ((cols >> b) & 1) << (2 * b)
    return np.lexsort((rows, cols, _bit_reverse(z, 2 * bits)))


def _strides(n: int) -> list[int]:
    """Lattice strides, coarse to fine: the largest power of two with at
    least two points per side, down to 1."""
    s = 1
    while 2 * s * 2 <= n:
        s *= 2
    out = []
    while s >= 1:
        out.append(s)
        s //= 2
    return out


def _offset(n: int, strides: list[int]) -> int:
    """The coarsest lattice's offset: nested lattices (stride ``s`` at
    offset ``o % s``) as centred as they can be, the coarse ones first."""

    def lopsided(o: int) -> list[int]:
        out = []
        for s in strides:
            first = o % s
            last = first + (n - 1 - first) // s * s
            out.append(abs(first - (n - 1 - last)))
        return out

    return min(range(strides[0]), key=lopsided)


def coarse_to_fine(n: int) -> np.ndarray:
    """A permutation of the ``n * n`` grid indices (row-major, as
    ``build_point_grid``: index ``row * n + column``), coarse to fine.

    Nested lattices of stride ``s = 2**k`` (the largest with at least two
    points per side, down to 1), as centred in the grid as nesting allows;
    each adds the points not in the one before, in reversed Morton order.
    """
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    strides = _strides(n)
    top = _offset(n, strides)
    taken = np.zeros(n * n, dtype=bool)
    order: list[np.ndarray] = []
    for s in strides:
        lat = np.arange(top % s, n, s)
        rr, cc = np.meshgrid(lat, lat, indexing="ij")
        r, c = rr.ravel(), cc.ravel()
        idx = r * n + c
        new = ~taken[idx]
        r, c, idx = r[new], c[new], idx[new]
        order.append(idx[_spread(r // s, c // s)])
        taken[idx] = True
    if not taken.all():  # the rows and columns outside the finest lattice
        rest = np.flatnonzero(~taken)
        order.append(rest[_spread(rest // n, rest % n)])
    return np.concatenate(order)


@dataclass(frozen=True)
class Batch:
    """One batch a worker decodes.

    Attributes
    ----------
    crop : int
        Index of the crop (in the run's crop plan) the prompts belong to.
    prompts : numpy.ndarray
        Their global indices (crop after crop, grid order within a crop).
    served : int
        The number of :meth:`PromptQueue.prefer` requests answered so far,
        this batch included (0 while none was made).
    """

    crop: int
    prompts: np.ndarray
    served: int


class PromptQueue:
    """The prompts of one run still to decode, and the order they come in.

    Parameters
    ----------
    crop_sizes : sequence of int
        Prompts per crop, in the crop plan's order; prompt ``i`` of crop
        ``k`` has the global index ``sum(crop_sizes[:k]) + i``.
    points : numpy.ndarray
        (N, 2) every prompt's (x, y) in image coordinates (for clicks).
    grid_sides : sequence of int
        Each crop's grid side (``n`` of its ``n x n`` grid): its prompts
        run coarse to fine. ``None``: grid order (as the reference).
    crop_boxes : numpy.ndarray, optional
        (K, 4) xyxy of each crop; a click prefers the first crop holding it.
    batch : int
        Prompts per batch.
    done : array of int, optional
        Global indices already decoded (a resumed run): never handed out.
    """

    def __init__(
        self,
        crop_sizes: Sequence[int],
        points: np.ndarray,
        grid_sides: Sequence[int] | None,
        batch: int,
        crop_boxes: np.ndarray | None = None,
        done: np.ndarray | None = None,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.batch = int(batch)
        self.points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        sizes = [int(v) for v in crop_sizes]
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        if starts[-1] != len(self.points):
            raise ValueError("crop_sizes do not add up to the number of points")
        self.crop_boxes = (
            None if crop_boxes is None else np.asarray(crop_boxes).reshape(-1, 4)
        )
        #: per crop, its global indices in the order they run
        self._todo: list[list[int]] = []
        finished = np.zeros(len(self.points), dtype=bool)
        if done is not None and len(done):
            finished[np.asarray(done, dtype=np.int64)] = True
        for k, size in enumerate(sizes):
            local = np.arange(size, dtype=np.int64)
            if grid_sides is not None and grid_sides[k] ** 2 == size:
                local = coarse_to_fine(int(grid_sides[k]))
            glob = starts[k] + local
            self._todo.append([int(i) for i in glob if not finished[i]])
        self._lock = threading.Lock()
        self._wanted: list[np.ndarray] = []
        self._requests = 0
        self._served = 0
        self.batches_taken = 0

    # -- the UI thread -------------------------------------------------------
    def prefer(self, points_xy: np.ndarray) -> int:
        """Ask for the prompts nearest these points (x, y) next; returns the
        request's number (see :attr:`Batch.served`)."""
        pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
        with self._lock:
            self._wanted.append(pts)
            self._requests += 1
            return self._requests

    @property
    def served(self) -> int:
        """How many :meth:`prefer` requests a handed-out batch answered."""
        with self._lock:
            return self._served

    # -- the worker ------------------------------------------------------------
    @property
    def remaining(self) -> int:
        """Prompts not yet handed out."""
        with self._lock:
            return sum(len(t) for t in self._todo)

    def left(self, crop: int) -> int:
        """Prompts of ``crop`` not yet handed out."""
        with self._lock:
            return len(self._todo[crop])

    def remaining_batches(self) -> int:
        """Batches still to come (each crop's prompts in full batches, then
        one for its rest, whichever order they come in)."""
        with self._lock:
            return sum(-(-len(t) // self.batch) for t in self._todo)

    def next_batch(self) -> Batch | None:
        """The next batch, or None when every prompt was handed out."""
        with self._lock:
            if self._wanted:
                wanted = np.concatenate(self._wanted)
                self._wanted.clear()
                got = self._nearest(wanted)
                self._served = self._requests
                if got is not None:
                    self.batches_taken += 1
                    return got
            for k, todo in enumerate(self._todo):
                if todo:
                    take, self._todo[k] = todo[: self.batch], todo[self.batch :]
                    self.batches_taken += 1
                    return Batch(k, np.asarray(take, dtype=np.int64), self._served)
            return None

    def _nearest(self, wanted: np.ndarray) -> Batch | None:
        """The batch of not-yet-run prompts nearest ``wanted``, from the first
        crop with prompts left that holds one of them (else the first crop
        with prompts left)."""
        ks = [k for k, t in enumerate(self._todo) if t]
        if not ks:
            return None
        k = ks[0]
        if self.crop_boxes is not None:
            for j in ks:
                x0, y0, x1, y1 = self.crop_boxes[j]
                inside = (
                    (wanted[:, 0] >= x0)
                    & (wanted[:, 0] < x1)
                    & (wanted[:, 1] >= y0)
                    & (wanted[:, 1] < y1)
                )
                if inside.any():
                    k = j
                    break
        todo = np.asarray(self._todo[k], dtype=np.int64)
        d = np.linalg.norm(
            self.points[todo][:, None, :] - wanted[None, :, :], axis=-1
        ).min(axis=1)
        pick = np.sort(np.lexsort((todo, d))[: self.batch])  # ties: lower index
        chosen = todo[pick]
        keep = np.ones(len(todo), dtype=bool)
        keep[pick] = False
        self._todo[k] = [int(i) for i in todo[keep]]
        return Batch(k, chosen, self._requests)


class Steer:
    """Clicks for a run that may not have its :class:`PromptQueue` yet.

    The UI thread calls :meth:`prefer` at any time; requests made before
    the run has made its queue (the image is still being read or encoded)
    are handed to it when it :meth:`attach`\\ es. Request numbers are the
    queue's (see :attr:`Batch.served`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: PromptQueue | None = None
        self._early: list[np.ndarray] = []

    def prefer(self, points_xy: np.ndarray) -> int:
        """:meth:`PromptQueue.prefer`, now or once the queue exists."""
        with self._lock:
            if self._queue is not None:
                return self._queue.prefer(points_xy)
            self._early.append(np.asarray(points_xy, dtype=np.float64))
            return len(self._early)

    def attach(self, queue: PromptQueue) -> None:
        """The run's queue: earlier requests go to it, in order."""
        with self._lock:
            for pts in self._early:
                queue.prefer(pts)
            self._early.clear()
            self._queue = queue

    @property
    def remaining(self) -> int | None:
        """Prompts the queue has not handed out (None before it exists)."""
        with self._lock:
            return None if self._queue is None else self._queue.remaining
