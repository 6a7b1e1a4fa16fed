"""``propose`` over many images: inputs, output names, what may be replaced,
and each image's work; no napari or Qt.

:func:`plan_jobs` walks the inputs (folders recursively) and names each
image's box table; :func:`output_keys` keeps the names apart.
:func:`propose_one` is the one place where an image is processed, in this
process (:mod:`napari_samboxes.cli`) or on a Dask worker
(:mod:`napari_samboxes.distributed`).

**What propose may replace.** Whoever writes a table (this process or a
worker) logs it in its own file, ``OUT/.propose/<host>-<pid>.jsonl``: one
line before the table is written (``writing``) and one after
(``written``), each with the table's name, the SHA-256 of its bytes, the
settings' fingerprint (:func:`fingerprint`: the run settings and the
checkpoint's digest) and the image's size and modification time. Before a
run, :func:`table_status` sorts each existing table:

- ``DONE``: its bytes are a table propose wrote (their hash is logged), for
  the same settings, checkpoint and image: kept, so a re-run after a kill
  does only the rest;
- ``COMPUTE``: no table; bytes propose wrote, for other settings or an
  image changed since; or a table no logged write landed on (an older
  propose's, or a kill before the rename) in which every row is exactly
  what propose writes (label and source ``candidate``, a score, no other
  column);
- ``THEIRS``: anything else (a box an annotator or an import made, a table
  edited after propose wrote it, an empty or unreadable table): never
  replaced unless ``--overwrite``.

Whenever a kill comes, the next run sorts the table right: before the
first line the table is untouched; between the lines it is either the old
one or the new one, whose hash is logged; the table itself is written
atomically. A log line cut by a kill is skipped. One log per process means
no two writers share a file, also on a shared disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .settings import Settings

__all__ = [
    "COMPUTE",
    "DONE",
    "LOG_FOLDER",
    "THEIRS",
    "Logged",
    "Outcome",
    "Plan",
    "ProposeLog",
    "failure_message",
    "fingerprint",
    "image_stamp",
    "output_keys",
    "plan_jobs",
    "propose_one",
    "run_one",
    "table_status",
]

#: The label and source of every row propose writes.
CANDIDATE = "candidate"
#: The folder of the logs, in ``OUT``.
LOG_FOLDER = ".propose"
#: Statuses of an existing table (see the module docstring).
DONE, COMPUTE, THEIRS = "done", "compute", "theirs"


# ------------------------------------------------------------ the inputs


def output_keys(
    paths: Sequence[Path], names: dict[Path, str] | None = None
) -> dict[Path, str]:
    """Each input image's output name (``<key>.csv``); keys never collide.

    ``names`` gives an image's name below the folder argument it was found
    in (``train/a.png``); by default, and for images given as files, its
    file name. The key is the name's stem (``train/a``) unless another
    input has the same stem, compared case-insensitively; then the whole
    name, as a dataset folder's ``annotations/``
    (:func:`~napari_samboxes.dataset.file_keys`). Where inputs from
    different folders share a name, the key is the path below their common
    folder with ``__`` for ``/`` (``d1/x.png`` -> ``d1__x.png``). Anything
    still equal gets ``~2``, ``~3``... in input order.
    """
    from collections import Counter

    from .dataset import file_keys

    rel = {p: (names or {}).get(p, p.name) for p in paths}
    counts = Counter(r.casefold() for r in rel.values())
    by_name = file_keys(set(rel.values()))
    keys: dict[Path, str] = {}
    taken: set[str] = set()
    for p in paths:
        if counts[rel[p].casefold()] == 1:
            key = by_name[rel[p]]
        else:
            same = [q for q in paths if rel[q].casefold() == rel[p].casefold()]
            top = os.path.commonpath([q.absolute().parent for q in same])
            key = "__".join(p.absolute().relative_to(top).parts)
        unique, n = key, 1
        while unique.casefold() in taken:
            n += 1
            unique = f"{key}~{n}"
        taken.add(unique.casefold())
        keys[p] = unique
    return keys


@dataclass
class Plan:
    """What :func:`plan_jobs` found.

    Attributes
    ----------
    jobs : list of (Path, Path)
        ``(image, box table)`` pairs, in input order.
    failed : list of str
        Inputs that cannot be done, one sentence each (they count as failed).
    notes : list of str
        Links and subfolders skipped while walking folders (not images).
    """

    jobs: list[tuple[Path, Path]]
    failed: list[str]
    notes: list[str]


def plan_jobs(names: Sequence[str], out: Path, *, recursive: bool = True) -> Plan:
    """``(image, box table)`` pairs for the arguments of ``propose``.

    Folders are walked (with their subfolders unless ``recursive`` is
    False; hidden ones and the top ``annotations`` folder skipped), and an
    image keeps its path below the folder in its table's name
    (``DIR/train/a.png`` -> ``OUT/train/a.csv``). An image given twice is
    done once; a missing file is kept, to be reported as it fails. A target
    that would overwrite an input, or is a link out of ``out``, is not done.
    """
    from .atomic import OutsideError, check_inside
    from .dataset import list_images

    paths: list[Path] = []
    rel: dict[Path, str] = {}
    failed: list[str] = []
    notes: list[str] = []
    for name in names:
        p = Path(name)
        if not p.is_dir():
            paths.append(p)
            continue
        problems: list[str] = []
        try:
            found = list_images(p, recursive, problems)
        except OSError as e:
            failed.append(f"{p}: cannot read the folder ({e.strerror or e})")
            continue
        notes += [f"{p}: {line}" for line in problems]
        if not found:
            failed.append(f"{p}: no images in this folder")
        for q in found:
            paths.append(q)
            rel.setdefault(q, q.relative_to(p).as_posix())
    seen: dict[Path, Path] = {}
    for q in paths:  # the same file twice: once
        seen.setdefault(q.resolve(), q)
    paths = list(seen.values())
    inputs = set(seen)
    jobs = []
    for p, key in output_keys(paths, rel).items():
        target = out / f"{key}.csv"
        if target.resolve() in inputs:
            failed.append(f"{p}: output {target} would overwrite an input; skipped")
            continue
        try:
            check_inside(target, out)  # never write through a link out of OUT
        except OutsideError as e:
            failed.append(f"{p}: {e}; skipped")
            continue
        jobs.append((p, target))
    return Plan(jobs, failed, notes)


# --------------------------------------------------- what propose wrote


def fingerprint(settings: Settings, checkpoint_digest: str) -> str:
    """What makes two runs' tables equal: the settings that change the
    candidates (not the batch size) and the checkpoint's digest."""
    fields = {k: v for k, v in settings.as_dict().items() if k != "points_per_batch"}
    text = json.dumps([fields, checkpoint_digest], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def image_stamp(path: Path) -> list[int]:
    """``[size, mtime_ns]`` of an image file (``[-1, -1]`` if it is gone)."""
    try:
        st = path.stat()
    except OSError:
        return [-1, -1]
    return [st.st_size, st.st_mtime_ns]


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


@dataclass
class Logged:
    """What the logs say about one table.

    Attributes
    ----------
    hashes : dict
        SHA-256 of bytes propose wrote (or was about to write) there ->
        ``(fingerprint, image stamp)``.
    written : bool
        Whether a write is known to have landed (a ``written`` line).
    """

    hashes: dict[str, tuple[str, list[int]]] = field(default_factory=dict)
    written: bool = False


class ProposeLog:
    """The tables propose wrote in ``out`` (see the module docstring).

    Parameters
    ----------
    out : Path
        The output folder; the logs are in ``out/.propose/``.
    """

    _lock = threading.Lock()

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.folder = self.out / LOG_FOLDER
        self.path = self.folder / f"{socket.gethostname()}-{os.getpid()}.jsonl"

    def record(
        self, target: Path, sha256: str, fp: str, image: list[int], state: str
    ) -> None:
        """Append one line (``state``: ``writing`` or ``written``)."""
        line = json.dumps(
            {
                "table": target.relative_to(self.out).as_posix(),
                "state": state,
                "sha256": sha256,
                "fingerprint": fp,
                "image": image,
            }
        )
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)

    def read(self) -> dict[str, Logged]:
        """Every log's lines, by table (a later line wins; lines cut by a
        kill are skipped)."""
        found: dict[str, Logged] = {}
        try:
            logs = sorted(self.folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
        except OSError:
            return found
        for log in logs:
            try:
                lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                continue
            for line in lines:
                try:
                    e = json.loads(line)
                    entry = (str(e["fingerprint"]), [int(v) for v in e["image"]])
                    table = found.setdefault(str(e["table"]), Logged())
                    table.hashes[str(e["sha256"])] = entry
                    table.written = table.written or e["state"] == "written"
                except (ValueError, KeyError, TypeError):
                    continue
        return found


def _all_candidates(target: Path) -> bool:
    """Whether every row of the table is what propose writes (and there
    is at least one)."""
    from .formats.boxtable import read_box_table

    try:
        t = read_box_table(target)
    except (ValueError, OSError):
        return False
    return (
        len(t) > 0
        and not t.extra
        and not t.slices.shape[1]
        and all(lab == CANDIDATE for lab in t.labels)
        and all(s == CANDIDATE for s in t.sources)
        and bool(len(t.scores))
        and not any(s != s for s in t.scores)  # NaN: no score
    )


def table_status(
    target: Path, out: Path, logged: dict[str, Logged], fp: str, image: Path
) -> str:
    """:data:`DONE`, :data:`COMPUTE` or :data:`THEIRS` for an image's box
    table (see the module docstring); ``logged`` is :meth:`ProposeLog.read`."""
    if not target.exists() or target.is_dir():  # a folder: fails at the write
        return COMPUTE
    sha = _sha256(target)
    if sha is None:
        return THEIRS
    entry = logged.get(target.relative_to(out).as_posix(), Logged())
    if sha in entry.hashes:  # exactly what propose wrote
        return DONE if entry.hashes[sha] == (fp, image_stamp(image)) else COMPUTE
    if not entry.written and _all_candidates(target):
        return COMPUTE
    return THEIRS


# ---------------------------------------------------------- each image


@dataclass(frozen=True)
class Outcome:
    """What became of one image.

    Attributes
    ----------
    count : int or None
        Candidates written; None when it failed.
    error : str
        One line saying what went wrong (empty when it worked).
    threads : int
        Torch's threads during the task (0: not set, the process's own).
    setup : bool
        The model could not be loaded: every image would fail the same way.
    """

    count: int | None = None
    error: str = ""
    threads: int = 0
    setup: bool = False


def failure_message(path: Path, target: Path, e: BaseException) -> str:
    """One line saying what went wrong with one image."""
    from .image import ImageError
    from .imread import ImageReadError

    if isinstance(e, ImageReadError | ImageError):
        text = str(e)
        return f"{path}: cannot read image: {text.removeprefix(f'{path}: ')}"
    if isinstance(e, OSError):
        return f"{path}: cannot write {target}: {e.strerror or e}"
    if isinstance(e, MemoryError):
        return f"{path}: out of memory ({e}); try fewer --points-per-side"
    text = " ".join(str(e).split())
    return f"{path}: failed: {type(e).__name__}: {text}"


@contextmanager
def _held_interrupt() -> Iterator[None]:
    """Hold back Ctrl-C (in the main thread) until the block is done."""
    old = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or old is None:
        yield
        return
    got: list[int] = []
    signal.signal(signal.SIGINT, lambda sig, frame: got.append(sig))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if got and old is signal.default_int_handler:
            raise KeyboardInterrupt


def _table_bytes(table: Any) -> bytes:
    """The bytes :func:`~napari_samboxes.formats.boxtable.write_box_table`
    writes for ``table`` (rendered in a temporary folder: the log needs
    their hash before the table is written)."""
    import tempfile

    from .formats.boxtable import write_box_table

    with tempfile.TemporaryDirectory(prefix="napari-samboxes-") as d:
        return write_box_table(Path(d) / "table.csv", table).read_bytes()


def propose_one(
    path: Path,
    target: Path,
    model: Any,
    settings: Settings,
    cache: Any,
    *,
    progress: bool = True,
    log: ProposeLog | None = None,
    fp: str = "",
) -> int:
    """Candidates of one image, written to ``target``; returns their count.

    The one place where ``propose`` processes an image (see the module
    docstring); with ``log``, the table is recorded there under the
    fingerprint ``fp``.
    """
    from tqdm import tqdm

    from .atomic import atomic_write_bytes
    from .formats.boxtable import BoxTable, write_box_table
    from .image import to_rgb8
    from .imread import read_image
    from .pipeline import BatchDone, drain, raw_results

    stamp = image_stamp(path)
    rgb8 = to_rgb8(read_image(path))
    events = raw_results(rgb8, settings, model=model, cache=cache)
    if not progress:  # no tqdm at all: its lock is a semaphore a killed
        raw = drain(events, lambda ev: None)  # worker would leak
    else:
        n = -(-(settings.points_per_side**2) // settings.batch_for(model.device))
        with tqdm(total=n, desc=path.name, unit="batch", leave=False) as bar:
            raw = drain(
                events, lambda ev: bar.update(1) if isinstance(ev, BatchDone) else None
            )
    c = raw.candidates(settings)
    table = BoxTable(
        labels=[CANDIDATE] * len(c),
        boxes=c.boxes,
        scores=c.scores.astype(float),
        slices=c.boxes[:, :0],
        sources=[CANDIDATE] * len(c),
    )
    target.parent.mkdir(parents=True, exist_ok=True)  # OUT/train/ for train/a
    if log is None:
        write_box_table(target, table)
        return len(c)
    data = _table_bytes(table)
    sha = hashlib.sha256(data).hexdigest()
    log.record(target, sha, fp, stamp, "writing")
    with _held_interrupt():  # Ctrl-C: after the second line
        atomic_write_bytes(target, data)
        log.record(target, sha, fp, stamp, "written")
    return len(c)


def run_one(
    path: Path,
    target: Path,
    model: Any,
    settings: Settings,
    cache: Any,
    *,
    log: ProposeLog | None = None,
    fp: str = "",
    progress: bool = True,
) -> Outcome:
    """:func:`propose_one`, its failure turned into an :class:`Outcome`."""
    try:
        n = propose_one(
            path, target, model, settings, cache, progress=progress, log=log, fp=fp
        )
    except Exception as e:  # noqa: BLE001 - one line per image, the rest go on
        return Outcome(error=failure_message(path, target, e))
    return Outcome(count=n)
