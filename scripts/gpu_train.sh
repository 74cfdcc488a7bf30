#!/usr/bin/env bash
# The GPU training run (issue 13), ON the device, as one call, after scripts/gpu_prepare.sh here:
#   run(command="bash scripts/gpu_train.sh", carry=[".traindata/photos", ".whl"], timeout_s=600)
# Continues every bundled model from its committed weights, one after the other, each for its own wall minutes:
# the autoencoder (CorrDiff's stage 1; AE_MINUTES, default 2), CorrDiff's score network (SCORE_MINUTES, 1.5),
# HiFiC (HIFIC_MINUTES, 1.5) and CDC (CDC_MINUTES, 1.5): about 9 minutes with startups, validations and exports,
# and never past TOTAL_SECONDS (560; the call's limit is 600). Each model's export, train.log, train.csv, val.csv
# and curves.png are packed as $OUT/<model>.tar (the device returns at most 8 files); a stage that fails is named
# in $OUT/failures.txt and the next one runs. Copy a checkpoint over rdp_bench/weights/ only where its validation
# beats the committed one's (the first validation row of each CDC and HiFiC phase is its starting point).
#
# Not yet run on a GPU. The step counts (*_STEPS) are guesses at rates nobody has measured here; each job must
# finish its plan inside its minutes (the LR decays at 85 % of it, and CDC and HiFiC export only finished
# phases), so read the rates in train.log and set them on a rerun. The score network trains on the committed
# autoencoder, not this run's: the corrdiff codec needs the compressor its score network was trained on.
# HiFiC's job restarts from one checkpoint (HIFIC_INIT, default the 0.8 bpp one, the nearest to an MSE base):
# a short base phase, then each target's rate and GAN phases.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_env.sh
JOBS=/tmp/jobs
W=rdp_bench/weights
END=$((SECONDS + ${TOTAL_SECONDS:-560}))

train() {  # train MODEL ARGS...: one resumable job on the GPU; stopped (its state saved) when the run's time is up
  local left=$((END - SECONDS - 45))  # 45 s stay for the export and the packing
  [ "$left" -gt 30 ] || { echo "no time left for $1"; return 1; }
  timeout -s TERM -k 30 "$left" python3 -m rdp_bench.cli train "$1" --jobs-dir "$JOBS" --device cuda --threads 8 \
    --photos .traindata/photos "${@:2}" || [ $? -eq 124 ]  # 124: stopped by the clock, after saving
}

export_job() {  # export_job MODEL ARGS...: the job's checkpoints into $OUT/MODEL
  python3 -m rdp_bench.cli train "$1" --job "$1-gpu" --jobs-dir "$JOBS" --export-dir "$OUT/$1" "${@:2}"
}

stage_autoencoder() {
  local steps=${AE_STEPS:-4000}
  train autoencoder --job autoencoder-gpu --minutes "${AE_MINUTES:-2}" --max-steps "$steps" \
    --val-every $((steps / 2)) --crop 256 --batch 16 --lr 1e-4 --init $W/hyperprior/hyperprior-vr-n64m128.safetensors
  export_job autoencoder --export hyperprior-vr-n64m128
}

stage_corrdiff() {
  local steps=${SCORE_STEPS:-1500}
  train corrdiff --job corrdiff-gpu --minutes "${SCORE_MINUTES:-1.5}" --max-steps "$steps" --val-every "$steps" \
    --crop 256 --batch 16 --lr 1e-4 --init $W/corrdiff/corrdiff-score-w48.safetensors
  export_job corrdiff --export corrdiff-score-w48
}

stage_hific() {
  local base=${HIFIC_BASE_STEPS:-600}
  train hific --job hific-gpu --minutes "${HIFIC_MINUTES:-1.5}" --init "${HIFIC_INIT:-$W/hific/hific_tiny_0p80bpp.safetensors}" \
    --crop 256 --batch 8 --base-steps "$base" --rate-steps "${HIFIC_RATE_STEPS:-150}" \
    --gan-steps "${HIFIC_GAN_STEPS:-100}" --val-every "$base"
  export_job hific --export
}

stage_cdc() {
  local steps=${CDC_STEPS:-300}
  train cdc --job cdc-gpu --minutes "${CDC_MINUTES:-1.5}" --steps "$steps" --val-every "$steps" --crop 256 --batch 16
  export_job cdc --export
}

run_stage() {  # run_stage MODEL: its stage, with its logs, packed into $OUT/MODEL.tar; a failure goes to failures.txt
  local model=$1 status
  mkdir -p "$OUT/$model"
  echo "$(date -u +%T) $model"
  set +e
  ( set -e; "stage_$model" ) > "$OUT/$model/train.log" 2>&1
  status=$?
  set -e
  [ "$status" -eq 0 ] || echo "$model: failed (exit $status), see train.log in $model.tar" | tee -a "$OUT/failures.txt"
  cp "$JOBS/$model-gpu/"{train.csv,val.csv,curves.png} "$OUT/$model/" 2>/dev/null || true
  tail -n 3 "$OUT/$model/train.log"
  tar -C "$OUT" -cf "$OUT/$model.tar" "$model" && rm -rf "${OUT:?}/$model"
}

for model in autoencoder corrdiff hific cdc; do
  run_stage "$model"
done
ls -l "$OUT"
