"""The simulated annotator: two-click boxes measured against ground truth.

No napari or Qt here (``napari-samboxes evaluate`` is the adapter);
matplotlib is imported lazily, by the two plots.

For every ground-truth box the annotator does what a user of the widget
does, through the same :class:`~napari_samboxes.session.Session` calls:

1. **Two clicks** (2 actions), by a fixed policy (:func:`click_points`):
   the points at 1/4 and 3/4 of the box's diagonal, from its top-left
   pixel to its bottom-right one. When the ground truth carries a mask
   that fits the box (a ``mask`` cell), each click moves to the mask
   pixel nearest to it, so both clicks are on the object.
2. ``Session.pick``: the smallest candidate holding both clicks. When no
   candidate holds them, the **prompt fallback** as the widget does it: a
   SAM box prompt with the box the clicks span
   (:class:`~napari_samboxes.tighten.Prompter`), added with
   ``Session.add_prompted`` unless SAM finds no object (then nothing:
   the user would draw the box by hand).
3. **Steps** (1 action each): ``Session.step(+1)`` (``]``, larger) from
   the pick to the end of the chain of nested candidates, and
   ``Session.step(-1)`` (``[``, smaller) from the pick the other way.

Each box the annotator sees is a *state* (actions so far, IoU with the
ground truth, the path: ``candidate``, ``step`` or ``prompt``). Per box:
the IoU of the first pick, the best IoU reachable (fewest actions among
equal IoUs) and the path that gave it (``none`` when no box came), and the
actions to reach IoU >= 0.9, 0.75 and 0.5 (None: not reachable). The
annotator knows which way to step (the fewest actions over both ways), as
in interactive segmentation's NoC@90. The box it keeps is the first to
reach 0.9, else the best one: its actions are the box's ``actions``.
IoU is that of inclusive pixel boxes
(:func:`~napari_samboxes.tighten.iou_matrix`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .boxes import Boxes
from .candidates import RawMasks
from .formats.columns import MASK_COLUMN
from .formats.errors import FormatError
from .formats.rle import cell_box, decode_cell
from .session import Session
from .settings import DEFAULTS, Settings
from .tighten import PROMPT_WITH_POINTS, Prompter, iou_matrix, is_empty

__all__ = [
    "BUDGETS",
    "CLICK_FRACTIONS",
    "GT_FORMATS",
    "PATHS",
    "THRESHOLDS",
    "BoxResult",
    "Evaluation",
    "Summary",
    "annotate_image",
    "click_points",
    "evaluate_boxes",
    "evaluate_folder",
    "evaluation_json",
    "plot_actions_curve",
    "plot_iou_histogram",
    "read_ground_truth",
    "summarize",
]

#: Where the clicks go along the box's diagonal.
CLICK_FRACTIONS = (0.25, 0.75)
#: The IoUs whose actions are counted.
THRESHOLDS = (0.9, 0.75, 0.5)
#: Action budgets of the summary (share of boxes at IoU >= 0.9 within).
BUDGETS = (2, 3, 5)
#: The paths that can give a box.
PATHS = ("candidate", "step", "prompt", "none")
#: Ground-truth formats (the readers of ``napari-samboxes import``).
GT_FORMATS = ("coco", "voc", "yolo")
#: The most steps tried each way from a pick.
MAX_STEPS = 50
#: Actions of the two clicks.
CLICKS = 2

Box = tuple[float, float, float, float]
#: ``prompt(boxes (1, 4), points (1, 2, 2) or None) -> (boxes, ious)``.
PromptFn = Callable[[np.ndarray, np.ndarray | None], tuple[np.ndarray, np.ndarray]]
#: ``masks(boxes, rows) -> boxes`` with the SAM masks of ``rows``
#: (:func:`~napari_samboxes.masks.fill_masks`).
MaskFn = Callable[[Boxes, list[int]], Boxes]


def click_points(box: Sequence[float], mask_cell: str = "") -> np.ndarray:
    """The two clicks (x, y) of the policy for a ground-truth box.

    Parameters
    ----------
    box : sequence of float
        Inclusive ``x_min, y_min, x_max, y_max``.
    mask_cell : str
        The box's ``mask`` cell; used when it fits the box.

    Returns
    -------
    numpy.ndarray
        (2, 2) float: the points at :data:`CLICK_FRACTIONS` of the diagonal
        from ``(x_min, y_min)`` to ``(x_max, y_max)``, each moved to the
        nearest mask pixel (first in row order among equals) if there is
        a mask.
    """
    b = np.asarray(box, dtype=np.float64).reshape(4)
    f = np.asarray(CLICK_FRACTIONS, dtype=np.float64)[:, None]
    pts = b[:2] + f * (b[2:] - b[:2])
    if mask_cell and cell_box(mask_cell) == tuple(int(v) for v in b):
        try:
            x0, y0, crop = decode_cell(mask_cell)
        except FormatError:
            return pts
        ys, xs = np.nonzero(crop)
        if len(xs):
            on = np.stack([xs + x0, ys + y0], axis=1).astype(np.float64)
            d = ((on[None] - pts[:, None]) ** 2).sum(axis=2)
            pts = on[np.argmin(d, axis=1)]
    return pts


@dataclass(frozen=True)
class BoxResult:
    """What the annotator reached for one ground-truth box.

    ``states`` are ``(actions, iou, path)`` of every box it saw; the other
    fields are read from them.
    """

    image: str
    index: int
    label: str
    gt: Box
    clicks: tuple[tuple[float, float], tuple[float, float]]
    states: tuple[tuple[int, float, str], ...]

    @property
    def first_iou(self) -> float:
        """IoU of the box the clicks gave (0 when none came)."""
        return self.states[0][1] if self.states else 0.0

    def _best(self) -> tuple[int, float, str]:
        if not self.states:
            return (CLICKS, 0.0, "none")
        return min(self.states, key=lambda s: (-s[1], s[0]))

    @property
    def best_iou(self) -> float:
        """The best IoU reachable."""
        return self._best()[1]

    @property
    def path(self) -> str:
        """The path of the best box (``none`` when no box came)."""
        return self._best()[2]

    def actions_to(self, iou: float) -> int | None:
        """The fewest actions to a box with IoU >= ``iou`` (None: never)."""
        ok = [a for a, v, _ in self.states if v >= iou - 1e-9]
        return min(ok) if ok else None

    @property
    def actions(self) -> int:
        """Actions to the box kept: the first at IoU >= 0.9, else the best."""
        got = self.actions_to(THRESHOLDS[0])
        return got if got is not None else self._best()[0]

    def as_dict(self) -> dict[str, Any]:
        """The JSON record of the box."""
        out: dict[str, Any] = {
            "image": self.image,
            "index": self.index,
            "label": self.label,
            "gt_box": list(self.gt),
            "clicks": [list(p) for p in self.clicks],
            "first_pick_iou": round(self.first_iou, 4),
            "first_pick_path": self.states[0][2] if self.states else "none",
            "best_reachable_iou": round(self.best_iou, 4),
            "path": self.path,
            "actions": self.actions,
        }
        for t in THRESHOLDS:
            got = self.actions_to(t)
            out[f"actions_to_iou_{t:g}"] = "not reachable" if got is None else got
        out["states"] = [[a, round(v, 4), p] for a, v, p in self.states]
        return out


def _iou(a: Any, b: Any) -> float:
    return float(iou_matrix(np.asarray(a), np.asarray(b))[0, 0])


def _fill(session: Session, masks: MaskFn | None) -> None:
    """The last pick's mask, as the widget computes it after a change."""
    lp = session.last_pick
    if masks is None or lp is None:
        return
    before = session.boxes
    if cell_box(before.cell(MASK_COLUMN, lp[0])) == tuple(int(v) for v in lp[1]):
        return  # it has its mask (a whole box back from its island)
    session.set_masks(before, masks(before, [lp[0]]))


def _island_below(session: Session, masks: MaskFn | None) -> np.ndarray | None:
    """The box ``[`` gives when it is the island of the box shown (the
    mask's largest part); the session is brought back with ``]``."""
    row = session.last_pick
    if row is None or not session.step(-1).changed:
        return None
    now = session.last_pick
    island = now[1] if now and session.boxes.sources[row[0]] == "island" else None
    session.step(+1)
    _fill(session, masks)
    return island


def _walk(
    session: Session, gt: Box, direction: int, masks: MaskFn | None
) -> list[tuple[int, float, str]]:
    """Step one way from the pick to the end of the chain; going up, also
    the island (``[``) of each box passed."""
    states = []
    seen = session.last_pick
    for k in range(1, MAX_STEPS + 1):
        change = session.step(direction)
        now = session.last_pick
        if not change.changed or now is None:
            break
        if seen is not None and np.array_equal(now[1], seen[1]):
            break  # an identical box (NMS off): no further box this way
        _fill(session, masks)
        states.append((CLICKS + k, _iou(now[1], gt), "step"))
        if direction > 0:
            part = _island_below(session, masks)
            if part is not None:
                states.append((CLICKS + k + 1, _iou(part, gt), "step"))
        seen = now
    return states


def _simulate(
    session: Session,
    gt: Box,
    label: str,
    mask_cell: str,
    prompt: PromptFn | None,
    masks: MaskFn | None,
) -> tuple[np.ndarray, list[tuple[int, float, str]]]:
    pts = click_points(gt, mask_cell)
    r = session.pick(pts, label)
    states: list[tuple[int, float, str]] = []
    if r.change is not None and session.last_pick is not None:
        _fill(session, masks)
        states.append((CLICKS, _iou(session.last_pick[1], gt), "candidate"))
        states += _walk(session, gt, +1, masks)
        session.pick(pts, label)  # pick again: the other way from the pick
        _fill(session, masks)
        states += _walk(session, gt, -1, masks)
    elif r.prompt and r.span is not None and prompt is not None:
        box = np.asarray(r.span, dtype=np.float64)[None]
        points = pts[None] if PROMPT_WITH_POINTS else None
        got, ious = prompt(box, points)
        if not is_empty(got)[0]:
            change = session.add_prompted(
                got[0],
                float(ious[0]),
                label,
                prompt_box=box[0],
                prompt_points=pts.tolist() if PROMPT_WITH_POINTS else (),
            )
            states.append((CLICKS, _iou(change.boxes.xyxy[-1], gt), "prompt"))
    return pts, states


def annotate_image(
    gt: Boxes,
    raw: RawMasks,
    settings: Settings = DEFAULTS,
    prompt: PromptFn | None = None,
    image: str = "",
    masks: MaskFn | None = None,
) -> list[BoxResult]:
    """Simulate the annotator on one image's ground truth.

    Parameters
    ----------
    gt : Boxes
        The ground-truth boxes (a ``mask`` cell, if any, guides the clicks).
    raw : RawMasks
        The image's raw run results; ``settings``' thresholds and NMS make
        the candidates, as in the widget.
    settings : Settings
    prompt : callable, optional
        SAM box prompts (a :class:`~napari_samboxes.tighten.Prompter`);
        without it the fallback gives nothing.
    image : str
        The image's name, for the results.
    masks : callable, optional
        SAM masks of picked boxes, computed after every pick and step as
        the widget does (:func:`~napari_samboxes.masks.fill_masks`), so
        that ``[`` offers the island of a mask with detached fragments;
        without it there are no islands.

    Returns
    -------
    list of BoxResult
        One per ground-truth box, in order.
    """
    session = Session(settings)
    session.begin_run()
    session.commit(raw)
    out = []
    for i in range(len(gt)):
        x0, y0, x1, y1 = (float(v) for v in gt.xyxy[i])
        box = (x0, y0, x1, y1)
        label, cell = gt.labels[i], gt.cell(MASK_COLUMN, i)
        pts, states = _simulate(session, box, label, cell, prompt, masks)
        (a, b), (c, d) = pts.tolist()
        out.append(BoxResult(image, i, label, box, ((a, b), (c, d)), tuple(states)))
    return out


@dataclass(frozen=True)
class Summary:
    """The figures of a set of boxes (see :func:`summarize`)."""

    boxes: int
    median_first_iou: float
    median_best_iou: float
    within: Mapping[int, float]
    mean_actions: float
    not_reachable: int
    paths: Mapping[str, int]

    def as_dict(self) -> dict[str, Any]:
        """The JSON record of the summary."""
        out: dict[str, Any] = {
            "boxes": self.boxes,
            "median_first_pick_iou": _r(self.median_first_iou),
            "median_best_reachable_iou": _r(self.median_best_iou),
        }
        for b, share in self.within.items():
            out[f"share_iou_0.9_within_{b}_actions"] = _r(share)
        out["mean_actions_per_box"] = _r(self.mean_actions)
        out["not_reachable_iou_0.9"] = self.not_reachable
        out["paths"] = dict(self.paths)
        return out


def _r(v: float) -> float | None:
    return None if math.isnan(v) else round(v, 4)


def summarize(results: Sequence[BoxResult]) -> Summary:
    """Median IoU of the first pick and of the best box, share of boxes at
    IoU >= 0.9 within each of :data:`BUDGETS` actions, mean actions per
    box, boxes where 0.9 is not reachable, boxes per path."""
    n = len(results)
    nan = float("nan")
    reach = [r.actions_to(THRESHOLDS[0]) for r in results]
    return Summary(
        n,
        float(np.median([r.first_iou for r in results])) if n else nan,
        float(np.median([r.best_iou for r in results])) if n else nan,
        {
            b: (sum(a is not None and a <= b for a in reach) / n if n else nan)
            for b in BUDGETS
        },
        float(np.mean([r.actions for r in results])) if n else nan,
        sum(a is None for a in reach),
        {p: sum(r.path == p for r in results) for p in PATHS},
    )


@dataclass
class Evaluation:
    """The results of one setting over a folder."""

    name: str
    settings: Settings
    results: list[BoxResult] = field(default_factory=list)

    @property
    def summary(self) -> Summary:
        """The summary of every box."""
        return summarize(self.results)

    def per_class(self) -> dict[str, Summary]:
        """The summary of each class, in name order."""
        labels = sorted({r.label for r in self.results})
        return {c: summarize([r for r in self.results if r.label == c]) for c in labels}

    def as_dict(self) -> dict[str, Any]:
        """The JSON record: name, settings, summary, per class, every box."""
        return {
            "name": self.name,
            "settings": self.settings.as_dict(),
            "summary": self.summary.as_dict(),
            "per_class": {c: s.as_dict() for c, s in self.per_class().items()},
            "boxes": [r.as_dict() for r in self.results],
        }


def evaluation_json(runs: Sequence[Evaluation], **about: Any) -> str:
    """The JSON document of :func:`evaluate_folder`'s results; ``about``
    (checkpoint, whether it is the official one...) goes on top."""
    doc = {
        "policy": (
            "two clicks at {} and {} of the ground-truth box's diagonal "
            "(nearest mask pixel when it has a mask); pick; steps with [ and ]; "
            "SAM box prompt when no candidate holds both clicks"
        ).format(*CLICK_FRACTIONS),
        "actions": "each click and each step is one action",
        **about,
        "runs": [r.as_dict() for r in runs],
    }
    return json.dumps(doc, indent=1, allow_nan=False) + "\n"


def read_ground_truth(
    src: str | Path, fmt: str, folder: str | Path
) -> tuple[dict[str, Boxes], list[str]]:
    """Ground-truth boxes of a folder's images, read by ``import``'s readers
    (:func:`~napari_samboxes.importing.read_sources`; nothing is written).

    Returns
    -------
    dict of str to Boxes, list of str
        Boxes per image name (its path in ``folder``, as
        :attr:`~napari_samboxes.dataset.Dataset.names`; images with a
        source file), and the importer's messages (files not matched,
        sizes that differ).

    Raises
    ------
    FormatError
        For a malformed source file.
    ValueError
        For an unknown format.
    """
    from .importing import read_sources

    if fmt.lower() not in GT_FORMATS:
        raise ValueError(f"unknown format {fmt!r}: choose one of {GT_FORMATS}")
    tables, summary = read_sources(src, fmt, folder)
    found = {name: Boxes.from_table(t) for name, t in tables.items()}
    return found, list(summary.messages)


class _Prompts(Prompter):
    """A :class:`Prompter` with the model already loaded."""

    def __init__(self, loaded: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loaded = loaded

    def model(self) -> Any:  # noqa: D102
        return self._loaded


def _runs_of(
    rgb: np.ndarray, variants: Mapping[str, Settings], model: Any, cache: Any
) -> Iterator[tuple[str, Settings, RawMasks, Any]]:
    from .pipeline import Encoded, drain, raw_results

    for name, s in variants.items():
        seen: list[Any] = []

        def keep(ev: Any, seen: list[Any] = seen) -> None:
            if isinstance(ev, Encoded):
                seen.append(ev.embedding)

        raw = drain(raw_results(rgb, s, cache=cache, model=model), keep)
        yield name, s, raw, seen[0] if seen else None


def evaluate_boxes(
    folder: str | Path,
    gt: Mapping[str, Boxes],
    variants: Mapping[str, Settings] | Settings = DEFAULTS,
    *,
    checkpoint: str | Path | None = None,
    device: str = "auto",
    cache: Any = None,
    model: Any = None,
    progress: Callable[[str], Any] | None = None,
) -> tuple[list[Evaluation], list[str]]:
    """Run the simulated annotator on ground-truth boxes of a folder's images.

    Parameters
    ----------
    folder : str or Path
        The image folder.
    gt : mapping of str to Boxes
        Ground-truth boxes per image file name (:func:`read_ground_truth`).
    variants : Settings or mapping of str to Settings
        The run settings; several (by name) are compared side by side.
    checkpoint, device : as for :func:`~napari_samboxes.load_model`
    cache : CandidateCache, optional
        Candidates and embeddings are read from it and stored in it.
    model : loaded model, optional
        Used instead of loading ``checkpoint``.
    progress : callable, optional
        Called with a line per image.

    Returns
    -------
    list of Evaluation, list of str
        One evaluation per variant, images in name order; messages
        (images that cannot be read).
    """
    from .image import to_rgb8
    from .imread import read_image
    from .masks import fill_masks
    from .pipeline import RunRequest, get_model

    if isinstance(variants, Settings):
        variants = {"run": variants}
    if model is None:
        model = get_model(checkpoint, device)
    evals = {name: Evaluation(name, s) for name, s in variants.items()}
    messages: list[str] = []
    for name in sorted(gt):
        boxes = gt[name]
        if not len(boxes):
            continue
        try:
            rgb = to_rgb8(read_image(Path(folder) / name))
        except (OSError, ValueError) as e:
            messages.append(f"{name}: cannot read the image ({e})")
            continue
        for run, s, raw, emb in _runs_of(rgb, variants, model, cache):
            req = RunRequest(rgb, checkpoint, device, s, rgb=True)
            prompter = _Prompts(model, req, embedding=emb, cache=cache)

            def fill(b: Boxes, rows: list[int], p: Prompter = prompter) -> Boxes:
                return fill_masks(b, model, p.ensure_embedding(), rows)

            evals[run].results += annotate_image(boxes, raw, s, prompter, name, fill)
        if progress is not None:
            progress(f"{name}: {len(boxes)} box(es)")
    return list(evals.values()), messages


def evaluate_folder(
    folder: str | Path,
    gt_src: str | Path,
    fmt: str,
    variants: Mapping[str, Settings] | Settings = DEFAULTS,
    **kwargs: Any,
) -> tuple[list[Evaluation], list[str]]:
    """:func:`read_ground_truth` of ``gt_src`` (``fmt``: coco, voc or
    yolo), then :func:`evaluate_boxes` (``kwargs``: its keywords); the
    messages of both."""
    gt, messages = read_ground_truth(gt_src, fmt, folder)
    runs, more = evaluate_boxes(folder, gt, variants, **kwargs)
    return runs, messages + more


# -- plots (matplotlib, Agg: no window) ----------------------------------
def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ImportError("the plots need matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any, path: str | Path, note: str) -> Path:
    import io

    from .atomic import atomic_write_bytes

    if note:
        fig.text(0.01, 0.01, note, fontsize=8, color="0.35", ha="left", va="bottom")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    fig.clf()
    return atomic_write_bytes(path, buf.getvalue())


def plot_iou_histogram(
    runs: Sequence[Evaluation], path: str | Path, note: str = ""
) -> Path:
    """Histogram of the IoU of the first pick and of the best reachable box,
    one panel per run, ``note`` under it; written as PNG (atomically)."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    n = max(len(runs), 1)
    fig, axes = plt.subplots(
        1, n, figsize=(4.0 * n + 0.8, 3.6), squeeze=False, sharey=True
    )
    bins = np.linspace(0.0, 1.0, 21)
    for ax, run in zip(axes[0], runs, strict=False):
        first = [r.first_iou for r in run.results]
        best = [r.best_iou for r in run.results]
        ax.hist(first, bins=bins, color="tab:blue", alpha=0.5, label="first pick")
        ax.hist(
            best,
            bins=bins,
            histtype="step",
            lw=2,
            color="tab:red",
            label="best reachable ([ / ] steps)",
        )
        ax.axvline(THRESHOLDS[0], color="0.3", ls=":", lw=1)
        ax.text(
            THRESHOLDS[0] - 0.01,
            0.98,
            f"{THRESHOLDS[0]:g}",
            color="0.3",
            ha="right",
            va="top",
            fontsize=8,
            transform=ax.get_xaxis_transform(),
        )
        ax.set_xlim(0, 1)
        ax.set_xlabel("IoU with the ground-truth box")
        ax.set_title(f"{run.name}: {len(run.results)} boxes", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].set_ylabel("boxes")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=2, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.04 if note else 0, 1, 0.9))
    return _png(fig, path, note)


def plot_actions_curve(
    runs: Sequence[Evaluation],
    path: str | Path,
    note: str = "",
    max_actions: int = 10,
) -> Path:
    """Share of boxes at IoU >= 0.9, 0.75 and 0.5 (one panel each) within k
    actions (k = 2 is the two clicks; each step adds one), one line per
    run, ``note`` under it; written as PNG (atomically)."""
    plt = _pyplot()
    ks = np.arange(CLICKS, max_actions + 1)
    fig, axes = plt.subplots(1, len(THRESHOLDS), figsize=(10.0, 3.6), sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "osD^v"
    for ax, t in zip(axes, THRESHOLDS, strict=True):
        for i, run in enumerate(runs):
            n = max(len(run.results), 1)
            got = [r.actions_to(t) for r in run.results]
            share = [100 * sum(a is not None and a <= k for a in got) / n for k in ks]
            # later runs thinner and smaller: lines that coincide stay visible
            ax.plot(
                ks,
                share,
                marker=markers[i % len(markers)],
                ms=7 - 1.5 * min(i, 3),
                lw=2.6 - 0.6 * min(i, 3),
                drawstyle="steps-post",
                color=colors[i % len(colors)],
                label=run.name,
            )
        ax.set_title(f"IoU ≥ {t:g}", fontsize=10)
        ax.set_xticks(ks)
        ax.set_ylim(-3, 103)
        ax.set_xlabel("actions (2 clicks + steps)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("boxes reached within k actions (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="upper center",
        ncol=min(len(runs), 4),
        fontsize=9,
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0.04 if note else 0, 1, 0.9))
    return _png(fig, path, note)
