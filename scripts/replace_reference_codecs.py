"""Replace some codecs' rows in the committed reference run (results/reference/samples) by those of a new run.

    python scripts/replace_reference_codecs.py runs/new-samples corrdiff,corrdiff-e2e,hyperprior

Used when a codec's checkpoint changes and re-running every codec (scripts/make_reference.sh) would be
wasted time: the other codecs' rows stay as they were, and the new run's provenance is appended.
A run resumed in an old folder still holds the rows of the checkpoints it replaced; only rows whose
checkpoint is the one the new run's latest provenance entry names for that rate point are kept.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd

REF = Path(__file__).resolve().parents[1] / "results" / "reference" / "samples"


def current_checkpoints(runs: list[dict], codecs: list[str]) -> dict[tuple[str, str], str]:
    """(codec, rate label) -> checkpoint id, from the latest provenance entry that ran each codec."""
    current: dict[tuple[str, str], str] = {}
    for codec in codecs:
        entry = next((r for r in reversed(runs) if codec in r.get("codecs", {})), None)
        if entry is None:
            sys.exit(f"the new run's provenance.json never ran {codec}")
        for label, point in entry["codecs"][codec]["rate_points"].items():
            current[(codec, label)] = point.get("checkpoint", "")
    return current


def keep_current(rows: pd.DataFrame, current: dict[tuple[str, str], str]) -> pd.DataFrame:
    """The rows of the replaced codecs made with their current checkpoints (rows without one always match)."""
    wanted = [current.get((c, l)) for c, l in zip(rows["codec"], rows["rate_label"])]
    made = rows["checkpoint"].fillna("").astype(str)
    return rows[[w is not None and (not w or m == w) for w, m in zip(wanted, made)]]


def main(run: Path, codecs: list[str], ref: Path = REF) -> None:
    new_prov = json.loads((run / "provenance.json").read_text())
    ref_prov = json.loads((ref / "provenance.json").read_text())
    fingerprints = {r["dataset"]["fingerprint"] for r in ref_prov["runs"] + new_prov["runs"]}
    if len(fingerprints) != 1:
        sys.exit("the new run is on other images than the reference run")
    current = current_checkpoints(new_prov["runs"], codecs)
    for name in ("results.csv", "dataset_metrics.csv"):
        old, new = pd.read_csv(ref / name), pd.read_csv(run / name)
        missing = sorted(set(codecs) - set(new["codec"]))
        if missing:
            sys.exit(f"{run / name} has no rows of {', '.join(missing)}")
        fresh = keep_current(new[new["codec"].isin(codecs)], current)
        stale = len(new[new["codec"].isin(codecs)]) - len(fresh)
        if stale:
            print(f"{name}: left out {stale} rows of earlier checkpoints")
        merged = pd.concat([old[~old["codec"].isin(codecs)], fresh], ignore_index=True)
        merged.to_csv(ref / name, index=False)
    for codec in codecs:
        shutil.copy(run / "summary" / f"{codec}.json", ref / "summary" / f"{codec}.json")
    ref_prov["runs"] += new_prov["runs"]
    (ref / "provenance.json").write_text(json.dumps(ref_prov, indent=2) + "\n")
    print(f"replaced {', '.join(codecs)} in {ref}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), [c for c in sys.argv[2].split(",") if c])
