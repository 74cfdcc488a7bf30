"""Replace some codecs' rows in the committed reference run (results/reference/samples) by those of a new run.

    python scripts/replace_reference_codecs.py runs/new-samples corrdiff,corrdiff-e2e,hyperprior

Used when a codec's checkpoint changes and re-running every codec (scripts/make_reference.sh) would be
wasted time: the other codecs' rows stay as they were, and the new run's provenance is appended.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd

REF = Path(__file__).resolve().parents[1] / "results" / "reference" / "samples"


def main(run: Path, codecs: list[str], ref: Path = REF) -> None:
    new_prov = json.loads((run / "provenance.json").read_text())
    ref_prov = json.loads((ref / "provenance.json").read_text())
    fingerprints = {r["dataset"]["fingerprint"] for r in ref_prov["runs"] + new_prov["runs"]}
    if len(fingerprints) != 1:
        sys.exit("the new run is on other images than the reference run")
    for name in ("results.csv", "dataset_metrics.csv"):
        old, new = pd.read_csv(ref / name), pd.read_csv(run / name)
        missing = sorted(set(codecs) - set(new["codec"]))
        if missing:
            sys.exit(f"{run / name} has no rows of {', '.join(missing)}")
        merged = pd.concat([old[~old["codec"].isin(codecs)], new[new["codec"].isin(codecs)]], ignore_index=True)
        merged.to_csv(ref / name, index=False)
    for codec in codecs:
        shutil.copy(run / "summary" / f"{codec}.json", ref / "summary" / f"{codec}.json")
    ref_prov["runs"] += new_prov["runs"]
    (ref / "provenance.json").write_text(json.dumps(ref_prov, indent=2) + "\n")
    print(f"replaced {', '.join(codecs)} in {ref}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), [c for c in sys.argv[2].split(",") if c])
