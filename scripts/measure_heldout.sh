#!/usr/bin/env bash
# Measure codecs on the 12 validation photos that no bundled model trained on (training/data.py,
# VALIDATION_PHOTOS), taken from the shared photo folder. Not a bundled dataset: their licences are
# listed in ../shared/photos/manifest.csv, and the run folder stays out of git.
#
#   scripts/measure_heldout.sh                                   # hyperprior + CorrDiff's three decoders + bpg
#   CODECS=bpg,jpeg RATE= scripts/measure_heldout.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PHOTOS=${PHOTOS:-../shared/photos}
OUT=${OUT:-runs/heldout}
CODECS=${CODECS:-hyperprior,corrdiff-e2e,corrdiff,corrdiff-diffusion-only,bpg}
METRICS=${METRICS:-psnr,ms-ssim,fid,kid}
RATE=${RATE-}
DIR=${DIR:-runs/heldout-photos}
mkdir -p "$DIR"
python - "$PHOTOS" "$DIR" <<'PY'
import sys
from pathlib import Path
from rdp_bench.training.data import VALIDATION_PHOTOS
src, dst = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
for name in VALIDATION_PHOTOS:
    link = dst / name
    if not link.exists():
        link.symlink_to(src / name)
PY
# real bpgenc 0.9.8 when the shared binaries (or `rdp-bench install bpg`) are there
[ -d ../shared/bpg/bin ] && export PATH="$(cd ../shared/bpg/bin && pwd):$PATH"
rdp-bench run --codec "$CODECS" --dataset "folder:$DIR" --metrics "$METRICS" --out "$OUT" ${RATE:+--rate "$RATE"}
