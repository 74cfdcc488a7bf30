#!/usr/bin/env bash
# The GPU decode benchmark (issue 13), ON the device, as one call of under 5 minutes. First, here:
#   scripts/gpu_prepare.sh                                           # the wheels, in .whl
#   nice python -m rdp_bench.bench.gpu_decode --prepare .gpu_decode  # CPU-encoded streams + their CPU decodes
# then run(command="bash scripts/gpu_bench_decode.sh", carry=[".whl", ".gpu_decode"], timeout_s=330).
# Writes $OUT/gpu_decode.json (copy it to results/benchmarks/gpu_decode.json by hand) and $OUT/gpu_decode.log:
# cdc and corrdiff decode time per 768x512 image, images/s and peak GPU memory at batch 1, 8 and 32 in fp32 and
# bf16, and how far the GPU's decode of the CPU's streams is from the CPU's own (rdp_bench/bench/gpu_decode.py).
# Not yet run on a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_env.sh
timeout 280 python3 -m rdp_bench.bench.gpu_decode --device cuda --prepared .gpu_decode --out "$OUT/gpu_decode.json" \
  2>&1 | tee "$OUT/gpu_decode.log"
