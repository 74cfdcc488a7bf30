#!/usr/bin/env bash
# Run HERE (not on the device) once before scripts/gpu_train.sh or scripts/gpu_bench_decode.sh: packs what
# the GPU runs need into ignored folders that travel with `carry`: .traindata/photos (the training and
# validation photos as lossless WebP, ~30 MB, so the working tree stays under the device's 64 MiB) and .whl
# (compressai and pytorch-msssim for the device's Python 3.12, which has torch but not these).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .git/info && grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_34_x86_64 -d .whl compressai==1.2.8
python3 -m pip download -q --no-deps -d .whl pytorch-msssim==1.0.0
python3 - <<'PY'
from pathlib import Path
from PIL import Image
from rdp_bench.training.data import split_photos
out = Path(".traindata/photos"); out.mkdir(parents=True, exist_ok=True)
train, val = split_photos()
for p in train + val:
    target = out / (p.stem + ".webp")
    if not target.exists():
        Image.open(p).convert("RGB").save(target, format="WEBP", lossless=True, quality=100, method=4)
print(f"{len(train)} training + {len(val)} validation photos in {out}")
PY
du -sh .traindata/photos .whl
