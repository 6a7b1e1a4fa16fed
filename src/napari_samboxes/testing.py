"""Real MobileSAM checkpoints for tests and benchmarks.

No real weights can be downloaded on the machines that run our tests, and a
randomly initialised vit_t predicts scattered noise (every box is the whole
image), so no test built on it could tell a right box from a wrong one.

:func:`write_structured_checkpoint` writes a checkpoint of the real vit_t
architecture whose mask decoder is set by hand so that every point prompt
yields three nested, localised blobs around the point:

* the prompt encoder's random Fourier features are replaced by four
  harmonics per axis, so that the dot product of two positional codes,
  weighted by Fejer coefficients, is a kernel peaked where the two
  positions meet (no aliasing inside the 1024 x 1024 frame);
* in the first image-to-token attention each image token's logit towards the
  point token is that kernel; the attention weight is carried, through one
  channel of the image tokens, into the upscaled embedding;
* the three multimask hypernetworks threshold that channel at three levels
  (three nested blob sizes), steeply, so stability scores are near 1;
* every place that must ignore the positional code (self-attention
  projections, layer-norm gains) is blind to it, so blob size does not drift
  with the point's position;
* a small share of the (random) image encoder's features leaks into the
  kernel and into the IoU head, so outlines and predicted IoUs depend on the
  image content and on the point, as with a trained model.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .candidates import Candidates
from .model import build_vit_t
from .settings import DEFAULTS, Settings

__all__ = [
    "reference_candidates",
    "structured_state_dict",
    "write_random_checkpoint",
    "write_structured_checkpoint",
]

# Channels of the 256-wide token embeddings used by the structured decoder.
_N_FREQ = 4  # harmonics per axis
_PE_SIN = list(range(0, 2 * _N_FREQ))  # varying sin channels
_PE_COS = [128 + c for c in _PE_SIN]  # varying cos channels
_PE = _PE_SIN + _PE_COS  # the 16 channels that carry position
_ID = 100  # identity channels 100..106: iou, mask0..3, point, pad
_FEAT = 120  # image feature channel (drives the IoU prediction)
_BLOB = 200  # image-token channel carrying the point-attention weight
_CARRIER = (210, 211)  # constant +C / -C: keeps layer-norm statistics fixed


def _fejer_weights() -> list[float]:
    return [1.0 - (j + 1) / (_N_FREQ + 1) for j in range(_N_FREQ)]


def structured_state_dict(
    seed: int = 0,
    *,
    base_frequency: float = 0.4,
    sharpness: float = 1.0,
    levels: tuple[float, float, float] = (0.84, 0.76, 0.66),
    steepness: float = 1500.0,
    leak: float = 0.12,
    iou_base: tuple[float, float, float] = (0.93, 0.92, 0.91),
    iou_gain: float = 0.03,
) -> dict[str, torch.Tensor]:
    """Return a vit_t state dict whose masks are nested blobs around points.

    Parameters
    ----------
    seed : int
        Seed for the random image encoder (its features leak in a little).
    base_frequency : float
        Lowest spatial frequency of the positional code, in cycles per unit
        of SAM's [-1, 1] coordinates; lower means larger blobs.
    sharpness : float
        Gain of the point kernel in the attention logits.
    levels : tuple of float
        Attention-weight thresholds of the three multimask outputs
        (high = small blob).
    steepness : float
        Gain of the mask logits around each threshold.
    leak : float
        Share of the image features mixed into the positional channels.
    iou_base, iou_gain : tuple of float, float
        Predicted IoU of each multimask output and its image dependence.

    Returns
    -------
    dict of str to torch.Tensor
        A state dict that ``build_vit_t().load_state_dict`` accepts.
    """
    torch.manual_seed(seed)
    sam = build_vit_t()
    sd = {k: v.clone() for k, v in sam.state_dict().items()}
    n_pe = len(_PE)

    def zero(prefix: str) -> None:
        for k in sd:
            if k.startswith(prefix):
                sd[k].zero_()

    # --- image encoder: only a small leak of its features survives the neck
    gain = torch.zeros(256)
    gain[_PE] = leak
    gain[_FEAT] = 1.0
    sd["image_encoder.neck.3.weight"] = gain
    sd["image_encoder.neck.3.bias"] = torch.zeros(256)

    # --- prompt encoder
    gm = torch.zeros(2, 128)
    for j in range(_N_FREQ):
        gm[0, j] = base_frequency * (j + 1)
        gm[1, _N_FREQ + j] = base_frequency * (j + 1)
    sd["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = gm
    big = 10.0
    for k in list(sd):
        if k.startswith("prompt_encoder.point_embeddings") or k in (
            "prompt_encoder.not_a_point_embed.weight",
            "prompt_encoder.no_mask_embed.weight",
        ):
            sd[k].zero_()
    sd["prompt_encoder.point_embeddings.1.weight"][0, _ID + 5] = big
    sd["prompt_encoder.not_a_point_embed.weight"][0, _ID + 6] = big
    sd["prompt_encoder.no_mask_embed.weight"][0, _CARRIER[0]] = 10.0
    sd["prompt_encoder.no_mask_embed.weight"][0, _CARRIER[1]] = -10.0

    # --- decoder tokens: one identity channel each, blind to position
    md = "mask_decoder."
    sd[md + "iou_token.weight"].zero_()
    sd[md + "iou_token.weight"][0, _ID] = big
    sd[md + "mask_tokens.weight"].zero_()
    for i in range(4):
        sd[md + "mask_tokens.weight"][i, _ID + 1 + i] = big

    tr = md + "transformer."
    zero(tr)
    ln_gain = torch.zeros(256)
    ln_gain[_ID : _ID + 7] = 1.0
    ln_gain[_FEAT] = 1.0
    for layer in range(2):
        for norm in ("norm1", "norm2", "norm3"):
            sd[f"{tr}layers.{layer}.{norm}.weight"] = ln_gain.clone()
        sd[f"{tr}layers.{layer}.norm4.weight"] = torch.ones(256)
    sd[tr + "norm_final_attn.weight"] = ln_gain.clone()

    # layer 0 self-attention (no residual): each token attends to itself
    # and keeps only its identity channel.
    sa = tr + "layers.0.self_attn."
    for t in range(7):
        sd[sa + "q_proj.weight"][t, _ID + t] = 1.0
        sd[sa + "k_proj.weight"][t, _ID + t] = 1.0
        sd[sa + "v_proj.weight"][t, _ID + t] = 1.0
        sd[sa + "out_proj.weight"][_ID + t, t] = 1.0

    weights = _fejer_weights() * 2  # x harmonics, then y harmonics
    head_scale = math.sqrt(n_pe)  # cancels the 1/sqrt(c_per_head)

    # layer 0 token-to-image: the point token gathers image features near
    # itself into the feature channel (drives the IoU prediction).
    ti = tr + "layers.0.cross_attn_token_to_image."
    for d, c in enumerate(_PE):
        w = weights[d % (2 * _N_FREQ)]
        sd[ti + "q_proj.weight"][d, c] = 3.0 * w * head_scale
        sd[ti + "k_proj.weight"][d, c] = 1.0
    sd[ti + "v_proj.weight"][0, _FEAT] = 1.0
    sd[ti + "out_proj.weight"][_FEAT, 0] = 0.5

    # layer 0 image-to-token: the kernel between image and point positions
    it = tr + "layers.0.cross_attn_image_to_token."
    for d, c in enumerate(_PE):
        w = weights[d % (2 * _N_FREQ)]
        sd[it + "q_proj.weight"][d, c] = sharpness * w * head_scale
        sd[it + "k_proj.weight"][d, c] = 1.0
    sd[it + "v_proj.weight"][0, _ID + 5] = 1.0
    sd[it + "out_proj.weight"][_BLOB, 0] = 1.0 / 16.0

    # layer 1 self-attention: the IoU token copies the point's feature
    sa1 = tr + "layers.1.self_attn."
    sd[sa1 + "q_proj.weight"][0, _ID] = 1.0
    sd[sa1 + "k_proj.weight"][0, _ID + 5] = 1.0
    sd[sa1 + "v_proj.weight"][0, _FEAT] = 1.0
    sd[sa1 + "out_proj.weight"][_FEAT, 0] = 1.0

    # --- upscaling: blob channel -> channel 0, constant 1 -> channel 1
    up = md + "output_upscaling."
    sd[up + "0.weight"].zero_()
    sd[up + "0.bias"].zero_()
    sd[up + "0.weight"][_BLOB, 0] = 1.0
    sd[up + "0.bias"][1] = 10.0
    sd[up + "0.bias"][2] = -10.0
    ln2 = torch.zeros(64)
    ln2[0] = 1.0
    sd[up + "1.weight"] = ln2
    sd[up + "1.bias"] = torch.zeros(64)
    sd[up + "1.bias"][1] = 1.0
    sd[up + "3.weight"].zero_()
    sd[up + "3.bias"].zero_()
    sd[up + "3.weight"][0, 0] = 1.0
    sd[up + "3.weight"][1, 1] = 1.0

    # reference values of the two channels after LN, GELU, convT, GELU
    def after(x: float) -> float:
        g = torch.nn.functional.gelu
        return float(g(g(torch.tensor(x))))

    one = after(1.0)
    # channel 0 after LN: blob / sigma, sigma ~ sqrt(2 * 10^2 / 64)
    # and the blob channel after norm4 ~ weight / sqrt(2 * 10^2 / 256)
    s4 = math.sqrt(200.0 / 256.0)
    s2 = math.sqrt(200.0 / 64.0)
    for i in range(4):
        hm = f"{md}output_hypernetworks_mlps.{i}."
        zero(hm)
        level = levels[max(i - 1, 0)]
        thresh = after(level / s4 / s2)
        sd[hm + "layers.2.bias"][0] = steepness
        sd[hm + "layers.2.bias"][1] = -steepness * thresh / one

    # --- IoU head: base + gain * feature of the point's neighbourhood
    ih = md + "iou_prediction_head."
    zero(ih)
    sd[ih + "layers.0.weight"][0, _FEAT] = 1.0
    sd[ih + "layers.0.weight"][1, _FEAT] = -1.0
    sd[ih + "layers.1.weight"][0, 0] = 1.0
    sd[ih + "layers.1.weight"][1, 1] = 1.0
    for i in range(4):
        base = iou_base[max(i - 1, 0)]
        sd[ih + "layers.2.bias"][i] = base
        sd[ih + "layers.2.weight"][i, 0] = iou_gain
        sd[ih + "layers.2.weight"][i, 1] = -iou_gain
    return sd


def write_structured_checkpoint(path: str | Path, seed: int = 0) -> Path:
    """Write a structured test checkpoint (see module docstring)."""
    path = Path(path)
    torch.save(structured_state_dict(seed), path)
    return path


def write_random_checkpoint(path: str | Path, seed: int = 0) -> Path:
    """Write a randomly initialised vit_t checkpoint."""
    torch.manual_seed(seed)
    path = Path(path)
    torch.save(build_vit_t().state_dict(), path)
    return path


def reference_candidates(
    image: np.ndarray, model: Any, settings: Settings | None = None, **overrides: Any
) -> Candidates:
    """Candidates from ``mobile_sam.SamAutomaticMaskGenerator`` itself.

    The reference the engine is checked against (tests, benchmarks), with
    the same :class:`~napari_samboxes.settings.Settings` (``overrides``
    change single fields). ``image`` must be H x W x 3 uint8.
    """
    from .model import import_mobile_sam

    s = settings if settings is not None else DEFAULTS
    if overrides:
        s = s.with_(**overrides)
    sam = getattr(model, "sam", model)
    device = str(next(sam.parameters()).device)
    kwargs = s.as_dict()
    kwargs["points_per_batch"] = s.batch_for(device.split(":")[0])
    gen = import_mobile_sam().SamAutomaticMaskGenerator(sam, **kwargs)
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
