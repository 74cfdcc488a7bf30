# Sourced (from the repository root) by the scripts that run ON the device: installs the wheels that
# scripts/gpu_prepare.sh packed into .whl beside the device's own torch, makes rdp_bench importable from the
# working tree, turns downloads off (the device reaches no network, so a download could only fail), makes $OUT
# and records the GPU in $OUT/gpu.txt.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 RDP_BENCH_OFFLINE=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
