#!/usr/bin/env bash
# Regenerate the committed reference run (results/reference/samples/) and its report (results/reference/report/).
#
#   scripts/make_reference.sh                 # every codec that can run here, resumable
#   CODECS=jpeg,bpg FRESH=1 scripts/make_reference.sh
#   CODEC_TIMEOUT=1200 scripts/make_reference.sh      # seconds per codec; slower codecs are left out
#   DONE=jpeg,bpg CODECS=hific scripts/make_reference.sh  # add a codec to a finished run folder
#
# The full run (with bitstreams) stays in $RUN (git-ignored); only the lean tables, summaries and
# provenance are copied into results/reference/samples, which `rdp-bench check` uses as its baseline.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=${RUN:-runs/reference-samples}
REF=${REF:-results/reference/samples}
REPORT=${REPORT:-results/reference/report}
METRICS=${METRICS:-psnr,ms-ssim,lpips,dists,fid,kid}
ANCHOR=${ANCHOR:-bpg}
DEVICE=${DEVICE:-cpu}
DONE=${DONE:-}
if [ -z "${CODECS:-}" ]; then
  CODECS=$(python - <<'PY'
from rdp_bench.codecs import codec_availability, list_codecs
print(",".join(c for c in list_codecs() if codec_availability(c)))
PY
)
fi
echo "reference: codecs=$CODECS metrics=$METRICS anchor=$ANCHOR run=$RUN"
[ "${FRESH:-0}" = 1 ] && rm -rf "$RUN"

publish() {  # the lean copy `rdp-bench check` uses, with only the codecs that finished; refreshed after each
  rm -rf "$REF" && mkdir -p "$REF/summary"
  python - "$RUN" "$REF" "$@" <<'PY'
import shutil, sys
from pathlib import Path
import pandas as pd
run, ref, done = Path(sys.argv[1]), Path(sys.argv[2]), set(sys.argv[3:])
for name in ("results.csv", "dataset_metrics.csv"):
    table = pd.read_csv(run / name)
    table[table["codec"].isin(done)].to_csv(ref / name, index=False)
shutil.copy(run / "provenance.json", ref / "provenance.json")
for codec in done:
    shutil.copy(run / "summary" / f"{codec}.json", ref / "summary" / f"{codec}.json")
PY
}

# one codec at a time: a codec that fails (missing weights, a crash) is reported and skipped
ran=()
for codec in ${DONE//,/ }; do ran+=("$codec"); done  # DONE: codecs already complete in $RUN, published as they are
for codec in ${CODECS//,/ }; do
  echo "$(date -u +%T) $codec"
  # a codec over its time budget is left out (its partial rows stay in $RUN for a later resume)
  if timeout "${CODEC_TIMEOUT:-3600}" rdp-bench run --codec "$codec" --dataset samples --out "$RUN" --metrics "$METRICS" \
      --device "$DEVICE" --quiet > "$RUN.$codec.log" 2>&1; then
    ran+=("$codec")
    publish "${ran[@]}"
  else
    echo "!! $codec failed, left out of the reference (see $RUN.$codec.log):"; tail -3 "$RUN.$codec.log"
  fi
done
[ ${#ran[@]} -gt 0 ] || { echo "no codec ran"; exit 1; }

anchor=$ANCHOR
case ",$(IFS=,; echo "${ran[*]}")," in *",$ANCHOR,"*) ;; *) anchor=${ran[0]}; echo "anchor $ANCHOR did not run; using $anchor";; esac
rm -rf "$REPORT"
rdp-bench report "$RUN" --anchor "$anchor" --out "$REPORT" --latex --grid-images 2 --codec "$(IFS=,; echo "${ran[*]}")"
du -sh "$REF" "$REPORT"
