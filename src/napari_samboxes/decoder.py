"""MobileSAM's mask decoder, re-associated, built by :func:`build_decoder`.

Mathematically identical to ``MaskDecoder.predict_masks`` (multimask
outputs only); floating-point results differ only by re-association:

* work that is the same for every prompt is done once per image (the image
  tokens' projections in the first two-way attention block), and no
  per-prompt copies of the image tokens are made before they differ;
* attention over the 7 prompt tokens is re-associated so that no
  (prompt x 4096 x 128) projection of the image tokens is materialised;
* only the image tokens whose upscaled 4 x 4 blocks reach the image (not
  SAM's square padding) are upscaled.

No napari or Qt; torch is imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .upsample import low_res_extent

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["CPU_CHUNK", "Decoder", "build_decoder"]

#: Prompts per decoder pass on the CPU.
CPU_CHUNK = 4
#: Output tokens read after the final attention: the IoU token and the
#: multimask tokens 1..3 (not mask token 0 or the prompt tokens).
_USED = [0, 2, 3, 4]


def build_decoder(
    sam: Any,
    features: torch.Tensor,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
) -> Decoder:
    """The re-associated decoder for one image embedding.

    Parameters
    ----------
    sam : mobile_sam Sam
        The model (its prompt encoder and mask decoder are used).
    features : torch.Tensor
        1 x C x h x w image embedding (``SamPredictor.features``).
    input_size, original_size : (int, int)
        The image's size after SAM's resize, and its own size: they set the
        window of image tokens whose masks reach the image.
    """
    h, w = features.shape[-2:]
    scale = sam.mask_decoder.output_upscaling[0].stride[0] ** 2  # 4
    grid = sam.image_encoder.img_size
    rows, cols = low_res_extent(input_size, original_size, low=scale * h, grid=grid)
    tokens = (min(h, -(-rows // scale)), min(w, -(-cols // scale)))
    return Decoder(sam, features, tokens)


class Decoder:
    """MobileSAM's mask decoder with per-image work hoisted out.

    Mathematically identical to ``MaskDecoder.predict_masks`` (multimask
    outputs only); floating-point results differ only by re-association.
    """

    def __init__(
        self, sam: Any, features: torch.Tensor, valid_tokens: tuple[int, int]
    ) -> None:
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
        self.valid_tokens = valid_tokens
        with torch.no_grad():
            a = l0.cross_attn_token_to_image
            h = a.num_heads
            k = a.k_proj(k_in)  # N x Ci
            v = a.v_proj(self.src0)
            n, ci = k.shape
            self.l0_t2i_kT = k.view(n, h, ci // h).permute(1, 2, 0).contiguous()
            self.l0_t2i_v = v.view(n, h, ci // h).transpose(0, 1).contiguous()
            b = l0.cross_attn_image_to_token
            qT = b.q_proj(k_in).t()  # Ci x N, as h x c x N per head
            self.l0_i2t_qT = qT.reshape(b.num_heads, -1, n).contiguous()

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

        Either ``q_img`` (the shared query projection, h x c x N) or
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
            # q_img: h x c x N, shared: one product per head
            kh = (k * scale).permute(2, 0, 1, 3).reshape(h, b * t, c)
            logits = torch.bmm(kh, q_img)  # h, B*T, N
            logits = logits.view(h, b, t, -1).transpose(0, 1).reshape(b, h * t, -1)
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
        if q_img is not None:  # shared image tokens: a new tensor (even
            # for one prompt, whose residual has the same shape: never
            # written into, it is every later prompt's input too)
            return torch.baddbmm(residual.expand(b, -1, -1), w.transpose(1, 2), u)
        return residual.baddbmm_(w.transpose(1, 2), u)  # consumed in place

    def _upscale_masks(self, keys: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        """``output_upscaling`` and the hypernetwork product, channels-last.

        Each ConvTranspose2d(kernel 2, stride 2) is one matrix product over
        the channels and LayerNorm2d a layer norm over the last axis; each
        token only feeds its own 4 x 4 block of low-res logits. So only the
        tokens whose blocks reach the image (not SAM's square padding) are
        computed, a few token rows at a time (small, cache-resident
        intermediates). Returns B x 3 x 4h x 4w; blocks that only cover
        padding are left unset (never read: the reference crops them).
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
        out = keys.new_empty((b, 3, 4 * h, 4 * w))
        step = max(1, 4096 // (b * nc))  # token rows per slab
        for r0 in range(0, nr, step):
            r1 = min(nr, r0 + step)
            rows = r1 - r0
            x = grid[:, r0:r1, :nc]
            if nc == w:  # whole token rows: a view, no copy
                x = torch.matmul(x.reshape(b, -1, cin), w1)
                x += b1
            else:
                x = torch.addmm(b1, x.reshape(-1, cin), w1)
            x = x.view(b, rows, nc, 2, 2, c1)  # (y, x, di, dj, channel)
            x = F.layer_norm(x, (c1,), ln.weight, ln.bias, ln.eps)
            torch.ops.aten.gelu_(x)
            # rows in image order at 2x, (y, di, x, dj): 256-byte runs
            x = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, c1)
            x = torch.addmm(b2, x, w2)  # columns (di2, dj2, channel)
            torch.ops.aten.gelu_(x)
            m = torch.bmm(hyper, x.view(b, -1, c2).transpose(1, 2))  # B, 3, P
            # P = (y, di, x, dj, di2, dj2) -> rows 4y + 2di + di2, cols
            # 4x + 2dj + dj2. Each dj2 pair moves as one 8-byte element,
            # so every copied run is a whole row of the slab (bit-exact).
            src = m.view(b, 3, rows, 2, 2 * nc, 2, 2).view(torch.float64)[..., 0]
            dst = out[:, :, 4 * r0 : 4 * r1, : 4 * nc].view(torch.float64)
            dst.view(b, 3, rows, 2, 2, 2 * nc).copy_(src.transpose(-1, -2))
        return out

    # -- forward -----------------------------------------------------------
    def run(self, sparse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All prompts of a batch: (B*3) x 256 x 256 logits and (B*3,) IoUs.

        One pass on a GPU; on the CPU, chunks of :data:`CPU_CHUNK` prompts
        keep every per-prompt tensor in cache and in the allocator's
        reusable heap (about 2x faster on a 2-core CPU than one pass).
        """
        import torch

        if sparse.device.type != "cpu":
            low, iou = self(sparse)
        else:
            # every chunk has CPU_CHUNK prompts (the last one padded with
            # copies of its last prompt): a prompt's masks are then the same
            # bits whichever batch it comes in (coarse-to-fine order, clicks
            # first, resumed runs)
            step, b = CPU_CHUNK, len(sparse)
            pad = -b % step
            if pad:
                sparse = torch.cat([sparse, sparse[-1:].expand(pad, -1, -1)])
            outs = [self(sparse[i : i + step]) for i in range(0, len(sparse), step)]
            low = torch.cat([o[0] for o in outs])[:b]
            iou = torch.cat([o[1] for o in outs])[:b]
        return low.flatten(0, 1), iou.flatten()

    def __call__(self, sparse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res multimask logits (B x 3 x 256 x 256) and IoU (B x 3)."""
        return self._per_prompt(*self._layer0_tokens(sparse))

    def _layer0_tokens(self, sparse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt tokens and their layer-0 queries (shared image tokens only)."""
        import torch

        md, tr = self.md, self.tr
        b = sparse.shape[0]
        out_tok = torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tok.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
        l0 = tr.layers[0]
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
        return tokens, l0.norm3(q + l0.mlp(q))

    def _per_prompt(
        self, tokens: torch.Tensor, q: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Everything after layer 0's token side: masks and IoUs."""
        import torch

        md, tr = self.md, self.tr
        l0, l1 = tr.layers
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
        # ---- final token-to-image attention, for the tokens read after it:
        # the IoU token and mask tokens 1..3 (each query row is independent)
        q = q[:, _USED]
        keys_pos = keys + self.pos
        q = q + self._tokens_to_image(
            tr.final_attn_token_to_image, q + tokens[:, _USED], keys, keys_pos
        )
        del keys_pos
        q = tr.norm_final_attn(q)
        # ---- masks (multimask outputs 1..3 only) and IoU
        hyper = torch.stack(
            [md.output_hypernetworks_mlps[i](q[:, i]) for i in (1, 2, 3)], dim=1
        )
        masks = self._upscale_masks(keys, hyper)
        iou = md.iou_prediction_head(q[:, 0])[:, 1:]
        return masks, iou
