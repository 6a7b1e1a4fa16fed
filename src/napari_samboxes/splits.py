"""Train/val/test splits of a dataset's images, reproducible; no napari or Qt.

``--split 0.8,0.2`` gives fractions for ``train``, ``val`` (and ``test``).
Images are ranked by a hash of the seed and their file name, and the
ranking is cut by the fractions (largest remainders; a subset with a
fraction above zero gets at least one image when there are enough). The
same images and seed always give the same split; an image added later
moves at most the images next to a cut.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["SUBSETS", "assign_subsets", "parse_split"]

#: Subset names, in the order of ``--split``'s fractions.
SUBSETS = ("train", "val", "test")


def parse_split(text: str | Sequence[float] | None) -> tuple[float, ...] | None:
    """Fractions from ``"0.8,0.2"`` (or a sequence); None for no split.

    Raises
    ------
    ValueError
        Unless 1 to 3 finite fractions >= 0 that add up to 1.
    """
    if text is None:
        return None
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        values = tuple(float(v) for v in parts)
    except ValueError:
        raise ValueError(f"--split {text!r}: give fractions such as 0.8,0.2") from None
    if not 1 <= len(values) <= len(SUBSETS):
        raise ValueError(f"--split {text!r}: 1 to 3 fractions (train,val,test)")
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise ValueError(f"--split {text!r}: fractions must be numbers >= 0")
    if abs(sum(values) - 1) > 1e-6:
        raise ValueError(f"--split {text!r}: the fractions must add up to 1")
    return values


def _counts(n: int, fractions: Sequence[float]) -> list[int]:
    raw = [f * n for f in fractions]
    counts = [int(math.floor(r)) for r in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: (counts[i] - raw[i], i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    for i, f in enumerate(fractions):  # every wanted subset gets an image
        if f > 0 and counts[i] == 0:
            donor = max(range(len(counts)), key=lambda j: counts[j])
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[i] += 1
    return counts


def assign_subsets(
    names: Sequence[str], fractions: Sequence[float] | None, seed: int = 0
) -> dict[str, str]:
    """Each name's subset (``train``, ``val``, ``test``); all ``train``
    without fractions."""
    if not fractions:
        return dict.fromkeys(names, "train")
    import xxhash

    def rank(name: str) -> tuple[int, str]:
        key = f"{seed}\0{name}".encode("utf-8", "surrogatepass")
        return xxhash.xxh64(key).intdigest(), name

    ranked = sorted(names, key=rank)
    out: dict[str, str] = {}
    start = 0
    for subset, count in zip(SUBSETS, _counts(len(ranked), fractions), strict=False):
        out.update(dict.fromkeys(ranked[start : start + count], subset))
        start += count
    return out
