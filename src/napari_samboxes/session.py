"""The annotation session: candidates and boxes of the shown image, undo.

Plain Python (no napari, no Qt): the widget translates layer events into
calls here and renders what the calls return. Everything a user can do to
the boxes is an operation on :class:`Session` that returns a
:class:`Change` (the new boxes and a message), and every change can be
undone.

* **Candidates.** The committed candidates of the image (raw per-mask
  results, settings, slice, level scale) and at most one pending run,
  which streams batches and ends with :meth:`Session.commit` or
  :meth:`Session.rollback` (the committed candidates come back).
* **Boxes.** The boxes of each image of the session, each with its own
  undo history (kept while the user moves between images). Every edit
  acts on the current image unless it names another one (``key=``): an
  edit made in the layer of an image that is not the current one goes to
  that image. Every :class:`Change` names the image it changed.
* **Time and actions.** Each box the annotator makes is stamped with the
  time it was made, the actions that made it and the session's id (the
  box table's ``created``, ``actions`` and ``session`` columns, see
  :mod:`napari_samboxes.formats.boxtable`): a pick counts its clicks, a
  box drawn or pasted in the layer counts 1, and every later step,
  relabel, move or accepted suggestion adds 1. Boxes from files keep
  whatever they had (nothing, for boxes made elsewhere).
* **Islands.** When the picked candidate's mask (its ``mask`` cell,
  computed after the pick) has detached fragments that make its box
  larger, ``[`` first offers the box of the mask's largest connected part
  (source ``island``), then the candidates below.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from .boxes import Boxes
from .candidates import Candidates, RawMasks
from .formats.boxtable import (
    ACTIONS_COLUMN,
    CREATED_COLUMN,
    SESSION_COLUMN,
    time_cell,
)
from .formats.columns import MASK_COLUMN, PROMPT_COLUMN, prompt_cells
from .formats.rle import cell_box
from .geometry import level_to_full
from .select import containing, island, select_box
from .settings import DEFAULTS, Settings

__all__ = [
    "Change",
    "CandidateSet",
    "PickResult",
    "Session",
    "UNDO_LEVELS",
    "new_session_id",
]

#: Undo levels kept per image.
UNDO_LEVELS = 200


def new_session_id(epoch_s: float) -> str:
    """An annotation session's id: its start (UTC, to the second) and four
    random hex digits, e.g. ``20261128T101503Z-3fa2``."""
    start = datetime.fromtimestamp(float(epoch_s), tz=timezone.utc)
    return f"{start:%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class Change:
    """What an operation did: the boxes after it, the image they belong to
    (its session key) and a message for the user."""

    boxes: Boxes
    message: str = ""
    changed: bool = True
    key: str = ""


@dataclass(frozen=True)
class PickResult:
    """The outcome of :meth:`Session.pick`.

    ``change`` is None when nothing was added; ``reason`` then says why.
    ``span`` is the box the points span (x_min, y_min, x_max, y_max): what
    a prompt fallback can ask the model for when no candidate holds them;
    ``prompt`` is True exactly then (a run ended, or is going, on this
    slice, and no candidate contains every point).
    """

    change: Change | None
    reason: str = ""
    span: tuple[float, float, float, float] | None = None
    prompt: bool = False


@dataclass(frozen=True)
class CandidateSet:
    """Raw results of one run and where they belong.

    ``scale`` is the (x, y) size of a segmented pixel in level-0 pixels
    (multiscale images are segmented at a coarser level).
    """

    raw: RawMasks
    slice_index: tuple[int, ...] = ()
    scale: tuple[float, float] = (1.0, 1.0)

    def filtered(self, settings: Settings, nms: bool = True) -> Candidates:
        """Candidates at ``settings``' thresholds, in level-0 pixels
        (``nms=False``: before NMS, as a run still streaming shows them)."""
        c = self.raw.candidates(settings, nms=nms)
        if self.scale == (1.0, 1.0) or not len(c):
            return c
        return Candidates(
            self.from_level(c.boxes), c.areas, c.scores, c.stability, c.points
        )

    def from_level(self, xyxy: np.ndarray) -> np.ndarray:
        """Boxes (N, 4) in pixels of the segmented level -> level-0 pixels."""
        return level_to_full(xyxy, self.scale)

    def to_level(self, xyxy: np.ndarray) -> np.ndarray:
        """Boxes (N, 4) in level-0 pixels -> pixels of the segmented level."""
        sx, sy = self.scale
        return np.asarray(xyxy, dtype=np.float64).reshape(-1, 4) / [sx, sy, sx, sy]


@dataclass
class _Whole:
    """The candidate an island came from: its box, score and cells."""

    xyxy: np.ndarray
    score: float
    cells: dict[str, str]


@dataclass
class _LastPick:
    points: np.ndarray  # (K, 2) x, y
    row: int  # the box it made
    xyxy: np.ndarray  # that box, to notice later edits
    whole: _Whole | None = None  # when the box is an island of a candidate


@dataclass
class _ImageBoxes:
    boxes: Boxes = field(default_factory=Boxes)
    undo: list[Boxes] = field(default_factory=list)
    redo: list[Boxes] = field(default_factory=list)
    last_pick: _LastPick | None = None


class Session:
    """State of an annotation session (see the module docstring).

    Parameters
    ----------
    settings : Settings
        Run settings; thresholds can be changed later.
    clock : callable, optional
        Seconds since the epoch (default :func:`time.time`): when boxes are
        made.
    session_id : str, optional
        The ``session`` cell of the boxes made here (default: from the
        start time, :func:`new_session_id`).
    """

    def __init__(
        self,
        settings: Settings = DEFAULTS,
        clock: Callable[[], float] | None = None,
        session_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock if clock is not None else time.time
        #: The ``session`` cell of every box made in this session.
        self.session_id = session_id or new_session_id(self.clock())
        self.committed: CandidateSet | None = None
        self.pending: CandidateSet | None = None
        self._pending_parts: list[RawMasks] = []
        self._candidates = Candidates.empty()
        self._images: dict[str, _ImageBoxes] = {}
        self.image_key = ""
        self._images[""] = _ImageBoxes()
        #: The image embedding of the candidates shown (for prompts), if known.
        self.embedding: Any = None
        self._committed_embedding: Any = None

    # ------------------------------------------------------------------
    # candidates
    @property
    def candidates(self) -> Candidates:
        """The candidates shown: the pending run's so far, else the committed."""
        return self._candidates

    @property
    def running(self) -> bool:
        """Whether a run is pending."""
        return self.pending is not None

    def begin_run(
        self, slice_index: Sequence[int] = (), scale: tuple[float, float] = (1.0, 1.0)
    ) -> None:
        """Start a pending run (its candidates replace the shown ones as
        batches arrive); refused while one is pending."""
        if self.pending is not None:
            raise RuntimeError("a run is already going; cancel it first")
        self.pending = CandidateSet(RawMasks.empty(), tuple(slice_index), scale)
        self._pending_parts = []
        self._committed_embedding, self.embedding = self.embedding, None

    def add_batch(self, part: RawMasks) -> Candidates:
        """Add one batch of the pending run; returns the candidates so far."""
        if self.pending is None:
            raise RuntimeError("no run is pending")
        self._pending_parts.append(part)
        return self._set_pending(RawMasks.concat(self._pending_parts))

    def _set_pending(self, raw: RawMasks) -> Candidates:
        assert self.pending is not None
        self.pending = CandidateSet(raw, self.pending.slice_index, self.pending.scale)
        # a streaming run's candidates are shown before NMS (see
        # RawMasks.candidates): the final set's boxes appear as soon as
        # their prompts ran; commit applies NMS
        self._candidates = self.pending.filtered(self.settings, nms=False)
        return self._candidates

    def commit(self, raw: RawMasks | None = None) -> Candidates:
        """End the pending run successfully (``raw``: its complete results,
        e.g. from the cache); its candidates become the committed ones."""
        if self.pending is None:
            raise RuntimeError("no run is pending")
        if raw is not None:
            self._set_pending(raw)
        self.committed, self.pending = self.pending, None
        self._pending_parts = []
        return self._refilter()

    def rollback(self) -> Candidates:
        """Drop the pending run; the committed candidates (and their
        embedding) are shown again."""
        if self.pending is not None:
            self.embedding = self._committed_embedding
        self.pending = None
        self._pending_parts = []
        return self._refilter()

    def clear_candidates(self) -> None:
        """Forget all candidates (another image is shown)."""
        self.pending = None
        self.committed = None
        self._pending_parts = []
        self._candidates = Candidates.empty()
        self.embedding = self._committed_embedding = None

    @property
    def candidate_set(self) -> CandidateSet | None:
        """The run the shown candidates come from (pending, else committed)."""
        return self.pending or self.committed

    def set_thresholds(
        self,
        pred_iou_thresh: float,
        stability_score_thresh: float,
        box_nms_thresh: float,
    ) -> Candidates:
        """New thresholds (validated); candidates re-filtered, no model run."""
        self.settings = self.settings.with_(
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            box_nms_thresh=box_nms_thresh,
        )
        return self._refilter()

    def _refilter(self) -> Candidates:
        current = self.candidate_set
        self._candidates = (
            current.filtered(self.settings, nms=self.pending is None)
            if current
            else Candidates.empty()
        )
        return self._candidates

    @property
    def slice_index(self) -> tuple[int, ...]:
        """The slice of the candidates shown."""
        current = self.candidate_set
        return current.slice_index if current else ()

    # ------------------------------------------------------------------
    # images and their boxes
    def show_image(self, key: str, boxes: Boxes | None = None) -> Boxes:
        """Make ``key`` the current image. Its boxes and history are kept
        from an earlier visit; ``boxes`` (from disk) seeds a first visit."""
        if key not in self._images:
            self._images[key] = _ImageBoxes(boxes if boxes is not None else Boxes())
        self.image_key = key
        return self.boxes

    def forget(self, keys: list[str]) -> None:
        """Drop the boxes and history of images (their files are the truth
        again, e.g. when a folder is opened anew)."""
        for key in keys:
            if key != self.image_key:
                self._images.pop(key, None)

    def knows(self, key: str) -> bool:
        """Whether the session holds boxes for image ``key``."""
        return key in self._images

    def boxes_of(self, key: str) -> Boxes:
        """The boxes of image ``key`` (empty if it was never shown)."""
        img = self._images.get(key)
        return img.boxes if img is not None else Boxes()

    def _of(self, key: str | None) -> tuple[str, _ImageBoxes]:
        key = self.image_key if key is None else key
        if key not in self._images:
            self._images[key] = _ImageBoxes()
        return key, self._images[key]

    @property
    def _img(self) -> _ImageBoxes:
        return self._images[self.image_key]

    @property
    def boxes(self) -> Boxes:
        """The current image's boxes."""
        return self._img.boxes

    def _apply(
        self,
        new: Boxes,
        message: str = "",
        key: str | None = None,
        made: Sequence[int] = (),
        clicks: int = 1,
        touched: Sequence[int] = (),
    ) -> Change:
        """``new`` becomes the boxes of image ``key``, one undo step; the
        rows ``made`` are stamped (now, ``clicks`` actions, this session),
        the rows ``touched`` count one action more."""
        key, img = self._of(key)
        if new == img.boxes:
            return Change(img.boxes, message, changed=False, key=key)
        new = self._stamped(new, made, clicks, touched)
        img.undo.append(img.boxes)
        del img.undo[:-UNDO_LEVELS]
        img.redo.clear()
        img.boxes = new
        return Change(new, message, key=key)

    def _stamped(
        self, boxes: Boxes, made: Sequence[int], clicks: int, touched: Sequence[int]
    ) -> Boxes:
        """``boxes`` with the time and action cells of new and edited rows."""
        if made:
            cells = {
                CREATED_COLUMN: time_cell(self.clock()),
                ACTIONS_COLUMN: str(int(clicks)),
                SESSION_COLUMN: self.session_id,
            }
            for i in made:
                boxes = boxes.with_cells(int(i), cells)
        for i in set(touched) - set(made):
            n = boxes.cell(ACTIONS_COLUMN, int(i)).strip()
            if n.isdigit():  # boxes made elsewhere are not counted
                boxes = boxes.with_cells(int(i), {ACTIONS_COLUMN: str(int(n) + 1)})
        return boxes

    def add(
        self, xyxy: Sequence[float], label: str, actions: int = 1, **fields: Any
    ) -> Change:
        """Add one box to the current image, made with ``actions`` actions;
        ``fields`` as :meth:`Boxes.added` (``score``, ``source``, default
        "hand", ``slice_index``, ``cells``)."""
        fields.setdefault("source", "hand")
        new = self.boxes.added(xyxy, label, **fields)
        return self._apply(new, f"added '{label}'", made=[len(new) - 1], clicks=actions)

    def delete(self, indices: Sequence[int], key: str | None = None) -> Change:
        """Delete boxes (of the current image, or of image ``key``)."""
        _, img = self._of(key)
        n = len({int(i) for i in indices})
        word = "box" if n == 1 else "boxes"
        return self._apply(img.boxes.without(indices), f"deleted {n} {word}", key)

    def relabel(
        self, indices: Sequence[int], label: str, key: str | None = None
    ) -> Change:
        """Give boxes another label (of the current image, or of ``key``)."""
        _, img = self._of(key)
        new = img.boxes.relabeled(indices, label)
        return self._apply(
            new,
            f"{len(indices)} box(es) now '{label}'",
            key,
            touched=new.changes_from(img.boxes)[1],
        )

    def replace_all(
        self, boxes: Boxes, message: str = "edited", key: str | None = None
    ) -> Change:
        """Replace the boxes (an edit made in the layer), as one undo step.

        Boxes it adds (drawn or pasted) are made with one action each
        (not those with a time already, nor imported ones); boxes it moves
        or relabels count one action more."""
        _, img = self._of(key)
        added, touched = boxes.changes_from(img.boxes)
        made = [
            i
            for i in added
            if boxes.sources[i] != "import" and not boxes.cell(CREATED_COLUMN, i)
        ]
        return self._apply(boxes, message, key, made=made, touched=touched)

    def move(
        self, row: int, xyxy: Sequence[float], message: str = "", key: str | None = None
    ) -> Change:
        """Move box ``row`` to ``xyxy`` (an accepted suggestion), one undo
        step, one action more.

        The box of a candidate (of the current image) takes its score and
        prompt (source ``candidate``); the box of the largest part of the
        box's own mask takes that part's mask (source ``island``); any other
        box is a hand box from then on.
        """
        key, img = self._of(key)
        boxes = img.boxes
        box = np.asarray(xyxy, dtype=np.float64).reshape(4)
        c = self._candidates
        hit = (
            np.flatnonzero(np.all(c.boxes == box, axis=1))
            if key == self.image_key and len(c)
            else np.zeros(0, dtype=int)
        )
        part = self._island(boxes, row)
        if len(hit):
            j = int(hit[0])
            sc = self.candidate_set.scale if self.candidate_set else (1.0, 1.0)
            cells = prompt_cells([c.points[j]], None, sc)
            new = boxes.replaced(row, box, float(c.scores[j]), "candidate", cells)
        elif part is not None and np.array_equal(part[0], box):
            cells = {
                PROMPT_COLUMN: boxes.cell(PROMPT_COLUMN, row),
                MASK_COLUMN: part[1],
            }
            new = boxes.replaced(row, box, float(boxes.scores[row]), "island", cells)
        else:
            new = boxes.replaced(row, box, float("nan"), "hand")
        text = message or f"box {row + 1} moved"
        return self._apply(new, text, key, touched=[row])

    @staticmethod
    def _island(boxes: Boxes, row: int) -> tuple[np.ndarray, str] | None:
        """The largest part of box ``row``'s mask (when the mask fits the box
        and has fragments that make the box larger), else None."""
        cell = boxes.cell(MASK_COLUMN, row)
        if not cell or cell_box(cell) != tuple(int(v) for v in boxes.xyxy[row]):
            return None
        return island(cell)

    def add_prompted(
        self,
        xyxy: Sequence[float],
        iou: float,
        label: str,
        message: str = "",
        prompt_box: Sequence[float] | None = None,
        prompt_points: Sequence[Sequence[float]] = (),
        clicks: int = 2,
    ) -> Change:
        """Add the box of a prompt fallback (``source="prompt"``, its
        predicted IoU as score) on the candidates' slice, made with
        ``clicks`` actions. The prompt (box, points x, y) is kept for its
        mask (:mod:`~napari_samboxes.masks`)."""
        sc = self.candidate_set.scale if self.candidate_set else (1.0, 1.0)
        kw = {"slice_index": self.slice_index, "source": "prompt", "score": iou}
        cells = (
            {} if prompt_box is None else prompt_cells(prompt_points, prompt_box, sc)
        )
        kw["cells"] = cells
        change = self.add(xyxy, label, actions=clicks, **kw)
        msg = message or f"added '{label}' from a box prompt"
        return Change(change.boxes, msg, change.changed, change.key)

    def set_masks(self, before: Boxes, after: Boxes, key: str | None = None) -> Change:
        """Masks computed in the background for ``before`` (the same boxes
        with their ``mask`` cells): no undo step, and nothing when the boxes
        changed meanwhile."""
        key, img = self._of(key)
        if img.boxes is not before or len(after) != len(before):
            return Change(img.boxes, "", changed=False, key=key)
        img.boxes = after
        return Change(after, "", key=key)

    def undo(self, key: str | None = None) -> Change:
        """Undo the last change of the current image (or of image ``key``)."""
        return self._travel(back=True, key=key)

    def redo(self, key: str | None = None) -> Change:
        """Redo the last undone change."""
        return self._travel(back=False, key=key)

    def _travel(self, back: bool, key: str | None) -> Change:
        key, img = self._of(key)
        src, dst = (img.undo, img.redo) if back else (img.redo, img.undo)
        if not src:
            word = "undo" if back else "redo"
            return Change(img.boxes, f"nothing to {word}", changed=False, key=key)
        dst.append(img.boxes)
        img.boxes = src.pop()
        img.last_pick = None
        return Change(img.boxes, "undone" if back else "redone", key=key)

    # ------------------------------------------------------------------
    # picking
    def preview(self, points_xy: np.ndarray) -> np.ndarray | None:
        """The box a pick at ``points_xy`` would give (xyxy), or None."""
        i = select_box(self._candidates, points_xy)
        return None if i is None else self._candidates.boxes[i]

    def pick(
        self, points_xy: np.ndarray, label: str, slice_index: Sequence[int] = ()
    ) -> PickResult:
        """Add the smallest candidate containing every point (x, y)."""
        pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
        span = (*pts.min(axis=0), *pts.max(axis=0))
        if self.candidate_set is None:
            return PickResult(None, "no candidates yet; press Run first", span)
        if tuple(int(v) for v in slice_index) != tuple(self.slice_index):
            return PickResult(
                None,
                f"the candidates are for slice {self.slice_index}, the points on "
                f"{tuple(slice_index)}; press Run on this slice",
            )
        i = select_box(self._candidates, pts)
        if i is None:
            why = "no candidate box contains both points"
            return PickResult(None, why, span, prompt=True)
        c, cset = self._candidates, self.candidate_set
        cells = prompt_cells([c.points[i]], None, cset.scale)
        score, box = float(c.scores[i]), c.boxes[i]
        change = self._apply(
            self.boxes.added(box, label, score, "candidate", self.slice_index, cells),
            f"picked '{label}'",
            made=[len(self.boxes)],
            clicks=len(pts),
        )
        self._img.last_pick = _LastPick(pts, len(self.boxes) - 1, c.boxes[i].copy())
        return PickResult(change)

    @property
    def last_pick(self) -> tuple[int, np.ndarray] | None:
        """The shown image's last picked box: its row and xyxy (None if none)."""
        lp = self._img.last_pick
        return None if lp is None else (lp.row, lp.xyxy.copy())

    def refine(self, row: int, xyxy: np.ndarray) -> Change | None:
        """A pick made while a run streamed (box ``row``, then ``xyxy``),
        once the run is complete: replaced by the box a pick at the same
        points gives now, if that differs and the box is where it was
        picked (not stepped, moved, deleted or undone; a new label is kept).
        None when nothing changed."""
        img = self._img
        lp = img.last_pick
        if (
            lp is None
            or self.pending is not None
            or lp.row != row
            or row >= len(img.boxes)
            or not np.array_equal(lp.xyxy, xyxy)
            or not np.array_equal(img.boxes.xyxy[row], xyxy)
        ):
            return None
        c = self._candidates
        i = select_box(c, lp.points)
        if i is None or np.array_equal(c.boxes[i], xyxy):
            return None
        sc = self.candidate_set.scale if self.candidate_set else (1.0, 1.0)
        change = self._apply(
            img.boxes.replaced(
                row,
                c.boxes[i],
                float(c.scores[i]),
                "candidate",
                prompt_cells([c.points[i]], None, sc),
            ),
            "the box at your clicks, from the finished run",
        )
        img.last_pick = _LastPick(lp.points, row, c.boxes[i].copy())
        return change

    def step(self, direction: int) -> Change:
        """Replace the last picked box by the next larger (``+1``) or smaller
        (``-1``) candidate containing its points, keeping its label.

        A candidate whose mask (once computed) has detached fragments that
        make its box larger has the box of its largest connected part as
        its next smaller option (source ``island``); below that come the
        candidates below the candidate, and ``+1`` from the part is the
        candidate again.
        """
        img = self._img
        lp = img.last_pick
        if (
            lp is None
            or lp.row >= len(img.boxes)
            or not np.array_equal(img.boxes.xyxy[lp.row], lp.xyxy)
        ):
            return Change(
                img.boxes, "pick a box first, then step", False, self.image_key
            )
        whole = lp.whole
        if whole is not None and direction > 0:  # from the part to the whole
            return self._step_to(
                lp,
                img.boxes.replaced(
                    lp.row, whole.xyxy, whole.score, "candidate", whole.cells
                ),
                "the whole mask's box again (with its fragments)",
            )
        if whole is None and direction < 0:
            part = self._island(img.boxes, lp.row)
            if part is not None:
                b, row = img.boxes, lp.row
                keep = {k: b.cell(k, row) for k in (PROMPT_COLUMN, MASK_COLUMN)}
                score = float(b.scores[row])
                new = b.replaced(
                    row,
                    part[0],
                    score,
                    "island",
                    {PROMPT_COLUMN: keep[PROMPT_COLUMN], MASK_COLUMN: part[1]},
                )
                return self._step_to(
                    lp,
                    new,
                    "the mask's largest part, without its fragments (]: back)",
                    _Whole(lp.xyxy.copy(), score, keep),
                )
        c = self._candidates
        chain = np.flatnonzero(containing(c.boxes, lp.points))
        # candidates are sorted by area: the chain is ordered small to large
        base = lp.xyxy if whole is None else whole.xyxy
        now = np.flatnonzero(np.all(c.boxes[chain] == base, axis=1))
        pos = int(now[0]) if len(now) else (-1 if direction > 0 else len(chain))
        nxt = pos + (1 if direction > 0 else -1)
        if not 0 <= nxt < len(chain):
            which = "largest" if direction > 0 else "smallest"
            return Change(
                img.boxes, f"already the {which} box here", False, self.image_key
            )
        j, sc = chain[nxt], self.candidate_set.scale if self.candidate_set else (1, 1)
        return self._step_to(
            lp,
            img.boxes.replaced(
                lp.row,
                c.boxes[j],
                float(c.scores[j]),
                "candidate",
                prompt_cells([c.points[j]], None, sc),
            ),
            f"box {nxt + 1} of {len(chain)} around these points",
        )

    def _step_to(
        self, lp: _LastPick, new: Boxes, message: str, whole: _Whole | None = None
    ) -> Change:
        """A step of the last pick ``lp`` to the boxes ``new`` (one action)."""
        change = self._apply(new, message, touched=[lp.row])
        xyxy = new.xyxy[lp.row].copy()
        self._img.last_pick = _LastPick(lp.points, lp.row, xyxy, whole)
        return change
