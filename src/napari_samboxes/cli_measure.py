"""The ``evaluate`` and ``audit`` commands of ``napari-samboxes``.

Argument parsing and messages only (:mod:`napari_samboxes.evaluate` and
:mod:`napari_samboxes.audit` do the work). Bad arguments are one line on
stderr and exit code 2, checked before the model loads; failures while
running (a bad checkpoint, a malformed ground-truth file) exit with 1.
"""

from __future__ import annotations

import argparse
import itertools
import warnings
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from .cli_datasets import fail
from .settings import DEFAULTS, Settings, SettingsError

__all__ = ["COMMANDS", "add_commands", "parse_compare", "run_command"]

#: The sub-commands of this module.
COMMANDS: tuple[str, ...] = ("evaluate", "audit")

_SETTING_FLAGS = (
    ("points_per_side", int),
    ("crop_n_layers", int),
    ("pred_iou_thresh", float),
    ("stability_score_thresh", float),
    ("box_nms_thresh", float),
)


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The folder, the run settings and the model's options."""
    p.add_argument("folder", help="image folder")
    for name, kind in _SETTING_FLAGS:
        p.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=getattr(DEFAULTS, name),
            help=f"as in propose (default {getattr(DEFAULTS, name)})",
        )
    p.add_argument("--checkpoint", help="mobile_sam.pt (default: found automatically)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--cache", help="cache folder (default: the user cache)")


def add_commands(sub: Any) -> None:
    """Add ``evaluate`` and ``audit`` to the sub-parsers ``sub``."""
    from .evaluate import GT_FORMATS

    ev = sub.add_parser(
        "evaluate",
        help="simulate two-click annotation against ground truth (IoU, actions)",
    )
    _add_run_arguments(ev)
    ev.add_argument("--gt", required=True, help="ground truth: label folder or file")
    ev.add_argument("--format", required=True, choices=GT_FORMATS)
    ev.add_argument(
        "--out",
        help="folder for evaluation.json and the plots (default DIR/evaluation)",
    )
    ev.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="SETTING=V1,V2",
        help="run several settings side by side, e.g. points_per_side=8,16 "
        "(repeat to combine)",
    )
    au = sub.add_parser(
        "audit", help="check each box against SAM's candidates and its mask"
    )
    _add_run_arguments(au)
    au.add_argument("--out", help="report CSV (default DIR/audit.csv)")
    au.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="edge distances up to this many pixels are not flagged (default 0)",
    )
    au.add_argument(
        "--min-iou",
        type=float,
        default=None,
        help="least IoU of the nearest candidate to suggest it (default 0.5)",
    )


def parse_compare(specs: Sequence[str], base: Settings) -> dict[str, Settings]:
    """The settings of ``--compare`` (``KEY=V1,V2``; several combine).

    Raises
    ------
    ValueError
        For an unknown setting, a value of the wrong kind or out of range.
    """
    kinds = {f.name: f.type for f in fields(Settings)}
    axes: list[list[tuple[str, Any]]] = []
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in kinds or not values.strip():
            raise ValueError(
                f"--compare {spec!r}: expected SETTING=V1,V2 with a setting of "
                f"{', '.join(n for n, _ in _SETTING_FLAGS)}"
            )
        cast = int if "int" in str(kinds[key]) else float
        try:
            axes.append([(key, cast(v)) for v in values.split(",") if v.strip()])
        except ValueError:
            raise ValueError(f"--compare {spec!r}: {values} are not numbers") from None
    out: dict[str, Settings] = {}
    for combo in itertools.product(*axes):
        name = ", ".join(f"{k}={v:g}" for k, v in combo) or "run"
        try:
            out[name] = base.with_(**dict(combo))
        except SettingsError as e:
            raise ValueError(f"--compare {name}: {e}") from None
    return out


def _checked(args: argparse.Namespace) -> tuple[Settings, str | None]:
    """The run settings, or what is wrong with the arguments."""
    try:
        settings = DEFAULTS.with_(**{n: getattr(args, n) for n, _ in _SETTING_FLAGS})
    except SettingsError as e:
        return DEFAULTS, f"error: {e}"
    if not Path(args.folder).is_dir():
        return settings, f"error: {args.folder} is not a folder"
    if args.checkpoint and not Path(args.checkpoint).is_file():
        return settings, f"error: {args.checkpoint}: no such checkpoint file"
    out = getattr(args, "out", None)
    if out and Path(out).exists() and Path(out).is_dir() == (args.command == "audit"):
        want = "a file" if args.command == "audit" else "a folder"
        return settings, f"error: --out {out} is not {want}"
    if out and args.command == "audit" and _not_a_report(Path(out)):
        return settings, (
            f"error: --out {out} is a file this command did not write "
            "(a box table, an image, another file); give a new file name"
        )
    cache = getattr(args, "cache", None)
    if cache and Path(cache).exists() and not Path(cache).is_dir():
        return settings, f"error: --cache {cache} is a file; give a folder"
    return settings, None


def _not_a_report(path: Path) -> bool:
    """Whether ``path`` is a file that is not an earlier audit report: never
    overwritten (a typo must not replace a box table or an image)."""
    if not path.is_file():
        return False
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            first = f.readline()
    except OSError:
        return True
    return not first.startswith("image,")


def _model(args: argparse.Namespace) -> Any:
    """The model (warnings, e.g. "not the official checkpoint", as one line)."""
    from .pipeline import get_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        model = get_model(args.checkpoint, args.device)
    for w in caught:
        fail(f"warning: {w.message}", 0)
    return model


def run_command(args: argparse.Namespace) -> int:
    """Run ``evaluate`` or ``audit``; returns the exit code."""
    from .formats.boxtable import BoxTableError
    from .formats.errors import FormatError
    from .model import CheckpointError, DeviceError

    settings, problem = _checked(args)
    if problem:
        return fail(problem, 2)
    try:
        if args.command == "evaluate":
            return _evaluate(args, settings)
        return _audit(args, settings)
    except DeviceError as e:
        return fail(f"error: {e}", 2)
    except (CheckpointError, FormatError, BoxTableError, ImportError, OSError) as e:
        return fail(e)


# -- evaluate ---------------------------------------------------------------
def _pct(v: float) -> str:
    return "-" if v != v else f"{100 * v:.0f}%"


def _num(v: float) -> str:
    return "-" if v != v else f"{v:.2f}"


def summary_table(runs: Sequence[Any]) -> str:
    """The summary of :class:`~napari_samboxes.evaluate.Evaluation` runs as
    a text table, one column per run, then a line per class and run."""
    from .evaluate import BUDGETS, PATHS

    sums = [r.summary for r in runs]
    rows: list[tuple[str, list[str]]] = [
        ("", [r.name for r in runs]),
        ("boxes", [str(s.boxes) for s in sums]),
        ("median IoU, first pick", [_num(s.median_first_iou) for s in sums]),
        ("median IoU, best reachable", [_num(s.median_best_iou) for s in sums]),
    ]
    for b in BUDGETS:
        rows.append(
            (f"IoU >= 0.9 within {b} actions", [_pct(s.within[b]) for s in sums])
        )
    rows += [
        ("mean actions per box", [_num(s.mean_actions) for s in sums]),
        ("IoU 0.9 not reachable", [str(s.not_reachable) for s in sums]),
        (
            "paths " + "/".join(PATHS),
            ["/".join(str(s.paths[p]) for p in PATHS) for s in sums],
        ),
    ]
    w0 = max(len(k) for k, _ in rows)
    ws = [max(len(v[i]) for _, v in rows) for i in range(len(runs))]
    lines = [
        "  ".join([k.ljust(w0), *(c.rjust(w) for c, w in zip(v, ws, strict=True))])
        for k, v in rows
    ]
    lines.append("per class (IoU >= 0.9 within " + "/".join(map(str, BUDGETS)) + "):")
    for run in runs:
        for c, s in run.per_class().items():
            where = f" [{run.name}]" if len(runs) > 1 else ""
            lines.append(
                f"  {c}{where}: {s.boxes} box(es), median first-pick IoU "
                f"{_num(s.median_first_iou)}, "
                + "/".join(_pct(s.within[b]) for b in BUDGETS)
                + f", mean actions {_num(s.mean_actions)}"
            )
    return "\n".join(lines)


def _evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from .atomic import atomic_write_text
    from .cache import CandidateCache
    from .dataset import EXPORT_MARK
    from .evaluate import (
        evaluate_boxes,
        evaluation_json,
        plot_actions_curve,
        plot_iou_histogram,
        read_ground_truth,
    )

    if not Path(args.gt).exists():
        return fail(f"error: --gt {args.gt}: no such file or folder", 2)
    try:
        variants = parse_compare(args.compare, settings) if args.compare else None
    except ValueError as e:
        return fail(f"error: {e}", 2)
    if variants is None:
        variants = {f"points_per_side={settings.points_per_side}": settings}
    gt, messages = read_ground_truth(args.gt, args.format, args.folder)
    for m in messages:
        print(m)
    if not any(len(b) for b in gt.values()):
        return fail(
            f"no ground-truth box of {args.gt} matched an image of {args.folder}"
        )
    model = _model(args)
    runs, messages = evaluate_boxes(
        args.folder,
        gt,
        variants,
        checkpoint=args.checkpoint,
        device=args.device,
        cache=CandidateCache(args.cache),
        model=model,
        progress=print,
    )
    for m in messages:
        print(m)
    if not any(r.results for r in runs):
        return fail(
            f"no ground-truth box of {args.gt} matched an image of {args.folder}"
        )
    out = Path(args.out) if args.out else Path(args.folder) / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    # marked (also an --out inside DIR), so that its plots are not images
    atomic_write_text(out / EXPORT_MARK, "written by napari-samboxes evaluate\n")
    doc = evaluation_json(
        runs,
        checkpoint=str(model.checkpoint),
        official_checkpoint=bool(model.official),
        ground_truth=str(args.gt),
        format=args.format,
    )
    note = "" if model.official else f"test weights: {model.checkpoint.name}"
    written = [
        atomic_write_text(out / "evaluation.json", doc),
        plot_iou_histogram(runs, out / "evaluate_iou_histogram.png", note),
        plot_actions_curve(runs, out / "evaluate_actions_curve.png", note),
    ]
    print(summary_table(runs))
    if not model.official:
        print("(not the official MobileSAM weights: these figures say nothing of SAM)")
    for p in written:
        print(f"wrote {p}")
    return 0


# -- audit ----------------------------------------------------------------
def _audit(args: argparse.Namespace, settings: Settings) -> int:
    from .audit import audit_folder
    from .cache import CandidateCache
    from .tighten import TIGHTEN_MIN_IOU

    min_iou = TIGHTEN_MIN_IOU if args.min_iou is None else args.min_iou
    if not 0 <= min_iou <= 1 or not 0 <= args.tolerance < float("inf"):
        return fail("error: --min-iou must be from 0 to 1 and --tolerance >= 0", 2)
    model = _model(args)
    report = audit_folder(
        args.folder,
        args.checkpoint,
        args.device,
        settings,
        CandidateCache(args.cache),
        min_iou=min_iou,
        tolerance_px=args.tolerance,
        model=model,
    )
    for m in report.messages:
        print(m)
    out = Path(args.out) if args.out else Path(args.folder) / "audit.csv"
    path = report.write_csv(out)
    print(report.summary())
    print(f"wrote {path}")
    return 1 if report.messages else 0
