#!/usr/bin/env bash
# The engine benchmark on a GPU machine that has torch, torchvision, timm,
# scikit-image (and Pillow) but not this project's other dependencies: put
# the wheels of mobilesam-mirror, pooch and platformdirs in .whl/ (they are
# imported from the wheel files themselves) and run from the repository root:
#     bash benchmarks/gpu_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=$(ls .whl/mobilesam_mirror-*.whl .whl/pooch-*.whl .whl/platformdirs-*.whl | paste -sd: -)
PY=$(command -v python || command -v python3)
PYTHONPATH="src:${WHEELS}" "$PY" benchmarks/bench_engine.py --device cuda "$@"
