"""Peak memory of ``tighten``: 50,000 boxes, and one decoder call.

    python benchmarks/bench_tighten_memory.py                  # both parts
    python benchmarks/bench_tighten_memory.py --prompted 50000 # every box
    python benchmarks/bench_tighten_memory.py --skip-command   # calls only

**The command.** ``napari-samboxes tighten DIR`` runs in a subprocess on a
folder with one 1024 x 1024 image whose table holds ``--boxes`` boxes
(default 50,000): ``--prompted`` of them are 2 x 2 px boxes that no
candidate matches (they go to SAM's decoder), the others lie 1 px off a
candidate (they snap to it). The structured test checkpoint stands in for
``mobile_sam.pt`` (the same architecture, so the same memory per decoder
call). Printed: the peak RSS of the command (``getrusage`` of the child),
its time, and the same for a table of one box (model, encoder and the
candidate run alone). All 50,000 prompted takes about 50 ms per box on a
2-core CPU (40 min): the default prompts 320 (20 decoder calls), and the
bound does not grow with the number of calls (see below).

**One decoder call.** In this process, on a 1024 x 1024 image, with the
randomly initialised checkpoint (every prompt's mask covers most of the
image: the costliest case for the mask statistics): the peak RSS above the
loaded model and embedding of one ``engine.prompt_boxes`` call of B boxes,
for B = 1, 4 (``PROMPT_BATCH``, what ``tighten`` uses on a CPU), 8 and 64
(what one unbatched call of 64 boxes cost; 1,000 boxes took over 12 GB
before). The peak is reset before each call (``/proc/self/clear_refs``,
Linux). Then the time per box of 32 boxes in calls of 1, 4, 16 and 32.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from napari_samboxes.tighten import PROMPT_BATCH


def kib(field: str) -> int:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak() -> None:
    """Start the peak RSS (``VmHWM``) again from the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def image_1024() -> np.ndarray:
    from skimage import data, transform

    img = transform.resize(data.astronaut(), (1024, 1024), anti_aliasing=False)
    return (img * 255).round().astype(np.uint8)


def make_folder(
    root: Path, rgb: np.ndarray, cands: np.ndarray, n_boxes: int, n_prompted: int
) -> Path:
    """A folder with ``a.png`` and a table of ``n_boxes`` boxes: 1 px off
    the candidate boxes ``cands``, but ``n_prompted`` 2 x 2 px ones."""
    from PIL import Image

    from napari_samboxes.dataset import Dataset
    from napari_samboxes.formats.boxtable import BoxTable

    d = root / f"set_{n_boxes}"
    d.mkdir()
    Image.fromarray(rgb).save(d / "a.png")
    rng = np.random.default_rng(0)
    near = cands[rng.integers(0, len(cands), n_boxes - n_prompted)] + 1
    xy = rng.uniform(0, 1020, (n_prompted, 2)).round()
    small = np.hstack([xy, xy + 1])
    xyxy = np.concatenate([near, small])
    n = len(xyxy)
    Dataset(d).save_boxes(
        "a.png",
        BoxTable(
            labels=["cup"] * n,
            boxes=xyxy,
            scores=np.full(n, np.nan),
            sources=["hand"] * n,
        ),
    )
    return d


def run_command(folder: Path, ckpt: Path, cache: Path) -> tuple[float, float, str]:
    """Peak RSS (GB) and seconds of ``napari-samboxes tighten`` in a child
    process, and its last line of output."""
    args = [sys.executable, "-m", "napari_samboxes.cli", "tighten", str(folder)]
    args += ["--points-per-side", "8", "--device", "cpu"]
    args += ["--checkpoint", str(ckpt), "--cache", str(cache)]
    t = time.perf_counter()
    with open(folder / "out.txt", "w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"tighten failed: {(folder / 'out.txt').read_text()}")
    last = (folder / "out.txt").read_text().strip().splitlines()[-1]
    return usage.ru_maxrss / 2**20, seconds, last


def command_part(n_boxes: int, n_prompted: int) -> None:
    from napari_samboxes import load_model, propose_boxes
    from napari_samboxes.testing import write_structured_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt = write_structured_checkpoint(root / "structured.pt")
        rgb = image_1024()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = load_model(ckpt, device="cpu")
        cands = propose_boxes(rgb, model, points_per_side=8).boxes
        del model
        print(f"tighten, 1024 x 1024 image, grid 8, {PROMPT_BATCH} prompts per call")
        for n, p in ((1, 1), (n_boxes, n_prompted)):
            folder = make_folder(root, rgb, cands, n, p)
            peak, seconds, last = run_command(folder, ckpt, root / "cache")
            print(
                f"  {n:>6} boxes, {p:>6} prompted: peak RSS {peak:5.2f} GB, "
                f"{seconds:6.1f} s ({last})"
            )


def calls_part() -> None:
    from napari_samboxes import engine, load_model
    from napari_samboxes.testing import write_random_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = write_random_checkpoint(Path(tmp) / "random.pt")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = load_model(ckpt, device="cpu")
    emb = engine.encode_image(image_1024(), model)
    rng = np.random.default_rng(1)
    engine.prompt_boxes(model, emb, np.array([[10.0, 10, 50, 50]]))  # warm
    print("one decoder call, 1024 x 1024 image, random checkpoint")
    for b in sorted({1, 8, PROMPT_BATCH, 64}):
        xy = rng.uniform(0, 900, (b, 2))
        boxes = np.hstack([xy, xy + rng.uniform(5, 120, (b, 2))])
        before = kib("VmRSS")
        reset_peak()
        t = time.perf_counter()
        engine.prompt_boxes(model, emb, boxes)
        seconds = time.perf_counter() - t
        grew = (kib("VmHWM") - before) / 1024
        print(
            f"  {b:>3} boxes: peak {grew:6.0f} MB above the loaded model "
            f"({grew / b:4.1f} MB per box), {seconds / b * 1e3:5.0f} ms per box"
        )
    # speed: the same 32 boxes in calls of B, interleaved, best of 3 (a
    # shared machine's load changes from one second to the next)
    xy = rng.uniform(0, 900, (32, 2))
    boxes = np.hstack([xy, xy + rng.uniform(5, 120, (32, 2))])
    sizes = (1, 4, 16, 32)
    best = dict.fromkeys(sizes, float("inf"))
    for _ in range(3):
        for b in sizes:
            t = time.perf_counter()
            for i in range(0, 32, b):
                engine.prompt_boxes(model, emb, boxes[i : i + b])
            best[b] = min(best[b], (time.perf_counter() - t) / 32)
    print(
        "  32 boxes in calls of "
        + ", ".join(f"{b}: {best[b] * 1e3:.0f}" for b in sizes)
        + " ms per box (best of 3)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--boxes", type=int, default=50_000)
    p.add_argument("--prompted", type=int, default=320)
    p.add_argument("--skip-command", action="store_true")
    p.add_argument("--skip-calls", action="store_true")
    a = p.parse_args()
    if not Path("/proc/self/clear_refs").exists():
        raise SystemExit("this benchmark reads Linux's /proc")
    if not a.skip_command:
        command_part(a.boxes, min(a.prompted, a.boxes))
    if not a.skip_calls:
        calls_part()
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"(this process: peak RSS {own:.2f} GB)")


if __name__ == "__main__":
    main()
