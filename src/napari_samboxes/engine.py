"""Candidate boxes from MobileSAM's "segment everything", boxes only.

The reference is ``mobile_sam.SamAutomaticMaskGenerator`` (one crop layer,
no small-region postprocessing). This engine returns the same candidates
(boxes, areas, predicted IoUs, stability scores) with less work:

* work that is the same for every prompt is done once per image (the image
  tokens' projections in the first two-way attention block), and no
  per-prompt copies of the image tokens are made before they differ;
* attention over the 7 prompt tokens is re-associated so that no
  (prompt x 4096 x 128) projection of the image tokens is materialised;
* masks are never upsampled to full resolution as a whole: a full-resolution
  pixel is a convex combination of a few low-resolution logits, so each mask
  is upsampled (with the reference's bilinear arithmetic) only inside the
  window where its low-resolution logits can exceed the union threshold;
* box, area and stability come straight from that window; no RLE.

Results stream per batch of prompts (:func:`iter_raw_batches`); the raw
per-mask results are kept so that thresholds and NMS can be changed later
without running the model (:meth:`RawMasks.candidates`).

No napari or Qt imports; torch is imported lazily.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .image import to_rgb8

if TYPE_CHECKING:  # pragma: no cover
    import torch


__all__ = [
    "Candidates",
    "RawMasks",
    "iter_raw_batches",
    "point_grid",
    "propose_boxes",
    "reference_candidates",
]

MASK_THRESHOLD = 0.0
_CPU_CHUNK = 4  # prompts per decoder pass on the CPU
STABILITY_OFFSET = 1.0


@dataclass
class Candidates:
    """Candidate boxes, sorted by area, smallest first.

    Attributes
    ----------
    boxes : numpy.ndarray
        (N, 4) float, ``x_min, y_min, x_max, y_max`` in pixel coordinates of
        the input image (x = column, y = row; inclusive: a mask covering
        columns 3..7 has ``x_min = 3, x_max = 7``).
    areas : numpy.ndarray
        (N,) mask pixel counts.
    scores : numpy.ndarray
        (N,) predicted IoU.
    stability : numpy.ndarray
        (N,) stability score.
    points : numpy.ndarray
        (N, 2) the grid point (x, y) each candidate came from.
    """

    boxes: np.ndarray
    areas: np.ndarray
    scores: np.ndarray
    stability: np.ndarray
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))

    def __len__(self) -> int:
        return len(self.areas)

    @classmethod
    def empty(cls) -> Candidates:
        """Return an empty candidate set."""
        return cls(
            boxes=np.zeros((0, 4)),
            areas=np.zeros(0, dtype=np.int64),
            scores=np.zeros(0, dtype=np.float32),
            stability=np.zeros(0, dtype=np.float32),
            points=np.zeros((0, 2)),
        )

    @classmethod
    def from_unsorted(
        cls,
        boxes: np.ndarray,
        areas: np.ndarray,
        scores: np.ndarray,
        stability: np.ndarray,
        points: np.ndarray | None = None,
    ) -> Candidates:
        """Build a candidate set, sorting by area (stable)."""
        areas = np.asarray(areas)
        order = np.argsort(areas, kind="stable")
        if points is None:
            points = np.full((len(areas), 2), np.nan)
        return cls(
            boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[order],
            areas=areas[order],
            scores=np.asarray(scores)[order],
            stability=np.asarray(stability)[order],
            points=np.asarray(points, dtype=np.float64).reshape(-1, 2)[order],
        )


@dataclass
class RawMasks:
    """Per-mask results before any threshold, in the reference's order.

    Three masks per grid point (MobileSAM's multimask output), in the order
    the reference generator sees them: point by point, mask by mask.
    """

    boxes: np.ndarray  # (M, 4) int64, xyxy inclusive
    areas: np.ndarray  # (M,) int64
    iou_preds: np.ndarray  # (M,) float32
    stability: np.ndarray  # (M,) float32 (nan for an empty mask)
    points: np.ndarray  # (M, 2) float64

    def __len__(self) -> int:
        return len(self.areas)

    @classmethod
    def empty(cls) -> RawMasks:
        """Return an empty set."""
        return cls(
            boxes=np.zeros((0, 4), dtype=np.int64),
            areas=np.zeros(0, dtype=np.int64),
            iou_preds=np.zeros(0, dtype=np.float32),
            stability=np.zeros(0, dtype=np.float32),
            points=np.zeros((0, 2)),
        )

    @classmethod
    def concat(cls, parts: list[RawMasks]) -> RawMasks:
        """Concatenate several sets, keeping their order."""
        if not parts:
            return cls.empty()
        return cls(
            boxes=np.concatenate([p.boxes for p in parts]),
            areas=np.concatenate([p.areas for p in parts]),
            iou_preds=np.concatenate([p.iou_preds for p in parts]),
            stability=np.concatenate([p.stability for p in parts]),
            points=np.concatenate([p.points for p in parts]),
        )

    def candidates(
        self,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        box_nms_thresh: float = 0.7,
    ) -> Candidates:
        """Apply the reference's filters and NMS; sort by area.

        Same rules as ``SamAutomaticMaskGenerator``: keep predicted IoU
        ``>`` ``pred_iou_thresh`` (when it is > 0), stability ``>=``
        ``stability_score_thresh`` (when > 0), then box NMS ranked by
        predicted IoU at ``box_nms_thresh``.
        """
        from .model import avoid_llvm_clash

        avoid_llvm_clash()
        import torch
        from torchvision.ops import batched_nms

        if len(self) == 0:
            return Candidates.empty()
        iou = torch.from_numpy(self.iou_preds)
        stab = torch.from_numpy(self.stability)
        keep = torch.ones(len(self), dtype=torch.bool)
        if pred_iou_thresh > 0.0:
            keep &= iou > pred_iou_thresh
        if stability_score_thresh > 0.0:
            keep &= stab >= stability_score_thresh
        idx = torch.nonzero(keep).flatten()
        if len(idx) == 0:
            return Candidates.empty()
        boxes = torch.from_numpy(self.boxes)[idx]
        kept = batched_nms(
            boxes.float(), iou[idx], torch.zeros(len(idx)), box_nms_thresh
        )
        sel = idx[kept].numpy()
        return Candidates.from_unsorted(
            self.boxes[sel],
            self.areas[sel],
            self.iou_preds[sel],
            self.stability[sel],
            self.points[sel],
        )


def point_grid(points_per_side: int, height: int, width: int) -> np.ndarray:
    """Return the reference's point grid in pixel (x, y) coordinates."""
    offset = 1 / (2 * points_per_side)
    side = np.linspace(offset, 1 - offset, points_per_side)
    xs = np.tile(side[None, :], (points_per_side, 1))
    ys = np.tile(side[:, None], (1, points_per_side))
    grid = np.stack([xs, ys], axis=-1).reshape(-1, 2)
    return grid * np.array([[width, height]])


# ---------------------------------------------------------------------------
# Upsampling of one mask inside a window, with the reference's arithmetic
# (F.interpolate bilinear, align_corners=False: 256 -> 1024, crop to the
# resized input, -> original size).


@dataclass
class _Axis:
    """Bilinear taps of one axis for both upsampling stages."""

    # stage 1 (low-res -> 1024 grid): per 1024-grid index
    k0: Any
    k1: Any
    m0: Any
    m1: Any
    # stage 2 (cropped 1024 grid -> original): per output index
    i0: Any
    i1: Any
    l0: Any
    l1: Any
    # per output index: lowest and highest low-res index it depends on
    lo: np.ndarray
    hi: np.ndarray


def _taps(n_in: int, n_out: int) -> tuple[np.ndarray, ...]:
    scale = np.float32(n_in / n_out)
    dst = np.arange(n_out, dtype=np.float32)
    src = scale * (dst + np.float32(0.5)) - np.float32(0.5)
    src = np.maximum(src, np.float32(0.0))
    i0 = src.astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam1 = (src - i0.astype(np.float32)).astype(np.float32)
    lam0 = (np.float32(1.0) - lam1).astype(np.float32)
    return i0, i1, lam0, lam1


def _axis(n_low: int, n_grid: int, n_input: int, n_orig: int, device: Any) -> _Axis:
    import torch

    k0, k1, m0, m1 = _taps(n_low, n_grid)
    i0, i1, l0, l1 = _taps(n_input, n_orig)
    lo = np.minimum(k0[i0], k0[i1])
    hi = np.maximum(k1[i0], k1[i1])

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(device)

    return _Axis(t(k0), t(k1), t(m0), t(m1), t(i0), t(i1), t(l0), t(l1), lo, hi)


def _lerp_cols(x: torch.Tensor, i0: Any, i1: Any, w0: Any, w1: Any) -> torch.Tensor:
    return w0 * x[:, i0] + w1 * x[:, i1]


def _lerp_rows(x: torch.Tensor, i0: Any, i1: Any, w0: Any, w1: Any) -> torch.Tensor:
    return w0[:, None] * x[i0] + w1[:, None] * x[i1]


def _window_stats(
    low: torch.Tensor, ay: _Axis, ax: _Axis, n_valid: tuple[int, int]
) -> tuple[list[int], int, float]:
    """Box, area and stability of one low-res mask, at full resolution."""
    import torch

    union_thr = MASK_THRESHOLD - STABILITY_OFFSET
    rows_any = (low[: n_valid[0], : n_valid[1]] > union_thr).any(dim=1)
    cols_any = (low[: n_valid[0], : n_valid[1]] > union_thr).any(dim=0)
    if not bool(rows_any.any()) or not bool(cols_any.any()):
        return [0, 0, 0, 0], 0, float("nan")
    r = torch.nonzero(rows_any).flatten()
    c = torch.nonzero(cols_any).flatten()
    r0, r1 = int(r[0]), int(r[-1])
    c0, c1 = int(c[0]), int(c[-1])
    ya = int(np.searchsorted(ay.hi, r0, side="left"))
    yb = int(np.searchsorted(ay.lo, r1, side="right"))
    xa = int(np.searchsorted(ax.hi, c0, side="left"))
    xb = int(np.searchsorted(ax.lo, c1, side="right"))
    if ya >= yb or xa >= xb:
        return [0, 0, 0, 0], 0, float("nan")
    # 1024-grid indices needed by the output window
    gi0, gi1 = ay.i0[ya:yb], ay.i1[ya:yb]
    gj0, gj1 = ax.i0[xa:xb], ax.i1[xa:xb]
    g_r0, g_r1 = int(gi0[0]), int(gi1[-1]) + 1
    g_c0, g_c1 = int(gj0[0]), int(gj1[-1]) + 1
    # stage 1 on the grid window [g_r0:g_r1, g_c0:g_c1]
    k_r0 = int(ay.k0[g_r0])
    k_r1 = int(ay.k1[g_r1 - 1]) + 1
    sub = low[k_r0:k_r1]
    s1 = _lerp_cols(
        sub, ax.k0[g_c0:g_c1], ax.k1[g_c0:g_c1], ax.m0[g_c0:g_c1], ax.m1[g_c0:g_c1]
    )
    s1 = _lerp_rows(
        s1,
        ay.k0[g_r0:g_r1] - k_r0,
        ay.k1[g_r0:g_r1] - k_r0,
        ay.m0[g_r0:g_r1],
        ay.m1[g_r0:g_r1],
    )
    # stage 2 on the output window
    s2 = _lerp_cols(s1, gj0 - g_c0, gj1 - g_c0, ax.l0[xa:xb], ax.l1[xa:xb])
    s2 = _lerp_rows(s2, gi0 - g_r0, gi1 - g_r0, ay.l0[ya:yb], ay.l1[ya:yb])
    inter = int((s2 > MASK_THRESHOLD + STABILITY_OFFSET).sum())
    union = int((s2 > union_thr).sum())
    fg = s2 > MASK_THRESHOLD
    area = int(fg.sum())
    stability = float(
        torch.tensor(inter, dtype=torch.int32) / torch.tensor(union, dtype=torch.int32)
    )
    if area == 0:
        return [0, 0, 0, 0], 0, stability
    rr = torch.nonzero(fg.any(dim=1)).flatten()
    cc = torch.nonzero(fg.any(dim=0)).flatten()
    box = [xa + int(cc[0]), ya + int(rr[0]), xa + int(cc[-1]), ya + int(rr[-1])]
    return box, area, stability


# ---------------------------------------------------------------------------
# The mask decoder, re-associated.


class _Decoder:
    """MobileSAM's mask decoder with per-image work hoisted out.

    Mathematically identical to ``MaskDecoder.predict_masks`` (multimask
    outputs only); floating-point results differ only by re-association.
    """

    def __init__(self, sam: Any, features: torch.Tensor) -> None:
        import torch

        self.sam = sam
        md = sam.mask_decoder
        self.md = md
        tr = md.transformer
        self.tr = tr
        pe = sam.prompt_encoder.get_dense_pe()  # 1 x C x h x w
        self.hw = tuple(features.shape[-2:])
        img = features[0].flatten(1).t()  # N x C
        self.pos = pe[0].flatten(1).t().contiguous()  # N x C
        dense = sam.prompt_encoder.no_mask_embed.weight  # 1 x C
        self.src0 = (img + dense).contiguous()  # same for every prompt
        l0 = tr.layers[0]
        k_in = self.src0 + self.pos
        up = md.output_upscaling
        conv1, conv2 = up[0], up[3]
        cin = conv1.weight.shape[0]
        # ConvTranspose2d weights as (Cin, di, dj, Cout) matrices
        self._up_weights = (
            conv1.weight.permute(0, 2, 3, 1).reshape(cin, -1).contiguous(),
            conv1.bias.repeat(4),
            conv2.weight.permute(0, 2, 3, 1)
            .reshape(conv2.weight.shape[0], -1)
            .contiguous(),
            conv2.bias.repeat(4),
        )
        self.valid_tokens = self.hw  # set by the caller to skip padding
        with torch.no_grad():
            a = l0.cross_attn_token_to_image
            h = a.num_heads
            k = a.k_proj(k_in)  # N x Ci
            v = a.v_proj(self.src0)
            n, ci = k.shape
            self.l0_t2i_kT = k.view(n, h, ci // h).permute(1, 2, 0).contiguous()
            self.l0_t2i_v = v.view(n, h, ci // h).transpose(0, 1).contiguous()
            b = l0.cross_attn_image_to_token
            self.l0_i2t_qT = b.q_proj(k_in).t().contiguous()  # Ci x N

    # -- attention helpers -------------------------------------------------
    @staticmethod
    def _heads(x: torch.Tensor, h: int) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, h, c // h).transpose(1, 2)

    def _tokens_to_image(
        self,
        attn: Any,
        q_tok: torch.Tensor,
        keys: torch.Tensor,
        keys_pos: torch.Tensor | None = None,
        k_pre: torch.Tensor | None = None,
        v_pre: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attention from the T tokens (queries) to the N image tokens.

        ``keys`` (values) and ``keys_pos`` (keys) are B x N x C, or, when the
        image tokens are the same for every prompt, ``k_pre``/``v_pre`` are
        their shared N x Ci projections. Returns B x T x C.
        """
        import torch

        h = attn.num_heads
        q = self._heads(attn.q_proj(q_tok), h)  # B h T c
        b, _, t, c = q.shape
        scale = 1.0 / np.sqrt(c)
        if k_pre is not None and v_pre is not None:
            # k_pre: h x c x N, v_pre: h x N x c (shared by all prompts)
            qh = q.permute(1, 0, 2, 3).reshape(h, b * t, c)
            logits = torch.bmm(qh, k_pre) * scale  # h, B*T, N
            w = torch.softmax(logits, dim=-1)
            out = torch.bmm(w, v_pre).view(h, b, t, c).permute(1, 0, 2, 3)
        else:
            assert keys_pos is not None
            # (kp Wk_h^T + bk_h) . q_h = kp . (Wk_h^T q_h) + bk_h . q_h
            wk = attn.k_proj.weight.reshape(h, c, -1)  # h c C
            bk = attn.k_proj.bias.reshape(h, c)
            a = torch.matmul(q * scale, wk.unsqueeze(0)).reshape(b, h * t, -1)
            a0 = (q * scale * bk[None, :, None, :]).sum(-1).reshape(b, h * t, 1)
            logits = torch.baddbmm(a0, a, keys_pos.transpose(1, 2))  # B hT N
            w = torch.softmax(logits, dim=-1)
            pooled = torch.bmm(w, keys).reshape(b, h, t, -1)  # B h T C
            wv = attn.v_proj.weight.reshape(h, c, -1)  # h c C
            bv = attn.v_proj.bias.reshape(h, c)
            out = torch.matmul(pooled, wv.transpose(1, 2).unsqueeze(0))
            out = out + bv[None, :, None, :]
        out = out.transpose(1, 2).reshape(b, t, h * c)
        return attn.out_proj(out)

    def _image_to_tokens(
        self,
        attn: Any,
        residual: torch.Tensor,
        q_img: torch.Tensor | None,
        keys_pos: torch.Tensor | None,
        k_tok: torch.Tensor,
        v_tok: torch.Tensor,
    ) -> torch.Tensor:
        """``residual`` + attention from the N image tokens to the T tokens.

        Either ``q_img`` (the shared N x Ci query projection) or
        ``keys_pos`` (B x N x C, image tokens plus positions) is given.
        Returns B x N x C; no B x N x Ci projection is materialised.
        """
        import torch

        h = attn.num_heads
        k = attn.k_proj(k_tok)  # B T Ci
        v = attn.v_proj(v_tok)
        b, t, ci = k.shape
        c = ci // h
        scale = 1.0 / np.sqrt(c)
        k = k.reshape(b, t, h, c)
        v = v.reshape(b, t, h, c)
        if q_img is not None:
            # q_img: Ci x N, shared. Block-diagonal (B, h*T, Ci): row h*T+t
            # holds k[b, t, h] in head h's columns.
            m = k.new_zeros(b, h, t, h, c)
            for hi in range(h):
                m[:, hi, :, hi, :] = k[:, :, hi, :] * scale
            logits = torch.matmul(m.view(b, h * t, ci), q_img)  # B, hT, N
        else:
            assert keys_pos is not None
            # row h*T+t: k[b,t,h] Wq_h, so that logits = (kp Wq_h^T + bq_h) k
            kk = (k * scale).permute(2, 3, 0, 1).reshape(h, c, b * t)
            wq = attn.q_proj.weight.view(h, c, -1)  # h c C
            g = torch.bmm(wq.transpose(1, 2), kk)  # h, C, B*T
            g = g.view(h, -1, b, t).permute(2, 0, 3, 1).reshape(b, h * t, -1)
            g0 = torch.einsum("hc,bthc->bht", attn.q_proj.bias.view(h, c), k * scale)
            logits = torch.baddbmm(
                g0.reshape(b, h * t, 1), g, keys_pos.transpose(1, 2)
            )  # B, hT, N
        n = logits.shape[-1]
        # softmax over the T tokens of each head (a non-last, vectorised axis)
        w = torch.softmax(logits.view(b, h, t, n), dim=2).view(b, h * t, n)
        # out_proj folded into the values; its bias spread over the heads
        # (each head's weights sum to one)
        wo = attn.out_proj.weight.view(-1, h, c).permute(1, 2, 0)  # h c C
        vv = v.permute(2, 0, 1, 3).reshape(h, b * t, c)
        u = torch.bmm(vv, wo).view(h, b, t, -1).permute(1, 0, 2, 3)
        u = (u + attn.out_proj.bias / h).reshape(b, h * t, -1)
        if residual.shape[0] != b:
            residual = residual.expand(b, -1, -1)
        return torch.baddbmm(residual, w.transpose(1, 2), u)

    def _upscale_masks(self, keys: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        """``output_upscaling`` and the hypernetwork product, channels-last.

        Each ConvTranspose2d(kernel 2, stride 2) is one matrix product over
        the channels and LayerNorm2d a layer norm over the last axis; each
        token only feeds its own 4 x 4 block of low-res logits. So only the
        tokens whose blocks reach the image (not SAM's square padding) are
        computed, a few token rows at a time (small, cache-resident
        intermediates). Returns B x 3 x 4h x 4w; blocks that only cover
        padding (never read, the reference crops them) hold -1e4.
        """
        import torch
        import torch.nn.functional as F

        up = self.md.output_upscaling
        conv1, ln, conv2 = up[0], up[1], up[3]
        b, n, cin = keys.shape
        h, w = self.hw
        nr, nc = self.valid_tokens
        c1 = conv1.weight.shape[1]
        c2 = conv2.weight.shape[1]
        w1, b1, w2, b2 = self._up_weights
        grid = keys.view(b, h, w, cin)
        out = keys.new_full((b, 3, 4 * h, 4 * w), -1e4)
        step = max(1, 4096 // (b * nc))  # token rows per slab
        for r0 in range(0, nr, step):
            r1 = min(nr, r0 + step)
            x = grid[:, r0:r1, :nc].reshape(-1, cin)
            x = torch.addmm(b1, x, w1).view(-1, c1)  # (tokens*4) x C1
            x = F.layer_norm(x, (c1,), ln.weight, ln.bias, ln.eps)
            torch.ops.aten.gelu_(x)
            x = torch.addmm(b2, x, w2)  # (tokens*4) x (4*C2)
            torch.ops.aten.gelu_(x)
            x = x.view(b, -1, c2)
            m = torch.bmm(x, hyper.transpose(1, 2))  # B, tokens*16, 3
            # (y, x, di, dj, di2, dj2) -> rows 4y + 2di + di2, cols 4x + 2dj + dj2
            m = m.view(b, r1 - r0, nc, 2, 2, 2, 2, 3).permute(0, 7, 1, 3, 5, 2, 4, 6)
            out[:, :, 4 * r0 : 4 * r1, : 4 * nc] = m.reshape(
                b, 3, 4 * (r1 - r0), 4 * nc
            )
        return out

    # -- forward -----------------------------------------------------------
    def __call__(self, sparse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res multimask logits (B x 3 x 256 x 256) and IoU (B x 3)."""
        import torch

        md, tr = self.md, self.tr
        b = sparse.shape[0]
        out_tok = torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tok.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
        l0, l1 = tr.layers
        # ---- layer 0 (skip_first_layer_pe)
        q = l0.norm1(l0.self_attn(q=tokens, k=tokens, v=tokens))
        q = l0.norm2(
            q
            + self._tokens_to_image(
                l0.cross_attn_token_to_image,
                q + tokens,
                self.src0,
                k_pre=self.l0_t2i_kT,
                v_pre=self.l0_t2i_v,
            )
        )
        q = l0.norm3(q + l0.mlp(q))
        keys = self._image_to_tokens(
            l0.cross_attn_image_to_token,
            self.src0.unsqueeze(0),
            self.l0_i2t_qT,
            None,
            q + tokens,
            q,
        )
        keys = l0.norm4(keys)
        # ---- layer 1
        qq = q + tokens
        q = l1.norm1(q + l1.self_attn(q=qq, k=qq, v=q))
        keys_pos = keys + self.pos
        q = l1.norm2(
            q
            + self._tokens_to_image(
                l1.cross_attn_token_to_image, q + tokens, keys, keys_pos
            )
        )
        q = l1.norm3(q + l1.mlp(q))
        keys = self._image_to_tokens(
            l1.cross_attn_image_to_token, keys, None, keys_pos, q + tokens, q
        )
        del keys_pos
        keys = l1.norm4(keys)
        # ---- final token-to-image attention
        keys_pos = keys + self.pos
        q = q + self._tokens_to_image(
            tr.final_attn_token_to_image, q + tokens, keys, keys_pos
        )
        del keys_pos
        q = tr.norm_final_attn(q)
        # ---- masks (multimask outputs 1..3 only) and IoU
        hyper = torch.stack(
            [md.output_hypernetworks_mlps[i](q[:, 1 + i]) for i in (1, 2, 3)], dim=1
        )
        masks = self._upscale_masks(keys, hyper)
        iou = md.iou_prediction_head(q[:, 0])[:, 1:]
        return masks, iou


# ---------------------------------------------------------------------------


def _as_sam(model: Any) -> tuple[Any, str]:
    sam = getattr(model, "sam", model)
    return sam, str(next(sam.parameters()).device)


def iter_raw_batches(
    image: np.ndarray,
    model: Any,
    *,
    points_per_side: int = 32,
    points_per_batch: int = 64,
    embedding: Any = None,
) -> Iterator[tuple[int, int, RawMasks]]:
    """Run the model batch by batch; yield raw per-mask results.

    Parameters
    ----------
    image : numpy.ndarray
        H x W x 3 uint8 RGB (use :func:`napari_samboxes.image.to_rgb8`).
    model : SamModel or mobile_sam Sam
        The loaded model.
    points_per_side, points_per_batch : int
        As in ``SamAutomaticMaskGenerator``.

    Yields
    ------
    (batch_index, n_batches, RawMasks)
        One item per batch of prompts, as soon as it is computed.
    """
    import torch

    from .model import _import_mobile_sam

    if points_per_side < 1 or points_per_batch < 1:
        raise ValueError("points_per_side and points_per_batch must be >= 1")
    ms = _import_mobile_sam()
    sam, device = _as_sam(model)
    predictor = ms.SamPredictor(sam)
    with torch.inference_mode():
        predictor.set_image(image)
        height, width = image.shape[:2]
        input_h, input_w = predictor.input_size
        ay = _axis(256, 1024, input_h, height, device)
        ax = _axis(256, 1024, input_w, width, device)
        low_valid = (int(ay.hi[-1]) + 1, int(ax.hi[-1]) + 1)
        decoder = _Decoder(sam, predictor.features)
        decoder.valid_tokens = (-(-low_valid[0] // 4), -(-low_valid[1] // 4))
        points = point_grid(points_per_side, height, width)
        n_batches = -(-len(points) // points_per_batch)
        for bi in range(n_batches):
            pts = points[bi * points_per_batch : (bi + 1) * points_per_batch]
            coords = predictor.transform.apply_coords(pts, (height, width))
            in_pts = torch.as_tensor(coords, device=device)[:, None, :]
            in_lab = torch.ones(len(pts), 1, dtype=torch.int, device=device)
            sparse, _ = sam.prompt_encoder(
                points=(in_pts, in_lab), boxes=None, masks=None
            )
            # Small chunks keep every per-prompt tensor in the allocator's
            # reusable heap (no fresh pages per batch) and in cache: about
            # 2x faster on a 2-core CPU than one pass over the batch.
            step = len(pts) if device.startswith("cuda") else _CPU_CHUNK
            outs = [decoder(sparse[i : i + step]) for i in range(0, len(pts), step)]
            low = torch.cat([o[0] for o in outs]).flatten(0, 1)
            iou = torch.cat([o[1] for o in outs])
            del outs
            boxes = np.zeros((len(low), 4), dtype=np.int64)
            areas = np.zeros(len(low), dtype=np.int64)
            stab = np.zeros(len(low), dtype=np.float32)
            for m in range(len(low)):
                box, area, s = _window_stats(low[m], ay, ax, low_valid)
                boxes[m] = box
                areas[m] = area
                stab[m] = s
            yield (
                bi,
                n_batches,
                RawMasks(
                    boxes=boxes,
                    areas=areas,
                    iou_preds=iou.flatten().float().cpu().numpy(),
                    stability=stab,
                    points=np.repeat(pts, 3, axis=0),
                ),
            )


def propose_boxes(
    image: np.ndarray,
    model: Any,
    *,
    points_per_side: int = 32,
    points_per_batch: int = 64,
    pred_iou_thresh: float = 0.88,
    stability_score_thresh: float = 0.95,
    box_nms_thresh: float = 0.7,
    progress: Callable[[int, int], Any] | None = None,
) -> Candidates:
    """Candidate boxes for an image: MobileSAM's "segment everything".

    Parameters
    ----------
    image : numpy.ndarray
        2D grayscale, H x W x 3 or H x W x 4, any numeric dtype (mapped to
        8-bit RGB over its full range; see :func:`~napari_samboxes.image.to_rgb8`
        for contrast limits).
    model : SamModel
        From :func:`~napari_samboxes.model.load_model`.
    points_per_side, points_per_batch, pred_iou_thresh, \
stability_score_thresh, box_nms_thresh
        Same meaning as in ``mobile_sam.SamAutomaticMaskGenerator``.
    progress : callable, optional
        Called as ``progress(done_batches, n_batches)`` after each batch.

    Returns
    -------
    Candidates
        Sorted by area, smallest first; the same set as the reference
        generator returns for the same settings.
    """
    rgb = to_rgb8(image)
    parts: list[RawMasks] = []
    for bi, n, raw in iter_raw_batches(
        rgb, model, points_per_side=points_per_side, points_per_batch=points_per_batch
    ):
        parts.append(raw)
        if progress is not None:
            progress(bi + 1, n)
    return RawMasks.concat(parts).candidates(
        pred_iou_thresh, stability_score_thresh, box_nms_thresh
    )


def reference_candidates(image: np.ndarray, model: Any, **settings: Any) -> Candidates:
    """Candidates from ``mobile_sam.SamAutomaticMaskGenerator`` itself.

    The reference the engine is checked against (tests, benchmarks).
    ``image`` must be H x W x 3 uint8.
    """
    import torch

    from .model import _import_mobile_sam

    ms = _import_mobile_sam()
    sam, _ = _as_sam(model)
    gen = ms.SamAutomaticMaskGenerator(sam, **settings)
    with torch.inference_mode():
        records = gen.generate(image)
    if not records:
        return Candidates.empty()
    xywh = np.array([r["bbox"] for r in records], dtype=np.float64)
    boxes = xywh.copy()
    boxes[:, 2] = xywh[:, 0] + xywh[:, 2]
    boxes[:, 3] = xywh[:, 1] + xywh[:, 3]
    return Candidates.from_unsorted(
        boxes,
        np.array([r["area"] for r in records], dtype=np.int64),
        np.array([r["predicted_iou"] for r in records], dtype=np.float32),
        np.array([r["stability_score"] for r in records], dtype=np.float32),
        np.array([r["point_coords"][0] for r in records], dtype=np.float64),
    )
