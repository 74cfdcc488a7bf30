"""Convert a run folder's tables written under bitstream format v1 to format v2 and today's bpp convention.

    python scripts/convert_reference_v2.py [results/reference/samples]

Under v1 a row's ``bytes`` was the whole container, ``24 + len(codec name) + payload``, and ``bpp`` was
``8 x bytes / pixels``. The payload bytes do not depend on the container, so the conversion is exact:
``bytes`` becomes the payload, ``bpp = 8 x payload / pixels``, and the v2 container a run writes today is
recorded beside it (``container_bytes = payload + 25``, ``bpp_container``). The bpp-derived columns
(``bpp_estimated``: the model's estimate of the payload; ``bpp_gamma``: CorrDiff's γ bytes inside the
payload; ``bpp_bpg_equiv``: the size of the equivalent .bpg file) never counted the container and are
left as they are. The per-rate-point means of ``summary/<codec>.json`` are recomputed from the rows
(checked first to equal the old rows' means). Prints each codec's mean bpp before and after.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd

from rdp_bench.container import FRAMING_BYTES, Rate, legacy_rate_columns

REF = Path(__file__).resolve().parents[1] / "results" / "reference" / "samples"
RATE_COLUMNS = ("bytes", "bpp", "container_bytes", "bpp_container")


def converted(row: pd.Series) -> dict:
    """The v2 rate columns of one v1 row (its v1 bpp checked against its bytes first)."""
    pixels = int(row["height"]) * int(row["width"])
    if not math.isclose(float(row["bpp"]), 8.0 * int(row["bytes"]) / pixels, rel_tol=1e-12):
        raise SystemExit(f"row {row['codec']} {row['rate_label']} {row['image_id']}: bpp is not 8 x bytes / pixels")
    payload = legacy_rate_columns(str(row["codec"]), int(row["bytes"]), int(row["height"]), int(row["width"]))["bytes"]
    return Rate(payload, payload + FRAMING_BYTES, pixels).columns()


def _means(table: pd.DataFrame, codec: str, column: str) -> dict[str, float]:
    rows = table[table["codec"] == codec]
    return {str(k): float(v) for k, v in rows.groupby("rate_label")[column].mean().items()}


def convert_summary(path: Path, old: pd.DataFrame, new: pd.DataFrame) -> None:
    summary = json.loads(path.read_text())
    results, codec = summary["results"], summary["name"]
    labels = results["rate_label"]
    before, after, container = (_means(t, codec, c) for t, c in ((old, "bpp"), (new, "bpp"), (new, "bpp_container")))
    for label, value in zip(labels, results["bpp"]):
        if not math.isclose(value, before[label], rel_tol=1e-9):
            raise SystemExit(f"{path}: bpp of {label} is {value}, the rows' mean is {before[label]}")
    out: dict = {}
    for key, value in results.items():  # bpp_container where the runner puts it: among the sorted bpp_* keys
        if "bpp_container" not in out and (key in ("fid", "kid") or (key.startswith("bpp_") and key > "bpp_container")):
            out["bpp_container"] = [container[label] for label in labels]
        out[key] = [after[label] for label in labels] if key == "bpp" else value
    out.setdefault("bpp_container", [container[label] for label in labels])
    summary["results"] = out
    path.write_text(json.dumps(summary, indent=2))


def main(ref: Path = REF) -> None:
    old = pd.read_csv(ref / "results.csv")
    if "container_bytes" in old.columns:
        raise SystemExit(f"{ref / 'results.csv'} already has container_bytes: converted before")
    new = old.copy()
    rates = pd.DataFrame([converted(row) for _, row in old.iterrows()], index=old.index)
    for column in RATE_COLUMNS:
        new[column] = rates[column]
    # columns in the order a fresh run writes them (rows.jsonl keys are sorted; codec extras come after)
    core = list(old.columns[: old.columns.get_loc("width") + 1])  # the sorted columns every row has
    new = new[sorted(core + ["container_bytes", "bpp_container"]) + [c for c in old.columns if c not in core]]
    new.to_csv(ref / "results.csv", index=False)
    for codec in sorted(set(old["codec"])):
        convert_summary(ref / "summary" / f"{codec}.json", old, new)
    provenance = json.loads((ref / "provenance.json").read_text())
    provenance["converted"] = ("bitstream format v1 -> v2 by scripts/convert_reference_v2.py: bytes and bpp now "
                               "count the payload (v1 bytes - 24 - len(codec name)); container_bytes = payload + "
                               f"{FRAMING_BYTES}, the v2 file a run writes today")
    (ref / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print("| codec | mean bpp, v1 (container) | mean bpp, v2 (payload) | change | lowest rate point, v1 → v2 |")
    print("| --- | ---: | ---: | ---: | --- |")
    for codec in sorted(set(old["codec"])):
        b, a = old.loc[old["codec"] == codec, "bpp"].mean(), new.loc[new["codec"] == codec, "bpp"].mean()
        lb, la = _means(old, codec, "bpp"), _means(new, codec, "bpp")
        low = min(lb, key=lb.get)
        print(f"| `{codec}` | {b:.4f} | {a:.4f} | {100 * (a - b) / b:+.2f} % | {low}: {lb[low]:.4f} → {la[low]:.4f} "
              f"({100 * (la[low] - lb[low]) / lb[low]:+.2f} %) |")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REF)
