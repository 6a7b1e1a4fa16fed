"""Candidates for many images, written as box tables; no napari or Qt.

:func:`propose_one` is the one place where ``napari-samboxes propose``
processes an image, in this process (:mod:`napari_samboxes.cli`) or on a
Dask worker (:mod:`napari_samboxes.distributed`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .settings import Settings

__all__ = ["propose_one"]


def propose_one(
    path: Path,
    target: Path,
    model: Any,
    settings: Settings,
    cache: Any,
    *,
    progress: bool = True,
) -> int:
    """Candidates of one image, written to ``target``; returns their count.

    The one place where ``propose`` processes an image (see the module
    docstring).
    """
    from tqdm import tqdm

    from .formats.boxtable import BoxTable, write_box_table
    from .image import to_rgb8
    from .imread import read_image
    from .pipeline import BatchDone, drain, raw_results

    rgb8 = to_rgb8(read_image(path))
    n = -(-(settings.points_per_side**2) // settings.batch_for(model.device))
    bar = tqdm(total=n, desc=path.name, unit="batch", leave=False, disable=not progress)
    with bar:
        raw = drain(
            raw_results(rgb8, settings, model=model, cache=cache),
            lambda ev: bar.update(1) if isinstance(ev, BatchDone) else None,
        )
    c = raw.candidates(settings)
    write_box_table(
        target,
        BoxTable(
            labels=["candidate"] * len(c),
            boxes=c.boxes,
            scores=c.scores.astype(float),
            slices=c.boxes[:, :0],
            sources=["candidate"] * len(c),
        ),
    )
    return len(c)
