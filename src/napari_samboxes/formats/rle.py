"""Masks as COCO run-length encodings, and the box table's ``mask`` cell.

No napari or Qt; numpy only (pycocotools is not needed to write or read).

**COCO RLE.** A mask of H x W pixels is read column by column (Fortran
order) as runs of 0s and 1s, starting with 0s; the run lengths are
compressed into ASCII as COCO's ``rleToString`` does (5 bits per
character, each count after the second stored as the difference to the
count two before). ``{"size": [H, W], "counts": "..."}`` is what
``pycocotools.mask.decode`` reads.

**The mask cell.** A box's mask is stored in its box table row as the text
``"x0 y0 w h counts"``: the mask cropped to its own bounding box (left,
top, width, height in pixels) and that crop's compressed RLE. The cell
holds only digits, spaces and the characters ``0``..``o`` of the RLE (no
comma, quote or line break). A mask is used only while its bounding box
is its row's box (:func:`cell_box`); a box moved or resized since keeps a
stale cell that every export ignores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import FormatError

__all__ = [
    "cell_box",
    "cell_to_image_rle",
    "counts_to_string",
    "decode_cell",
    "decode_rle",
    "encode_cell",
    "encode_rle",
    "string_to_counts",
]


def counts_to_string(counts: Sequence[int]) -> str:
    """COCO's ``rleToString``: run lengths -> compressed ASCII."""
    out: list[str] = []
    for i, n in enumerate(counts):
        x = int(n) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift, as in C on a signed long
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def string_to_counts(s: str) -> list[int]:
    """COCO's ``rleFrString``: compressed ASCII -> run lengths.

    Raises
    ------
    ValueError
        For a character outside COCO's alphabet or a truncated string.
    """
    counts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x = k = 0
        more = True
        while more:
            if p >= n:
                raise ValueError("truncated RLE string")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {s[p]!r} is not in COCO's RLE alphabet")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and (exclusive) ends of the 1-runs of each column of a 2D
    mask, as (column, row) pairs in Fortran order."""
    m = np.asarray(mask, dtype=bool)
    padded = np.zeros((m.shape[1], m.shape[0] + 2), dtype=np.int8)
    padded[:, 1:-1] = m.T
    d = np.diff(padded, axis=1)
    sc, sr = np.nonzero(d == 1)
    ec, er = np.nonzero(d == -1)
    return np.column_stack([sc, sr]), np.column_stack([ec, er])


def _counts(starts: np.ndarray, ends: np.ndarray, total: int) -> list[int]:
    """Alternating 0/1 run lengths from sorted flat run starts and ends."""
    if len(starts) == 0:
        return [total]
    keep = np.ones(len(starts), dtype=bool)
    keep[1:] = starts[1:] != ends[:-1]  # runs that touch become one
    s = starts[keep]
    e = np.append(ends[np.flatnonzero(keep)[1:] - 1], ends[-1])
    edges = np.column_stack([s, e]).reshape(-1)
    counts = np.diff(np.concatenate([[0], edges, [total]])).astype(int).tolist()
    return counts[:-1] if counts[-1] == 0 else counts  # as pycocotools ends


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO's compressed RLE of a 2D mask: ``{"size": [H, W], "counts": str}``."""
    m = np.asarray(mask, dtype=bool)
    h, w = m.shape
    (sc, sr), (ec, er) = (a.T for a in _runs(m))
    counts = _counts(sc * h + sr, ec * h + er, h * w)
    return {"size": [int(h), int(w)], "counts": counts_to_string(counts)}


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """The H x W bool mask of a compressed RLE (as :func:`encode_rle` writes)."""
    h, w = (int(v) for v in rle["size"])
    counts = string_to_counts(str(rle["counts"]))
    if any(c < 0 for c in counts) or sum(counts) != h * w:
        raise ValueError(f"the RLE's counts do not add up to {h} x {w} pixels")
    flat = np.zeros(h * w, dtype=bool)
    pos = np.concatenate([[0], np.cumsum(counts)])
    for a, b in zip(pos[1::2], pos[2::2], strict=False):
        flat[a:b] = True
    return flat.reshape(w, h).T


def encode_cell(mask: np.ndarray) -> str:
    """The mask cell of a full-image mask ("" for an empty mask)."""
    m = np.asarray(mask, dtype=bool)
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if len(rows) == 0:
        return ""
    y0, y1, x0, x1 = rows[0], rows[-1], cols[0], cols[-1]
    crop = m[y0 : y1 + 1, x0 : x1 + 1]
    return f"{x0} {y0} {x1 - x0 + 1} {y1 - y0 + 1} {encode_rle(crop)['counts']}"


def _parse_cell(cell: str) -> tuple[int, int, int, int, str]:
    parts = cell.split()
    if len(parts) != 5:
        raise FormatError("a mask cell is 'x0 y0 w h counts'")
    try:
        x0, y0, w, h = (int(v) for v in parts[:4])
    except ValueError:
        raise FormatError("a mask cell starts with 4 whole numbers") from None
    if x0 < 0 or y0 < 0 or w < 1 or h < 1:
        raise FormatError("a mask cell's origin and size must be >= 0 and >= 1")
    return x0, y0, w, h, parts[4]


def cell_box(cell: str) -> tuple[int, int, int, int] | None:
    """The inclusive xyxy box of a mask cell, or None ("" or malformed)."""
    try:
        x0, y0, w, h, _ = _parse_cell(cell)
    except FormatError:
        return None
    return x0, y0, x0 + w - 1, y0 + h - 1


def decode_cell(cell: str) -> tuple[int, int, np.ndarray]:
    """``(x0, y0, crop)`` of a mask cell; ``crop`` is an h x w bool array.

    Raises
    ------
    FormatError
        For a malformed cell (the caller adds the file and line).
    """
    x0, y0, w, h, counts = _parse_cell(cell)
    try:
        crop = decode_rle({"size": [h, w], "counts": counts})
    except ValueError as e:
        raise FormatError(f"a mask cell's RLE is damaged ({e})") from None
    return x0, y0, crop


def cell_to_image_rle(cell: str, width: int, height: int) -> dict[str, Any]:
    """The compressed RLE, over the whole ``width`` x ``height`` image, of a
    mask cell (computed from the crop's runs, the image never built).

    Raises
    ------
    FormatError
        For a malformed cell or one reaching outside the image.
    """
    x0, y0, crop = decode_cell(cell)
    h, w = crop.shape
    if x0 + w > width or y0 + h > height:
        raise FormatError(f"the mask reaches outside the {width} x {height} image")
    (sc, sr), (ec, er) = (a.T for a in _runs(crop))
    starts = (sc + x0) * height + y0 + sr
    ends = (ec + x0) * height + y0 + er
    counts = _counts(starts, ends, width * height)
    return {"size": [int(height), int(width)], "counts": counts_to_string(counts)}
