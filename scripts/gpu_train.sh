#!/usr/bin/env bash
# The GPU training run (issue 13), ON the device, as one call:
#   run(command="bash scripts/gpu_train.sh", carry=[".traindata/photos", ".whl"], timeout_s=600)
# after scripts/gpu_prepare.sh here. It continues CorrDiff's stage 1 (the variable-rate autoencoder) from the
# committed weights at 256-px crops, batch 16, bf16, for MINUTES (default 8), validates, and exports the
# checkpoint to $OUT; copy it over rdp_bench/weights/hyperprior/ only if its validation beats the CPU one.
# STEPS is the job's planned total: the LR drops to 1/10 at 85% of it, so it must be what MINUTES can reach
# (a plan the clock cuts short never decays). The default assumes ~40 steps/s; train.log's first lines give
# the real rate, and a rerun with the same job continues with the same STEPS.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import rdp_bench.cli as c; c.main()" train autoencoder --job autoencoder-gpu --jobs-dir /tmp/jobs \
  --device cuda --crop 256 --batch 16 --val-every 2000 --minutes "${MINUTES:-8}" --max-steps "${STEPS:-18000}" \
  --photos .traindata/photos --init rdp_bench/weights/hyperprior/hyperprior-vr-n64m128.safetensors 2>&1 | tee "$OUT/train.log"
python3 -c "import rdp_bench.cli as c; c.main()" train autoencoder --job autoencoder-gpu --jobs-dir /tmp/jobs \
  --export hyperprior-vr-n64m128 --export-dir "$OUT"
cp /tmp/jobs/autoencoder-gpu/val.csv /tmp/jobs/autoencoder-gpu/curves.png "$OUT/"
