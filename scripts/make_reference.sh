#!/usr/bin/env bash
# Regenerate the committed reference run (results/reference/samples/) and its report (results/reference/report/).
#
#   scripts/make_reference.sh                 # every codec that can run here, resumable
#   CODECS=jpeg,bpg FRESH=1 scripts/make_reference.sh
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
if [ -z "${CODECS:-}" ]; then
  CODECS=$(python - <<'PY'
from rdp_bench.codecs import codec_availability, list_codecs
print(",".join(c for c in list_codecs() if codec_availability(c)))
PY
)
fi
echo "reference: codecs=$CODECS metrics=$METRICS anchor=$ANCHOR run=$RUN"
[ "${FRESH:-0}" = 1 ] && rm -rf "$RUN"

# one codec at a time: a codec that fails (missing weights, a crash) is reported and skipped
ran=()
for codec in ${CODECS//,/ }; do
  if rdp-bench run --codec "$codec" --dataset samples --out "$RUN" --metrics "$METRICS" --device "$DEVICE" --quiet \
      > "$RUN.$codec.log" 2>&1; then
    ran+=("$codec")
  else
    echo "!! $codec failed, left out of the reference (see $RUN.$codec.log):"; tail -3 "$RUN.$codec.log"
  fi
done
[ ${#ran[@]} -gt 0 ] || { echo "no codec ran"; exit 1; }

rm -rf "$REF" && mkdir -p "$REF"
cp "$RUN/results.csv" "$RUN/dataset_metrics.csv" "$RUN/provenance.json" "$REF/"
cp -r "$RUN/summary" "$REF/"

anchor=$ANCHOR
case ",$(IFS=,; echo "${ran[*]}")," in *",$ANCHOR,"*) ;; *) anchor=${ran[0]}; echo "anchor $ANCHOR did not run; using $anchor";; esac
rm -rf "$REPORT"
rdp-bench report "$RUN" --anchor "$anchor" --out "$REPORT" --latex
du -sh "$REF" "$REPORT"
