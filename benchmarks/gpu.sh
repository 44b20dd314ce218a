#!/usr/bin/env bash
# GPU benchmark (issue #19): every recipe's samples/s, step time and share of the chip's peak
# FLOP/s (XLA's FLOP count of the compiled step over a measured matmul peak, and over the
# datasheet's) at fp32 and bf16, plus the largest parallel=fsdp transformer that fits.
# Runs in minutes on one GPU. Needs JAX with CUDA in the project's environment:
#     .venv/bin/pip install -U "jax[cuda12]"
# Recipes whose data must be downloaded need it cached first ($DLX_CACHE, e.g. by one
# `dlx train recipe=<name> trainer.max_steps=1`); the table says which ones did not run.
#
#     benchmarks/gpu.sh                       # everything
#     benchmarks/gpu.sh --recipes cnn,transformer --steps 50 --no-largest
#     GPU_BENCH_CPU=1 benchmarks/gpu.sh       # 2 steps of digits on the CPU: checks the script
#
# Prints a Markdown table; writes benchmarks/results/gpu.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
if [ "${GPU_BENCH_CPU:-0}" = 1 ]; then
    export JAX_PLATFORMS=cpu
else
    # JAX preallocates 75% of the GPU by default; the largest-model search needs nearly all
    # of it (the allocator's limit is what a size is judged against).
    export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.95}"
    "$PY" - <<'PYEOF'
import sys

import jax

if jax.default_backend() != "gpu":
    sys.exit(
        f"benchmarks/gpu.sh: JAX sees no GPU (devices: {jax.devices()}); install a CUDA "
        'jax (.venv/bin/pip install -U "jax[cuda12]"), or run GPU_BENCH_CPU=1 for the CPU check'
    )
PYEOF
fi
exec "$PY" benchmarks/gpu_table.py "$@"
