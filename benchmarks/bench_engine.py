"""Engine vs mobile_sam's SamAutomaticMaskGenerator: time, FLOP/s, memory.

Runs the reference and the engine in one process on a real photo
(scikit-image's "coffee", resized to 1024 x 768) with the structured test
checkpoint (real vit_t architecture; its masks pass the default filters like
a trained model's), at 32x32 and 16x16 grids, and prints both times, the
ratio, whether the candidates are identical, the decoder's achieved GFLOP/s
and the machine's fp32 matmul GFLOP/s. Then, each in a fresh subprocess, the
peak resident memory of both on a 6000 x 4000 RGB image (the reference with
a smaller batch and grid so that it fits: its peak is set by the batch).

    python benchmarks/bench_engine.py            # everything (~10 min, 2 cores)
    python benchmarks/bench_engine.py --grids 16 --no-memory   # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def photo(h: int, w: int) -> np.ndarray:
    """scikit-image's coffee photo resized (bicubic, uint8 throughout)."""
    from PIL import Image
    from skimage import data

    return np.asarray(Image.fromarray(data.coffee()).resize((w, h), Image.BICUBIC))


def model(tmp: Path):  # noqa: ANN201
    from napari_samboxes import load_model
    from napari_samboxes.testing import write_structured_checkpoint

    ckpt = write_structured_checkpoint(tmp / "structured.pt")
    return load_model(ckpt, device="auto")


def matmul_gflops() -> float:
    import torch

    a = torch.randn(2048, 2048)
    b = torch.randn(2048, 2048)
    best = 1e9
    for _ in range(4):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * 2048**3 / best / 1e9


def decoder_gflops(m, img: np.ndarray) -> tuple[float, float]:  # noqa: ANN001
    """(GFLOP per prompt, achieved GFLOP/s) of the engine's decoder."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from napari_samboxes import engine
    from napari_samboxes.model import _import_mobile_sam

    ms = _import_mobile_sam()
    pred = ms.SamPredictor(m.sam)
    with torch.inference_mode():
        pred.set_image(img)
        dec = engine._Decoder(m.sam, pred.features)
        # only the tokens whose 4x4 blocks reach the image, as the engine does
        ih, iw = pred.input_size
        dec.valid_tokens = (
            min(64, -(-(ih // 4 + 1) // 4)),
            min(64, -(-(iw // 4 + 1) // 4)),
        )
        pts = engine.point_grid(8, *img.shape[:2])
        coords = torch.as_tensor(pred.transform.apply_coords(pts, img.shape[:2]))
        sparse, _ = m.sam.prompt_encoder(
            points=(
                coords[:, None].to(m.device),
                torch.ones(64, 1, dtype=torch.int, device=m.device),
            ),
            boxes=None,
            masks=None,
        )
        step = 64 if m.device.startswith("cuda") else engine._CPU_CHUNK
        with FlopCounterMode(display=False) as fc:
            dec(sparse[:step])
        per_prompt = fc.get_total_flops() / step / 1e9
        t = time.perf_counter()
        for i in range(0, 64, step):
            dec(sparse[i : i + step])
        if m.device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
    return per_prompt, per_prompt * 64 / dt


def compare(ref, got) -> str:  # noqa: ANN001
    if len(ref) != len(got):
        return f"DIFFERENT: {len(ref)} vs {len(got)} candidates"
    if len(ref) == 0:
        return "identical (0 candidates)"
    db = float(np.abs(ref.boxes - got.boxes).max())
    da = float(np.max(np.abs(ref.areas - got.areas) / np.maximum(ref.areas, 1)))
    if db == 0 and da == 0:
        return f"identical ({len(ref)} candidates)"
    ok = db <= 1 and da <= 0.01
    return f"{'same within tolerance' if ok else 'DIFFERENT'}: max box diff {db} px, max area diff {da:.2%}"


def speed(grids: list[int]) -> None:
    import torch

    from napari_samboxes import propose_boxes
    from napari_samboxes.engine import reference_candidates

    with tempfile.TemporaryDirectory() as tmp:
        m = model(Path(tmp))
        img = photo(768, 1024)
        print(
            f"device: {m.device}; torch {torch.__version__}, {torch.get_num_threads()} threads"
        )
        print(f"machine fp32 matmul: {matmul_gflops():.1f} GFLOP/s")
        gf, rate = decoder_gflops(m, img)
        print(f"engine decoder: {gf:.3f} GFLOP per prompt, achieved {rate:.1f} GFLOP/s")
        for pps in grids:
            t = time.perf_counter()
            ref = reference_candidates(img, m, points_per_side=pps)
            t_ref = time.perf_counter() - t
            t = time.perf_counter()
            got = propose_boxes(img, m, points_per_side=pps)
            t_eng = time.perf_counter() - t
            print(
                f"{pps}x{pps} on 1024x768: reference {t_ref:.1f} s, engine {t_eng:.1f} s, "
                f"ratio {t_ref / t_eng:.2f}x; candidates {compare(ref, got)}",
                flush=True,
            )


def peak_child(which: str) -> None:
    """Run one memory measurement (in a fresh process) and print JSON."""
    from napari_samboxes import propose_boxes
    from napari_samboxes.engine import reference_candidates

    with tempfile.TemporaryDirectory() as tmp:
        m = model(Path(tmp))
        img = photo(4000, 6000)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        if which == "engine":
            settings = {"points_per_side": 32, "points_per_batch": 64}
            c = propose_boxes(img, m, **settings)
        else:
            settings = {"points_per_side": 4, "points_per_batch": 8}
            c = reference_candidates(img, m, **settings)
        dt = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "which": which,
                "settings": settings,
                "seconds": dt,
                "candidates": len(c),
                "peak_gb": peak / 2**20,
                "before_run_gb": base / 2**20,
            }
        )
    )


def memory() -> None:
    for which in ("engine", "reference"):
        out = subprocess.run(
            [sys.executable, __file__, "--peak-child", which],
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONWARNINGS="ignore"),
        )
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if out.returncode != 0 or not line:
            print(
                f"6000x4000 {which}: FAILED (exit {out.returncode}) {out.stderr[-500:]}"
            )
            continue
        r = json.loads(line[-1])
        s = r["settings"]
        print(
            f"6000x4000 {which} ({s['points_per_side']}x{s['points_per_side']} grid, "
            f"batch {s['points_per_batch']}): peak RSS {r['peak_gb']:.2f} GB "
            f"({r['before_run_gb']:.2f} GB before the run), {r['seconds']:.1f} s, "
            f"{r['candidates']} candidates",
            flush=True,
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grids", type=int, nargs="*", default=[32, 16])
    p.add_argument("--no-memory", action="store_true")
    p.add_argument(
        "--peak-child", choices=["engine", "reference"], help=argparse.SUPPRESS
    )
    a = p.parse_args()
    if a.peak_child:
        peak_child(a.peak_child)
        return
    speed(a.grids)
    if not a.no_memory:
        memory()


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore")
    main()
