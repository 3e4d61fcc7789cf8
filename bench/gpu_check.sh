#!/usr/bin/env bash
# One 100 x 512 x 512 timepoint end to end on a CUDA GPU: time per stage, peak GPU memory, and the
# largest difference of the field and the masks from a CPU run of the same isotropic volume.
#   bash bench/gpu_check.sh                       # on a machine with a CUDA GPU
#   bash bench/gpu_check.sh --device cpu --shape 8 64 64   # dry run on the CPU (differences 0)
# Other options: --model CKPT, --threads N (CPU reference), --out DIR (default bench/out/gpu_check).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if [[ " $* " != *" --device cpu "* ]]; then
    "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "gpu_check: no CUDA GPU visible to torch (use --device cpu for a dry run)")'
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
exec "$PY" bench/gpu_check.py "$@"
