"""The ``napari-samboxes`` command: view, propose, export, import, masks, ...

Every failure is one line on stderr and a non-zero exit, never a traceback:
exit code 2 for bad arguments (checked before the model is loaded), 1 for
what went wrong while running (a bad checkpoint, images that failed), 130
for Ctrl-C. In ``propose`` a failure on one image is reported and the
others are processed; tables propose did not write are kept unless
``--overwrite``, and a re-run does only what is missing
(:mod:`napari_samboxes.batch`); Dask runs are in
:mod:`napari_samboxes.distributed`. ``NAPARI_SAMBOXES_DEBUG=1`` shows the
traceback of an unexpected error.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import cli_cache, cli_measure, cli_stats, cli_tighten
from .cli_datasets import (
    DATASET_COMMANDS,
    add_dataset_commands,
    add_no_recursive,
    check_model_options,
    run_dataset_command,
)
from .distributed import CONNECT_TIMEOUT
from .settings import DEFAULTS, Settings, SettingsError

__all__ = ["main"]

PROG = "napari-samboxes"

#: Modules adding sub-commands: each has ``COMMANDS`` (their names),
#: ``add_commands(sub)`` and ``run_command(args) -> exit code``.
_MORE = (cli_tighten, cli_cache, cli_measure, cli_stats)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="MobileSAM 'segment everything' as a bounding-box tool for napari.",
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    v = sub.add_parser("view", help="open napari with the SAM boxes widget")
    v.add_argument(
        "image",
        nargs="?",
        help="image, box table (.csv) or folder of images (default: the sample photo)",
    )
    v.add_argument(
        "--points-per-side", type=int, help="grid of prompts (remembered per folder)"
    )
    v.add_argument("--crop-n-layers", type=int, help="crop layers (0 to 4)")
    v.add_argument("--pred-iou-thresh", type=float)
    v.add_argument("--stability-score-thresh", type=float)
    v.add_argument("--box-nms-thresh", type=float)
    v.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"])
    v.add_argument("--checkpoint", help="mobile_sam.pt (default: found automatically)")
    add_no_recursive(v)
    pr = sub.add_parser(
        "propose",
        help="compute candidate boxes for images, written as box tables (and cached)",
    )
    pr.add_argument("images", nargs="+", help="image files or folders of images")
    pr.add_argument(
        "--out", required=True, help="folder for <image key>.csv box tables"
    )
    pr.add_argument("--points-per-side", type=int, default=DEFAULTS.points_per_side)
    pr.add_argument("--pred-iou-thresh", type=float, default=DEFAULTS.pred_iou_thresh)
    pr.add_argument(
        "--stability-score-thresh",
        type=float,
        default=DEFAULTS.stability_score_thresh,
    )
    pr.add_argument("--box-nms-thresh", type=float, default=DEFAULTS.box_nms_thresh)
    pr.add_argument("--checkpoint", help="mobile_sam.pt (default: found automatically)")
    pr.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    pr.add_argument("--cache", help="cache folder (default: the user cache)")
    pr.add_argument(
        "--overwrite",
        action="store_true",
        help="also replace tables that hold boxes propose did not write "
        "(an annotator's, an import's); kept by default",
    )
    add_no_recursive(pr)
    where = pr.add_mutually_exclusive_group()
    where.add_argument(
        "--workers", type=int, help="run on a local Dask cluster of N processes"
    )
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on the Dask scheduler at tcp://HOST:PORT (or HOST:PORT, "
        "tls://HOST:PORT, or the path of its scheduler file)",
    )
    where.add_argument(
        "--scheduler-file",
        metavar="PATH",
        help="run on the Dask scheduler named in this JSON file (written by "
        "'dask scheduler --scheduler-file' or Client.write_scheduler_file); "
        "waits --connect-timeout for it to appear",
    )
    pr.add_argument(
        "--connect-timeout",
        type=float,
        default=CONNECT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for the scheduler (default {CONNECT_TIMEOUT:g})",
    )
    add_dataset_commands(sub)
    for more in _MORE:
        more.add_commands(sub)
    f = sub.add_parser("fetch-weights", help="download the official mobile_sam.pt")
    f.add_argument("--dest", help="folder or .pt path (default: the user cache)")
    return p


def _fail(message: object, code: int = 1) -> int:
    """Write one line (line breaks folded) to stderr; return ``code``."""
    text = " ".join(str(message).split())
    sys.stderr.write(f"{PROG}: {text}\n")
    return code


def _check_target(target: str | None, recursive: bool) -> str | None:
    """What is wrong with ``view``'s argument, before napari starts."""
    if target is None:
        return None
    p = Path(target)
    if not target.strip():
        return "error: the image or folder is empty: give a path"
    if not p.exists():
        return f"error: {target}: no such file or folder"
    if not (p.is_file() or p.is_dir()):
        return f"error: {target}: not a regular file (a FIFO, device or socket)"
    if p.is_dir():
        from .dataset import IMAGE_SUFFIXES, list_images

        try:
            found = list_images(p, recursive)
        except OSError as e:
            return f"error: {target}: cannot read the folder ({e.strerror or e})"
        if not found:
            kinds = ", ".join(sorted(s[1:] for s in IMAGE_SUFFIXES))
            return f"error: {target}: no images in this folder ({kinds})"
    return None


def _view_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The run settings given to ``view``; raises SettingsError."""
    from .remember import FIELDS

    given = {k: getattr(args, k) for k in FIELDS if getattr(args, k, None) is not None}
    DEFAULTS.with_(**{k: v for k, v in given.items() if k != "device"})
    return given


def _view(args: argparse.Namespace) -> int:
    target = args.image
    problem = _check_target(target, args.recursive)  # before napari starts
    if problem:
        return _fail(problem, 2)
    try:
        settings = _view_settings(args)
    except SettingsError as e:
        return _fail(e, 2)
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        return _fail(f"{args.checkpoint}: no such checkpoint file", 2)
    import napari

    from ._napari.view import open_view

    viewer = napari.Viewer()
    try:
        open_view(
            target,
            viewer,
            settings=settings,
            checkpoint=args.checkpoint,
            recursive=args.recursive,
        )
    except Exception as e:  # noqa: BLE001 - no reader, damaged file
        viewer.close()
        return _fail(f"{target}: cannot open it: {e}")
    napari.run()
    return 0


def _propose_arguments(args: argparse.Namespace) -> tuple[Settings, Any]:
    """The run settings and the scheduler (or None) of ``propose``.

    Raises
    ------
    ValueError
        For the first bad argument (one sentence); nothing was loaded.
    """
    import math

    from .distributed import parse_scheduler

    settings = DEFAULTS.with_(
        points_per_side=args.points_per_side,
        pred_iou_thresh=args.pred_iou_thresh,
        stability_score_thresh=args.stability_score_thresh,
        box_nms_thresh=args.box_nms_thresh,
    )
    if args.workers is not None and args.workers < 1:
        raise ValueError("--workers must be at least 1")
    t = args.connect_timeout
    if not (math.isfinite(t) and t > 0):
        raise ValueError(
            f"--connect-timeout must be a number of seconds above 0, not {t}"
        )
    out = Path(args.out)
    if not args.out.strip():
        raise ValueError("--out is empty: give a folder")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder")
    where = (args.workers, args.scheduler, args.scheduler_file)
    remote = any(v is not None for v in where)
    problem = check_model_options(args, device_here=not remote)
    if problem:
        raise ValueError(problem)
    if args.scheduler is None and args.scheduler_file is None:
        return settings, None
    return settings, parse_scheduler(args.scheduler, args.scheduler_file)


def _checkpoint_digest(checkpoint: str | None) -> str | None:
    """The checkpoint file's digest, or None where there is no file (the
    model's loader then says what was looked for)."""
    from .model import file_digest, find_checkpoint

    path = Path(checkpoint) if checkpoint else find_checkpoint()
    if path is None or not path.is_file():
        return None
    return file_digest(path)


def _load(checkpoint: str | None, device: str) -> Any:
    """The model, its "not the official checkpoint" warning as one line;
    raises the loader's errors."""
    from .model import load_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        model = load_model(checkpoint, device=device)
    for w in caught:  # one line, not two
        _fail(f"warning: {w.message}", 0)
    return model


def _sort_jobs(
    jobs: Sequence[tuple[Path, Path]], out: Path, fp: str, overwrite: bool
) -> tuple[list[tuple[Path, Path]], int, int]:
    """The jobs to compute, the tables kept as done, those skipped as
    someone else's (see :mod:`napari_samboxes.batch`)."""
    from .batch import DONE, THEIRS, ProposeLog, table_status

    logged = ProposeLog(out).read()
    todo, done, theirs = [], 0, 0
    for p, t in jobs:
        status = table_status(t, out, logged, fp, p)
        if status == DONE:
            done += 1
        elif status == THEIRS and not overwrite:
            theirs += 1
        else:
            todo.append((p, t))
    return todo, done, theirs


def _run_here(
    jobs: Sequence[tuple[Path, Path]],
    model: Any,
    settings: Settings,
    args: Any,
    fp: str,
) -> Generator[tuple[Path, Path, Any], None, None]:
    """The jobs in this process, one after the other."""
    from .batch import ProposeLog, run_one
    from .cache import CandidateCache

    cache, log = CandidateCache(args.cache), ProposeLog(args.out)
    for p, t in jobs:
        yield p, t, run_one(p, t, model, settings, cache, log=log, fp=fp)


def _propose(args: argparse.Namespace) -> int:
    from .distributed import DistributedError, close_client, open_client
    from .model import CheckpointError, DeviceError

    try:  # arguments first: nothing is loaded for a bad one
        settings, scheduler = _propose_arguments(args)
    except ValueError as e:
        return _fail(f"error: {e}", 2)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return _fail(f"--out {out}: cannot create the folder ({e.strerror or e})")
    remote = args.workers is not None or scheduler is not None
    device = "cpu" if remote else args.device  # remote: the file is checked here
    client = None
    try:
        model, plan, todo, fp = _plan(args, settings, out, device)
        if todo and remote:  # before the model: a wrong address fails fast
            client = open_client(
                workers=args.workers, scheduler=scheduler, timeout=args.connect_timeout
            )
        if todo and model is None:  # only now: a finished run loads nothing
            model = _load(args.checkpoint, device)
    except BaseException as e:  # Ctrl-C too: a local cluster is closed
        if client is not None:
            close_client(client)
        if isinstance(e, DeviceError):
            return _fail(f"error: {e}", 2)
        if isinstance(e, CheckpointError | DistributedError):
            return _fail(e)
        raise
    failed = len(plan.failed)
    if todo:
        try:
            failed += _run(todo, model, settings, args, fp, client)
        except DistributedError as e:
            return _fail(e)
    if failed:
        return _fail(f"{failed} of {len(plan.jobs) + len(plan.failed)} images failed")
    return 0


def _plan(
    args: argparse.Namespace, settings: Settings, out: Path, device: str
) -> tuple[Any, Any, list[tuple[Path, Path]], str]:
    """The model if it had to be loaded (None: not yet), the plan, the jobs
    to compute and the settings' fingerprint; says what is skipped."""
    from .batch import fingerprint, plan_jobs

    model = None
    digest = _checkpoint_digest(args.checkpoint)
    if digest is None:  # no file: the loader says what it looked for
        model = _load(args.checkpoint, device)
        digest = model.digest
    plan = plan_jobs(args.images, out, recursive=args.recursive)
    for line in plan.notes:
        _fail(f"warning: {line}", 0)
    for line in plan.failed:
        _fail(line)
    fp = fingerprint(settings, digest)
    todo, done, theirs = _sort_jobs(plan.jobs, out, fp, args.overwrite)
    _say_plan(len(todo), len(plan.jobs), done, theirs)
    return model, plan, todo, fp


def _run(
    todo: list[tuple[Path, Path]],
    model: Any,
    settings: Settings,
    args: argparse.Namespace,
    fp: str,
    client: Any,
) -> int:
    """Run the jobs here or on the cluster of ``client``, with a progress
    bar and one line per failed image; returns how many failed."""
    from contextlib import closing

    from tqdm import tqdm

    from .distributed import run_on_cluster

    results = (
        run_on_cluster(
            todo,
            model.checkpoint,
            args.device,
            settings,
            args.cache,
            client=client,
            out=args.out,
            fp=fp,
            close=True,
            say=lambda line: _fail(line, 0),
        )
        if client is not None
        else _run_here(todo, model, settings, args, fp)
    )
    failed = 0
    bar = tqdm(results, total=len(todo), desc="images", unit="image")
    with closing(results), bar:  # Ctrl-C: the cluster's tasks are cancelled
        for _path, _target, outcome in bar:
            if outcome.error:  # a line of its own, not after the bar
                bar.write(f"{PROG}: {' '.join(outcome.error.split())}", sys.stderr)
                failed += 1
    return failed


def _say_plan(todo: int, total: int, done: int, theirs: int) -> None:
    """One line: what will be computed, kept and skipped."""
    said = [f"{todo} of {total} images to compute"]
    if done:
        said.append(f"{done} done by an earlier propose with these settings (kept)")
    if theirs:
        said.append(
            f"{theirs} skipped: their tables hold boxes propose did not write "
            "(--overwrite replaces them)"
        )
    print(f"{PROG} propose: " + "; ".join(said), flush=True)


def _fetch(dest: str | None) -> int:
    from .model import fetch_weights

    if dest is not None:
        problem = _check_dest(dest)
        if problem:
            return _fail(f"error: {problem}", 2)
    try:
        path = fetch_weights(dest)
    except Exception as e:  # noqa: BLE001 - network, hash, disk
        return _fail(f"download failed: {e}")
    print(path)
    return 0


def _check_dest(dest: str) -> str | None:
    """What is wrong with ``fetch-weights --dest``, before downloading."""
    if not dest.strip():
        return "--dest is empty: give a folder or a .pt path"
    p = Path(dest).expanduser()
    is_file = p.suffix.lower() == ".pt" and not p.is_dir()
    folder = p.parent if is_file else p
    if p.exists() and not p.is_dir() and not is_file:
        return f"--dest {dest} is a file, not a folder or a .pt path"
    for above in (folder, *folder.parents):
        if above.exists():
            if not above.is_dir():
                return f"--dest {dest}: {above} is a file, not a folder"
            break
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``napari-samboxes`` console script."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "view":
            return _view(args)
        if args.command == "propose":
            return _propose(args)
        if args.command in DATASET_COMMANDS:
            return run_dataset_command(args)
        for more in _MORE:
            if args.command in more.COMMANDS:
                return int(more.run_command(args))
        return _fetch(args.dest)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as e:  # noqa: BLE001 - one line, never a traceback
        if os.environ.get("NAPARI_SAMBOXES_DEBUG"):
            raise
        return _fail(
            f"unexpected error: {type(e).__name__}: {e} "
            "(NAPARI_SAMBOXES_DEBUG=1 shows the traceback)"
        )


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
