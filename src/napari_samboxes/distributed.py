"""``propose`` over many images: inputs, output names, and the Dask runner.

No napari or Qt. Folders given to ``propose`` are walked (:func:`plan_jobs`);
output names never collide (:func:`output_keys`). The runner uses
``dask.distributed``; install it with ``pip install napari-samboxes[distributed]``.
Each image is one task; the task runs the CLI's per-image body
(:func:`napari_samboxes.batch.propose_one`), so a worker writes the same box
table and cache entry as the in-process run. Each worker process loads the
model once (:func:`napari_samboxes.pipeline.get_model` keeps it per
process) and uses ``cores / workers`` torch threads.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .settings import Settings

__all__ = [
    "DistributedError",
    "output_keys",
    "plan_jobs",
    "propose_task",
    "run_on_cluster",
]


def output_keys(paths: Sequence[Path]) -> dict[Path, str]:
    """Each input image's output name (``<key>.csv``); keys never collide.

    The key is the file stem; where two inputs share a stem (compared
    case-insensitively) it is the file name (``a.png`` -> ``a.png``), as in
    a dataset folder's ``annotations/`` (:func:`~napari_samboxes.dataset.file_keys`);
    where inputs from different folders share a file name, it is the path
    below their common folder with ``__`` for ``/`` (``d1/x.png`` ->
    ``d1__x.png``). Anything still equal gets ``~2``, ``~3``... in input order.
    """
    from collections import Counter

    from .dataset import file_keys

    names = Counter(p.name.casefold() for p in paths)
    by_name = file_keys({p.name for p in paths})
    keys: dict[Path, str] = {}
    taken: set[str] = set()
    for p in paths:
        if names[p.name.casefold()] == 1:
            key = by_name[p.name]
        else:
            same = [q for q in paths if q.name.casefold() == p.name.casefold()]
            top = os.path.commonpath([q.absolute().parent for q in same])
            key = "__".join(p.absolute().relative_to(top).parts)
        unique, n = key, 1
        while unique.casefold() in taken:
            n += 1
            unique = f"{key}~{n}"
        taken.add(unique.casefold())
        keys[p] = unique
    return keys


def plan_jobs(
    names: Sequence[str], out: Path
) -> tuple[list[tuple[Path, Path]], list[str]]:
    """``(image, box table)`` pairs for the arguments, and what was skipped.

    Folders are walked (not recursively) for images; an image given twice
    is done once; a missing file is kept, to be reported as it fails. A
    target that is a symbolic link out of ``out`` is skipped.
    """
    from .dataset import list_images

    paths: list[Path] = []
    skipped: list[str] = []
    for name in names:
        p = Path(name)
        found = list_images(p) if p.is_dir() else [p]
        if not found:
            skipped.append(f"{p}: no images in this folder")
        paths.extend(found)
    seen: dict[Path, Path] = {}
    for q in paths:  # the same file twice: once
        seen.setdefault(q.resolve(), q)
    paths = list(seen.values())
    inputs = set(seen)
    jobs = []
    from .atomic import OutsideError, check_inside

    for p, key in output_keys(paths).items():
        target = out / f"{key}.csv"
        if target.resolve() in inputs:
            skipped.append(f"{p}: output {target} would overwrite an input; skipped")
            continue
        try:
            check_inside(target, out)  # never write through a link out of OUT
        except OutsideError as e:
            skipped.append(f"{p}: {e}; skipped")
            continue
        jobs.append((p, target))
    return jobs, skipped


class DistributedError(RuntimeError):
    """Dask is missing, or the cluster could not be started or reached."""


_threads_set = False


def propose_task(
    path: str,
    target: str,
    checkpoint: str,
    device: str,
    settings: Settings,
    cache_dir: str | None,
    threads: int = 0,
) -> int:
    """One image on a worker: candidates written to ``target``; their count.

    ``threads`` > 0 sets torch's thread count on the worker's first task.
    """
    global _threads_set
    from .batch import propose_one
    from .cache import CandidateCache
    from .pipeline import get_model

    if threads > 0 and not _threads_set:
        import torch

        torch.set_num_threads(threads)
        _threads_set = True
    model = get_model(checkpoint, device)  # loaded once per worker process
    return propose_one(
        Path(path),
        Path(target),
        model,
        settings,
        CandidateCache(cache_dir),
        progress=False,
    )


def _client(workers: int | None, scheduler: str | None) -> Any:
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as e:
        raise DistributedError(
            "--workers and --scheduler need Dask: "
            "pip install 'napari-samboxes[distributed]'"
        ) from e
    try:
        if scheduler:
            return Client(scheduler, timeout="10s")
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=40,  # logging.ERROR
        )
        return Client(cluster)
    except (OSError, TimeoutError, ValueError) as e:
        where = f"the scheduler at {scheduler}" if scheduler else "a local cluster"
        raise DistributedError(f"cannot reach {where}: {e}") from e


def run_on_cluster(
    jobs: Sequence[tuple[Path, Path]],
    checkpoint: str | Path,
    device: str,
    settings: Settings,
    cache_dir: str | None,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
) -> Iterator[tuple[Path, Path, int | Exception]]:
    """Run ``(image, target)`` jobs on Dask; yield each as it finishes.

    Yields ``(image, target, count)``, or ``(image, target, exception)`` for
    an image that failed (the others go on). ``workers`` starts a local
    cluster of that many processes (closed at the end); ``scheduler`` is the
    address of a running one (``tcp://host:8786``).

    Raises
    ------
    DistributedError
        Dask is not installed, or the cluster cannot be started or reached.
    """
    from dask.distributed import as_completed

    client = _client(workers, scheduler)
    try:
        n = len(client.scheduler_info().get("workers", {})) or (workers or 1)
        threads = max(1, (os.cpu_count() or 1) // n) if workers else 0
        futures = {
            client.submit(
                propose_task,
                str(p),
                str(t),
                str(checkpoint),
                device,
                settings,
                cache_dir,
                threads,
                key=f"propose-{i}-{p.name}",
                pure=False,
            ): (p, t)
            for i, (p, t) in enumerate(jobs)
        }
        for fut in as_completed(futures):
            p, t = futures[fut]
            try:
                yield p, t, fut.result()
            except Exception as e:  # noqa: BLE001 - one image failed
                yield p, t, e
    finally:
        cluster = client.cluster if workers else None
        client.close()
        if cluster is not None:
            cluster.close()
