"""Windowed statistics against full-resolution ``F.interpolate`` (no model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_samboxes.upsample import Upsampler, low_res_extent

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


def blobs(n: int, seed: int) -> torch.Tensor:
    """Low-res logits: random blobs and noise, one empty and one full mask."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    out = []
    for _ in range(n):
        cy, cx = torch.rand(2, generator=g) * 256
        r = 3 + torch.rand(1, generator=g) * 60
        d = ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt()
        noise = torch.randn(256, 256, generator=g) * 0.7
        out.append(8.0 * (r - d) / r + noise)
    out.append(torch.full((256, 256), -12.0))  # empty
    out.append(torch.randn(256, 256, generator=g) * 3 + 2.5)  # nearly everywhere
    return torch.stack(out)


def reference(low: torch.Tensor, input_size, original_size):
    """The reference's postprocessing: full-resolution masks, then stats."""
    from mobile_sam.utils.amg import batched_mask_to_box, calculate_stability_score

    up = F.interpolate(low[None], (1024, 1024), mode="bilinear", align_corners=False)
    up = up[..., : input_size[0], : input_size[1]]
    up = F.interpolate(up, original_size, mode="bilinear", align_corners=False)[0]
    stab = calculate_stability_score(up, 0.0, 1.0)
    masks = up > 0.0
    return batched_mask_to_box(masks), masks.sum(dim=(1, 2)), stab


@pytest.mark.parametrize(
    ("input_size", "original_size", "budget"),
    [
        ((768, 1024), (192, 256), None),  # shrinking: grid taps only
        ((768, 1024), (768, 1024), None),  # same size: grid windows
        ((768, 1024), (768, 1024), 1 << 12),  # tiny budget: groups and strips
        ((600, 1024), (1200, 2048), 1 << 14),  # enlarging, strips
        ((1024, 3), (3000, 10), None),  # extreme aspect
        ((1024, 1024), (4, 4), None),  # tiny image
    ],
)
def test_windowed_stats_equal_full_interpolation(input_size, original_size, budget):
    low = blobs(9, seed=sum(original_size))
    # logits only where the resized input reaches, as SAM's decoder gives
    ref_boxes, ref_areas, ref_stab = reference(low, input_size, original_size)
    up = Upsampler(input_size, original_size, "cpu", budget=budget)
    got = up.stats(low)
    np.testing.assert_array_equal(got.areas, ref_areas.numpy())
    np.testing.assert_array_equal(got.boxes, ref_boxes.numpy())
    np.testing.assert_array_equal(got.stability, ref_stab.numpy())
    assert got.areas[-2] == 0 and np.isnan(got.stability[-2])  # the empty mask
    assert got.areas[:-2].min() < got.areas[-1]  # blobs smaller than the full one
    assert (got.areas > 0).sum() >= 3


def test_low_res_extent_covers_the_resized_input():
    assert low_res_extent((1024, 1024), (1024, 1024)) == (256, 256)
    rows, cols = low_res_extent((768, 1024), (768, 1024))
    assert cols == 256 and 192 <= rows <= 194
