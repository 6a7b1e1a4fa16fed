"""Engine vs mobile_sam's SamAutomaticMaskGenerator: time, agreement, FLOP/s.

Runs the reference and the engine in one process on scikit-image's
"coffee" photo (resized) with the structured test checkpoint (real vit_t
architecture; its masks pass the default filters like a trained model's),
and prints for each case the best time of each side, the ratio, whether the
candidates agree, the decoder's achieved GFLOP/s and the machine's fp32
matmul GFLOP/s. Reference and engine runs are interleaved (this machine's
speed drifts): engine, reference, engine, ..., engine, so the engine is
timed once more than the reference and its short runs span the same stretch
of time as the reference's long ones; every run is printed and the ratio is
best against best. Each side is warmed up once where the case is cheap, and
TF32 is off for both (``allow_tf32 = False`` for cuDNN and matmul) so that
both compute in exact fp32.

    python benchmarks/bench_engine.py                  # CPU: 32x32 and 16x16
    python benchmarks/bench_engine.py --grids 16 --engine-only   # quick look
    python benchmarks/bench_engine.py --device cuda    # GPU cases (< 6 min)

Only torch, torchvision, timm, numpy, Pillow/scikit-image (for the photo)
and ``mobile_sam`` are needed: no napari, no xxhash (the model is built
directly, not through ``load_model``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np

#: (height, width, points per side) of the GPU cases
GPU_CASES = [(768, 1024, 32), (768, 1024, 64), (4000, 6000, 32)]
#: The reference's own default batch (its batch never changes its results).
REF_BATCH = 64


def photo(h: int, w: int) -> np.ndarray:
    """scikit-image's coffee photo resized (bicubic, uint8 throughout)."""
    from PIL import Image

    try:  # the file itself: skimage.io needs imageio
        import skimage.data

        img = Image.open(os.path.join(skimage.data.data_dir, "coffee.png"))
        img = img.convert("RGB")
    except (OSError, ImportError):
        from skimage import data

        img = Image.fromarray(data.coffee())
    return np.asarray(img.resize((w, h), Image.BICUBIC))


def build_model(device: str) -> Any:
    """The structured test checkpoint's weights in a vit_t, on ``device``."""
    from napari_samboxes.model import build_vit_t
    from napari_samboxes.testing import structured_state_dict

    sam = build_vit_t()
    sam.load_state_dict(structured_state_dict())
    return sam.to(device).eval()


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_gflops(device: str) -> float:
    import torch

    n = 4096 if device.startswith("cuda") else 2048
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    best = 1e9
    for _ in range(5):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def decoder_gflops(sam: Any, img: np.ndarray, device: str) -> tuple[float, float]:
    """(GFLOP per prompt, achieved GFLOP/s) of the engine's decoder."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from napari_samboxes.decoder import build_decoder
    from napari_samboxes.engine import _transform, encode_image
    from napari_samboxes.settings import DEFAULTS

    emb = encode_image(img, sam)
    n = DEFAULTS.batch_for(device.split(":")[0])
    side = int(np.ceil(np.sqrt(n)))
    with torch.inference_mode():
        dec = build_decoder(sam, emb.features, emb.input_size, emb.original_size)
        pts = (np.mgrid[0:side, 0:side].reshape(2, -1).T[:n] + 0.5) / side
        pts = pts * np.array([[img.shape[1], img.shape[0]]])
        coords = _transform(sam).apply_coords(pts, img.shape[:2])
        sparse, _ = sam.prompt_encoder(
            points=(
                torch.as_tensor(coords, device=device)[:, None],
                torch.ones(n, 1, dtype=torch.int, device=device),
            ),
            boxes=None,
            masks=None,
        )
        with FlopCounterMode(display=False) as fc:
            dec(sparse[:4])
        per_prompt = fc.get_total_flops() / 4 / 1e9
        best = 1e9
        for _ in range(3):
            sync(device)
            t = time.perf_counter()
            dec.run(sparse)
            sync(device)
            best = min(best, time.perf_counter() - t)
    return per_prompt, per_prompt * n / best


def agreement(ref: Any, got: Any) -> str:
    """How far the engine's candidates agree with the reference's.

    Candidates are matched by box (as multisets); for matched boxes the
    areas are compared too. "identical" means every box and every area is
    the same; otherwise the counts and the largest area difference are given.
    """
    from collections import Counter

    if len(ref) == 0 and len(got) == 0:
        return "identical (0 candidates)"
    r = Counter(tuple(row) for row in np.column_stack([ref.boxes, ref.areas]))
    g = Counter(tuple(row) for row in np.column_stack([got.boxes, got.areas]))
    same = sum((r & g).values())
    if same == len(ref) == len(got):
        return f"identical ({len(ref)} candidates: every box and area)"
    # the rest, matched by box
    rb: dict[tuple, list[float]] = {}
    for row, k in (r - g).items():
        rb.setdefault(row[:4], []).extend([row[4]] * k)
    diffs, unmatched = [], 0
    for row, k in (g - r).items():
        for _ in range(k):
            areas = rb.get(row[:4])
            if not areas:
                unmatched += 1
                continue
            a = min(areas, key=lambda x: abs(x - row[4]))
            areas.remove(a)
            diffs.append((abs(a - row[4]), abs(a - row[4]) / max(a, 1)))
    boxes_same = same + len(diffs)
    out = (
        f"{len(ref)} reference, {len(got)} engine; boxes identical for "
        f"{boxes_same}, box and area identical for {same}"
    )
    if diffs:
        px = max(d[0] for d in diffs)
        rel = max(d[1] for d in diffs)
        out += f"; the other {len(diffs)} same box, area within {px:.0f} px ({rel:.3%})"
    if unmatched or len(ref) != len(got):
        out = "DIFFERENT: " + out
    return out


def timed(fn: Any, device: str) -> tuple[float, Any]:
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


def run_case(
    sam: Any,
    device: str,
    hw: tuple[int, int],
    pps: int,
    repeats: int,
    warm: bool,
    engine_only: bool,
) -> None:
    from napari_samboxes import propose_boxes
    from napari_samboxes.testing import reference_candidates

    img = photo(*hw)

    def ref() -> Any:
        return reference_candidates(
            img, sam, points_per_side=pps, points_per_batch=REF_BATCH
        )

    def eng() -> Any:
        return propose_boxes(img, sam, points_per_side=pps)

    sides = [("engine", eng)] if engine_only else [("engine", eng), ("reference", ref)]
    times: dict[str, list[float]] = {name: [] for name, _ in sides}
    # engine, reference, engine, ..., engine: the engine's short runs span
    # the same stretch of time as the reference's long ones
    order = [fn for _ in range(repeats) for fn in sides] + sides[:1]
    results: dict[str, Any] = {}
    if warm:
        for _, fn in sides:
            try:
                fn()
            except RuntimeError:
                pass  # reported by the timed runs below
    try:
        for name, fn in order:
            dt, results[name] = timed(fn, device)
            times[name].append(dt)
    except RuntimeError as e:  # out of memory on a device: say so, go on
        print(f"{hw[1]}x{hw[0]}, {pps}x{pps}: FAILED ({str(e).splitlines()[0]})")
        return

    def fmt(name: str) -> str:
        ts = times[name]
        return f"{name} {min(ts):.2f} s (runs {', '.join(f'{t:.2f}' for t in ts)})"

    case = f"{hw[1]}x{hw[0]}, {pps}x{pps}"
    if engine_only:
        print(f"{case}: {fmt('engine')}; {len(results['engine'])} candidates")
    else:
        ratio = min(times["reference"]) / min(times["engine"])
        print(
            f"{case}: {fmt('reference')}, {fmt('engine')}, ratio {ratio:.2f}x; "
            f"candidates {agreement(results['reference'], results['engine'])}"
        )
    sys.stdout.flush()


def speed(a: argparse.Namespace) -> None:
    import torch

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    device = a.device
    sam = build_model(device)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
    print(
        f"device: {device} ({name}); torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; TF32 off"
    )
    print(f"machine fp32 matmul: {matmul_gflops(device):.0f} GFLOP/s")
    gf, rate = decoder_gflops(sam, photo(768, 1024), device)
    print(f"engine decoder: {gf:.3f} GFLOP per prompt, achieved {rate:.0f} GFLOP/s")
    sys.stdout.flush()
    if device.startswith("cuda"):
        for h, w, pps in GPU_CASES:
            big = h * w > 4e6
            run_case(sam, device, (h, w), pps, 2 if big else 3, True, a.engine_only)
    else:
        for pps in a.grids:
            cheap = pps <= 16
            run_case(sam, device, (768, 1024), pps, a.repeats, cheap, a.engine_only)


def peak_child(which: str) -> None:
    """Run one memory measurement (in a fresh process) and print JSON."""
    from napari_samboxes import propose_boxes
    from napari_samboxes.testing import reference_candidates

    sam = build_model("cpu")
    img = photo(4000, 6000)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    if which == "engine":
        settings = {"points_per_side": 32, "points_per_batch": 64}
        c = propose_boxes(img, sam, **settings)
    else:
        settings = {"points_per_side": 4, "points_per_batch": 8}
        c = reference_candidates(img, sam, **settings)
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
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--grids", type=int, nargs="*", default=[32, 16])
    p.add_argument("--repeats", type=int, default=2, help="timed runs per side")
    p.add_argument("--engine-only", action="store_true")
    p.add_argument("--memory", action="store_true", help="6000x4000 peak RSS (CPU)")
    p.add_argument(
        "--peak-child", choices=["engine", "reference"], help=argparse.SUPPRESS
    )
    a = p.parse_args()
    if a.peak_child:
        peak_child(a.peak_child)
        return
    speed(a)
    if a.memory:
        memory()


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore")
    main()
