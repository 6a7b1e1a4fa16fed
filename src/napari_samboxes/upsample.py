"""Windowed mask statistics: box, area and stability at full resolution.

The reference upsamples every low-resolution mask logit map to the image's
full size (``F.interpolate``, bilinear, ``align_corners=False``: 256 ->
1024, crop to the resized input, -> original size), then thresholds it.
A full-resolution pixel is a convex combination of a few low-resolution
logits, so only the window where those logits can exceed the lowest
threshold (``MASK_THRESHOLD - STABILITY_OFFSET``) matters. This module
computes, for a whole batch of masks at once, the full-resolution values
inside each mask's window with the reference's bilinear arithmetic (the
same two-tap products and sums, in the same order, so the same bits on the
CPU), and from them the box, area and stability score of every mask.

Masks are grouped by window size (powers of two) under an element budget,
so memory stays bounded; a window over the budget is split into strips of
rows. Two host synchronisations per batch (windows, results), none per mask.

No napari or Qt; torch is imported lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["MASK_THRESHOLD", "STABILITY_OFFSET", "MaskStats", "Upsampler"]
__all__ += ["AxisTaps", "bilinear_taps", "low_res_extent"]

#: SAM's mask threshold on logits (``Sam.mask_threshold``).
MASK_THRESHOLD = 0.0
#: The reference generator's ``stability_score_offset``.
STABILITY_OFFSET = 1.0
#: Elements per intermediate tensor of one group, by device kind.
CPU_BUDGET = 1 << 19
GPU_BUDGET = 1 << 26


def bilinear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, ...]:
    """Taps of ``F.interpolate`` (bilinear, ``align_corners=False``) on one axis.

    Returns ``(i0, i1, lam0, lam1)``: output index ``d`` reads input indices
    ``i0[d]`` and ``i1[d]`` with float32 weights ``lam0[d]`` and ``lam1[d]``,
    computed with PyTorch's float32 arithmetic.
    """
    scale = np.float32(n_in / n_out)
    dst = np.arange(n_out, dtype=np.float32)
    src = scale * (dst + np.float32(0.5)) - np.float32(0.5)
    src = np.maximum(src, np.float32(0.0))
    i0 = src.astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam1 = (src - i0.astype(np.float32)).astype(np.float32)
    lam0 = (np.float32(1.0) - lam1).astype(np.float32)
    return i0, i1, lam0, lam1


@dataclass
class AxisTaps:
    """Both upsampling stages of one axis: host tables and device copies.

    Stage 1 maps low-res -> SAM's 1024 grid (``k0, k1, m0, m1`` per grid
    index); stage 2 maps the grid cropped to the resized input -> the
    original size (``i0, i1, l0, l1`` per output index). ``lo``/``hi``: the
    lowest and highest low-res index each output index depends on.

    ``mode`` says which grid indices are computed for an output window:
    ``"window"`` all those between the first and last it reads;
    ``"taps"`` (stage 2 shrinks by more than 2) only the two it reads per
    output index; ``"identity"`` (input and original sizes equal, so stage
    2 is ``1 * x0 + 0 * x1 == x0``) the output indices themselves, and
    stage 2 is skipped.
    """

    k0: np.ndarray
    k1: np.ndarray
    m0: np.ndarray
    m1: np.ndarray
    i0: np.ndarray
    i1: np.ndarray
    l0: np.ndarray
    l1: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    mode: str
    dev: dict[str, Any]

    @classmethod
    def build(
        cls, n_low: int, n_grid: int, n_input: int, n_orig: int, device: Any
    ) -> AxisTaps:
        """Taps for ``n_low`` -> ``n_grid`` -> first ``n_input`` -> ``n_orig``."""
        import torch

        k0, k1, m0, m1 = bilinear_taps(n_low, n_grid)
        i0, i1, l0, l1 = bilinear_taps(n_input, n_orig)
        lo = np.minimum(k0[i0], k0[i1])
        hi = np.maximum(k1[i0], k1[i1])
        host = {"k0": k0, "k1": k1, "m0": m0, "m1": m1}
        host.update(i0=i0, i1=i1, l0=l0, l1=l1, lo=lo, hi=hi)
        dev = {k: torch.from_numpy(v).to(device) for k, v in host.items()}
        if n_input == n_orig:
            mode = "identity"
        elif n_input > 2 * n_orig:
            mode = "taps"
        else:
            mode = "window"
        return cls(**host, mode=mode, dev=dev)

    @property
    def n_low_valid(self) -> int:
        """Low-res indices that reach the image (0 .. n_low_valid - 1)."""
        return int(self.hi[-1]) + 1

    def sizes(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(out, mid, low) lengths of the intermediates of windows ``[a, b)``."""
        out = b - a
        if self.mode == "identity":
            g0, g1, mid = a, b, out
        else:
            g0, g1 = self.i0[a], self.i1[b - 1] + 1
            mid = 2 * out if self.mode == "taps" else g1 - g0
        low = self.k1[g1 - 1] + 1 - self.k0[g0]
        return np.stack([out, mid, low], axis=1)

    def index(self, a: Any, b: Any, n: tuple[int, int, int]) -> dict[str, Any]:
        """Device indices and weights of one axis for windows ``[a, b)``.

        ``n`` = padded (out, mid, low) lengths. Positions are relative to
        each item's own window. Stage-2 weights of padded output positions
        are nan, so padding never passes a threshold; ``pad`` marks them.
        """
        import torch

        t = self.dev
        n_out, n_mid, n_low = n
        dev = a.device
        pos = a[:, None] + torch.arange(n_out, device=dev)
        pad = pos >= b[:, None]
        pos = pos.clamp(max=len(self.i0) - 1)
        out: dict[str, Any] = {"pad": pad}
        if self.mode == "identity":
            mid = pos
        elif self.mode == "taps":
            gi0, gi1 = t["i0"][pos], t["i1"][pos]
            mid = torch.stack([gi0, gi1], dim=2).flatten(1)
            out["p0"] = 2 * torch.arange(n_out, device=dev).expand_as(pos)
            out["p1"] = out["p0"] + 1
        else:
            g0 = t["i0"][a][:, None]
            mid = (g0 + torch.arange(n_mid, device=dev)).clamp(max=len(self.k0) - 1)
            out["p0"] = (t["i0"][pos] - g0).clamp(0, n_mid - 1)
            out["p1"] = (t["i1"][pos] - g0).clamp(0, n_mid - 1)
        nan = float("nan")
        if self.mode != "identity":
            out["l0"] = torch.where(pad, nan, t["l0"][pos])
            out["l1"] = t["l1"][pos]
        k0 = t["k0"][mid[:, :1]]
        out["low"] = (k0 + torch.arange(n_low, device=dev)).clamp(max=int(self.k1[-1]))
        out["q0"] = (t["k0"][mid] - k0).clamp(0, n_low - 1)
        out["q1"] = (t["k1"][mid] - k0).clamp(0, n_low - 1)
        # identity: stage 2 is skipped, so stage 1 marks the padding
        m0 = t["m0"][mid]
        out["m0"] = torch.where(pad, nan, m0) if self.mode == "identity" else m0
        out["m1"] = t["m1"][mid]
        return out


def low_res_extent(
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    low: int = 256,
    grid: int = 1024,
) -> tuple[int, int]:
    """Low-res rows and columns that reach the image (the rest is padding)."""
    k1 = bilinear_taps(low, grid)[1]
    ext = []
    for n_in, n_orig in zip(input_size, original_size, strict=True):
        i0, i1, _, _ = bilinear_taps(n_in, n_orig)
        ext.append(int(np.maximum(k1[i0], k1[i1]).max()) + 1)
    return ext[0], ext[1]


@dataclass
class MaskStats:
    """Per-mask results of :meth:`Upsampler.stats`, on the host.

    ``boxes`` (M, 4) int64 xyxy inclusive ([0, 0, 0, 0] when empty),
    ``areas`` (M,) int64, ``stability`` (M,) float32 (nan when the mask's
    union at ``-STABILITY_OFFSET`` is empty).
    """

    boxes: np.ndarray
    areas: np.ndarray
    stability: np.ndarray


def _stage(x: Any, n: int, i0: Any, i1: Any, w0: Any, w1: Any) -> Any:
    """One two-tap stage along the leading axis of each of ``n`` items.

    ``x``: (n * L, K), item ``j`` owning rows ``j*L .. j*L + L-1``; ``i0``,
    ``i1``, ``w0``, ``w1``: (n, P) taps and weights relative to each item.
    Returns (n * P, K) ``w0 * x[i0] + w1 * x[i1]``: the reference's products
    and sum as separate operations (no fused multiply-add), so the same bits.
    """
    import torch

    base = torch.arange(n, device=x.device)[:, None] * (x.shape[0] // n)
    a = x.index_select(0, (i0 + base).flatten())
    b = x.index_select(0, (i1 + base).flatten())
    a.mul_(w0.reshape(-1, 1))
    b.mul_(w1.reshape(-1, 1))
    return a.add_(b)


def _swap(x: Any, n: int) -> Any:
    """(n * A, B) -> (n * B, A): the other axis leading, contiguous."""
    return x.view(n, -1, x.shape[1]).transpose(1, 2).reshape(-1, x.shape[0] // n)


def _first_last(hit: Any, offset: Any) -> tuple[Any, Any]:
    """First and last True along the last axis (+ offset; none: 2**30, -1)."""
    import torch

    big = 1 << 30
    ar = torch.arange(hit.shape[-1], device=hit.device)
    ar = ar + (offset[:, None] if isinstance(offset, torch.Tensor) else offset)
    first = torch.where(hit, ar, big).amin(dim=-1)
    last = torch.where(hit, ar, -1).amax(dim=-1)
    return first, last


class Upsampler:
    """Box, area and stability of low-res masks, as the reference computes them.

    Parameters
    ----------
    input_size : (int, int)
        The image's size after SAM's resize (longest side 1024).
    original_size : (int, int)
        The image's size.
    device : str or torch.device
        Where the masks live.
    low, grid : int
        Low-res mask side (256) and SAM's input side (1024).
    budget : int, optional
        Elements per intermediate tensor; default by device.
    """

    def __init__(
        self,
        input_size: tuple[int, int],
        original_size: tuple[int, int],
        device: Any,
        *,
        low: int = 256,
        grid: int = 1024,
        budget: int | None = None,
    ) -> None:
        self.ay = AxisTaps.build(low, grid, input_size[0], original_size[0], device)
        self.ax = AxisTaps.build(low, grid, input_size[1], original_size[1], device)
        self.valid = (self.ay.n_low_valid, self.ax.n_low_valid)
        if budget is None:
            budget = CPU_BUDGET if str(device) == "cpu" else GPU_BUDGET
        self.budget = budget

    def windows(self, low: torch.Tensor) -> torch.Tensor:
        """Output windows ``(ya, yb, xa, xb)`` of each mask, (M, 4), on device.

        The window holds every pixel whose logit can exceed the union
        threshold; a mask whose low-res logits never do gets an empty one.
        """
        import torch

        nr, nc = self.valid
        above = low[:, :nr, :nc] > MASK_THRESHOLD - STABILITY_OFFSET
        rows = above.any(dim=2)
        cols = above.any(dim=1)
        r0, r1 = _first_last(rows, 0)
        c0, c1 = _first_last(cols, 0)
        dy, dx = self.ay.dev, self.ax.dev
        ya = torch.searchsorted(dy["hi"], r0)
        yb = torch.searchsorted(dy["lo"], r1, right=True)
        xa = torch.searchsorted(dx["hi"], c0)
        xb = torch.searchsorted(dx["lo"], c1, right=True)
        ok = rows.any(dim=1) & (ya < yb) & (xa < xb)
        return torch.stack([ya, yb, xa, xb], dim=1) * ok[:, None]

    def _items(self, win: np.ndarray) -> np.ndarray:
        """Work items ``(mask, ya, yb, xa, xb)``; big windows split in strips."""
        mask = np.nonzero(win[:, 1] > win[:, 0])[0]
        w = win[mask]
        sy = self.ay.sizes(w[:, 0], w[:, 1])
        sx = self.ax.sizes(w[:, 2], w[:, 3])
        # elements per output row of the largest intermediate
        per_row = sy.max(axis=1) / sy[:, 0] * sx.max(axis=1) + 1
        strip = np.maximum(1, (self.budget / per_row).astype(np.int64))
        h = w[:, 1] - w[:, 0]
        n_strips = -(-h // strip)
        rep = np.repeat(np.arange(len(mask)), n_strips)
        k = np.arange(len(rep)) - (np.cumsum(n_strips) - n_strips)[rep]
        ya = w[rep, 0] + k * strip[rep]
        yb = np.minimum(ya + strip[rep], w[rep, 1])
        return np.stack([mask[rep], ya, yb, w[rep, 2], w[rep, 3]], axis=1)

    def _groups(self, items: np.ndarray) -> list[tuple[np.ndarray, tuple, tuple]]:
        """Items grouped by window size (powers of two), within the budget.

        Returns ``(item indices, row sizes, column sizes)`` per group, the
        sizes padded to the group's largest.
        """
        if len(items) == 0:
            return []
        sy = self.ay.sizes(items[:, 1], items[:, 2])
        sx = self.ax.sizes(items[:, 3], items[:, 4])
        bh = np.ceil(np.log2(sy[:, 0])).astype(np.int64)
        bw = np.ceil(np.log2(sx[:, 0])).astype(np.int64)
        key = bh * 64 + bw
        order = np.argsort(key, kind="stable")
        _, starts = np.unique(key[order], return_index=True)
        ends = [*starts[1:], len(order)]
        groups = []
        for s, e in zip(starts, ends, strict=True):
            ny, nx = sy[order[s:e]].max(axis=0), sx[order[s:e]].max(axis=0)
            cost = int(np.outer(ny, nx).max())  # largest intermediate, per item
            n = max(1, int(self.budget // cost))
            for i in range(s, e, n):
                sel = order[i : min(i + n, e)]
                ny, nx = sy[sel].max(axis=0), sx[sel].max(axis=0)
                groups.append((sel, tuple(map(int, ny)), tuple(map(int, nx))))
        return groups

    def _values(self, low: Any, it: Any, ny: tuple, nx: tuple) -> Any:
        """Full-resolution logits of a group's windows, (n, out_h, out_w).

        The reference's order: stage 1 columns, stage 1 rows, stage 2
        columns, stage 2 rows; the axis being interpolated is kept leading
        (row selections, not gathers). Padding is nan.
        """
        r = self.ay.index(it[:, 1], it[:, 2], ny)
        c = self.ax.index(it[:, 3], it[:, 4], nx)
        n = len(it)
        # low-res windows, columns leading: (n * low_w, low_h)
        x = low.transpose(1, 2)[
            it[:, 0, None, None], c["low"][:, :, None], r["low"][:, None, :]
        ].reshape(n * nx[2], ny[2])
        x = _swap(_stage(x, n, c["q0"], c["q1"], c["m0"], c["m1"]), n)
        x = _stage(x, n, r["q0"], r["q1"], r["m0"], r["m1"])  # n*mid_h, mid_w
        if self.ax.mode != "identity":
            x = _swap(_stage(_swap(x, n), n, c["p0"], c["p1"], c["l0"], c["l1"]), n)
        if self.ay.mode != "identity":
            x = _stage(x, n, r["p0"], r["p1"], r["l0"], r["l1"])
        return x.view(n, ny[0], nx[0])

    def stats(self, low: torch.Tensor) -> MaskStats:
        """Box, area and stability of each low-res mask (M x 256 x 256).

        Two host synchronisations per call (windows, results), none per mask;
        the stability score is ``inter / union`` in int32 -> float32 as the
        reference's ``calculate_stability_score``.
        """
        import torch

        dev = low.device
        m = len(low)
        win = self.windows(low).cpu().numpy()
        items = self._items(win)
        acc = torch.zeros(3, m, dtype=torch.int64, device=dev)  # inter, union, area
        big = 1 << 30
        lo = torch.full((2, m), big, dtype=torch.int64, device=dev)  # x0, y0
        hi = torch.full((2, m), -1, dtype=torch.int64, device=dev)  # x1, y1
        items_dev = torch.from_numpy(items).to(dev)
        for sel, ny, nx in self._groups(items):
            it = items_dev[torch.from_numpy(sel).to(dev)]
            v = self._values(low, it, ny, nx)
            fg = v > MASK_THRESHOLD
            inter = v > MASK_THRESHOLD + STABILITY_OFFSET
            union = v > MASK_THRESHOLD - STABILITY_OFFSET
            counts = torch.stack(
                [torch.count_nonzero(t, (1, 2)) for t in (inter, union, fg)]
            )
            acc.index_add_(1, it[:, 0], counts)
            y0, y1 = _first_last(fg.any(dim=2), it[:, 1])
            x0, x1 = _first_last(fg.any(dim=1), it[:, 3])
            idx = it[:, 0].expand(2, -1)
            lo.scatter_reduce_(1, idx, torch.stack([x0, y0]), "amin")
            hi.scatter_reduce_(1, idx, torch.stack([x1, y1]), "amax")
        boxes = torch.stack([lo[0], lo[1], hi[0], hi[1]], dim=1)
        host = torch.cat([boxes * (acc[2] > 0)[:, None], acc.t()], dim=1).cpu()
        inter, union = host[:, 4].to(torch.int32), host[:, 5].to(torch.int32)
        return MaskStats(
            boxes=host[:, :4].numpy(),
            areas=host[:, 6].numpy(),
            stability=(inter / union).numpy(),
        )
