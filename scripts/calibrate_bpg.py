"""Measure the x265 4.x (PyAV) emulation of BPG against real bpgenc 0.9.8, for a few candidate settings.

    nice -n 10 python scripts/calibrate_bpg.py                      # every candidate, the 12 photos
    nice -n 10 python scripts/calibrate_bpg.py --candidates qp+1,qp+0 --images kivy_kiwi.png,skimage_chelsea.png

The reference is ../shared/bpg/bpgenc-0.9.8-reference.csv (what the real binaries give on 12 of
../shared/photos, q 22..47, 4:2:0 and 4:4:4). Each candidate runs in a fresh process (x265 keeps a
--lambda-file's tables for the rest of a process), one at a time, and its points are kept in
OUT/points/<candidate>.csv so a later run only encodes what is missing. Written to OUT
(results/bpg_calibration): per_q.csv (per candidate, chroma, q: mean and mean-absolute dbytes %,
dPSNR dB), bd_rate.csv (per candidate, chroma, image: BD-rate % against real bpgenc), summary.csv,
and calibration.md (the same as Markdown tables).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rdp_bench.codecs import bpg as B  # noqa: E402
from rdp_bench.codecs import bpg_calibration as C  # noqa: E402

#: name -> (emulation, why it is a candidate)
CANDIDATES: dict[str, tuple[B.X265Emulation, str]] = {
    "qp+1": (B.X265Emulation(qp_offset=1),
            "the emulation before calibration: one QP coarser than bpgenc, x265 4.x lambdas"),
    "qp+0": (B.X265Emulation(qp_offset=0),
          "what x265_glue.c does (p->rc.qp = params->qp): bpgenc's QP, x265 4.x lambdas"),
    "qp+0_bpglambda": (B.X265Emulation(qp_offset=0, bundled_lambda=True),
                         "bpgenc's QP and the lambda tables of the x265 bpgenc bundles (lambda2 = 0.85 lambda^2)"),
    "qp+1_bpglambda": (B.X265Emulation(qp_offset=1, bundled_lambda=True),
                       "control: the old lambdas one QP coarser"),
    "qp+0_bpglambda_x1.05": (B.X265Emulation(qp_offset=0, bundled_lambda=True, lambda_scale=1.05),
                             "sensitivity: the old lambdas x1.05 (lambda2 x1.1, about +0.4 QP) against the "
                             "residual excess of bytes at q 42 and 47"),
}


def _points_path(out: Path, name: str) -> Path:
    return out / "points" / f"{name}.csv"


def _worker(name: str, images: list[str] | None, reference: str, photos: str, dest: str) -> None:
    """Runs in a fresh process: measure one candidate and write its points."""
    emu = CANDIDATES[name][0]
    ref = C.read_reference(Path(reference))
    t0 = time.time()
    pts = C.measure(emu, ref, Path(photos), images, log=lambda m: print(f"[{name}]{m}", flush=True))
    pts.insert(0, "candidate", name)
    pts["emulation"] = emu.label()
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    pts.to_csv(dest, index=False)
    print(f"[{name}] {len(pts)} points, {pts['cpu_s'].sum():.0f} CPU s in the encoder, {time.time() - t0:.0f} s wall",
          flush=True)


def points_for(name: str, ref: pd.DataFrame, images: list[str], out: Path, args) -> pd.DataFrame:
    path = _points_path(out, name)
    have = pd.read_csv(path, dtype={"chroma": str}) if path.is_file() else None
    if have is not None and have["emulation"].iloc[0] != CANDIDATES[name][0].label():
        have = None  # the candidate's definition changed: measure again
    todo = [i for i in images if have is None or i not in set(have["image"])]
    if todo:
        tmp = path.with_name(path.stem + ".new.csv")
        proc = mp.get_context("spawn").Process(target=_worker, args=(name, todo, str(args.reference), str(args.photos), str(tmp)))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            raise SystemExit(f"candidate {name}: the measuring process failed (exit {proc.exitcode})")
        new = pd.read_csv(tmp, dtype={"chroma": str})
        have = new if have is None else pd.concat([have, new], ignore_index=True)
        have.to_csv(path, index=False)
        tmp.unlink()
    return have[have["image"].isin(images)]


def _md_table(df: pd.DataFrame, floatfmt: dict[str, str]) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for row in df.itertuples(index=False):
        cells = [format(v, floatfmt.get(c, "")) if isinstance(v, float) else str(v) for c, v in zip(cols, row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", type=Path, default=C.REFERENCE_CSV)
    ap.add_argument("--photos", type=Path, default=C.PHOTOS_DIR)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bpg_calibration")
    ap.add_argument("--candidates", default=",".join(CANDIDATES), help="comma-separated names (default: all)")
    ap.add_argument("--images", default="", help="comma-separated subset of the reference images (default: all)")
    args = ap.parse_args(argv)
    names = _resolve([n.strip() for n in args.candidates.split(",") if n.strip()])
    ref = C.read_reference(args.reference)
    images = [i for i in args.images.split(",") if i] or list(dict.fromkeys(ref["image"]))
    unknown = set(images) - set(ref["image"])
    if unknown:
        raise SystemExit(f"not in the reference table: {sorted(unknown)}")
    args.out.mkdir(parents=True, exist_ok=True)

    per_q, bdr, summ = [], [], []
    for name in names:
        print(f"{name}: {CANDIDATES[name][1]}", flush=True)
        j = C.joined(ref, points_for(name, ref, images, args.out, args))
        label = CANDIDATES[name][0].label()
        per_q.append(C.per_q_gaps(j).assign(candidate=name))
        bdr.append(C.bd_rates(j).assign(candidate=name))
        for chroma, s in C.summary(j).items():
            summ.append({"candidate": name, "emulation": label, "chroma": chroma, "images": j["image"].nunique(), **s})
    per_q = pd.concat(per_q, ignore_index=True)
    bdr = pd.concat(bdr, ignore_index=True)
    summ = pd.DataFrame(summ)
    suffix = "" if len(images) == len(set(ref["image"])) else f"-{len(images)}images"
    per_q.to_csv(args.out / f"per_q{suffix}.csv", index=False, float_format="%.4f")
    bdr.to_csv(args.out / f"bd_rate{suffix}.csv", index=False, float_format="%.4f")
    summ.to_csv(args.out / f"summary{suffix}.csv", index=False, float_format="%.4f")

    md = [f"# BPG emulation (x265 4.x via PyAV) against real bpgenc 0.9.8\n",
          f"{len(images)} photos of the shared reference table, q {sorted(ref['q'].unique())}, "
          f"emulation minus real (bytes of the .bpg file, RGB PSNR). Targets: mean |dbytes| <= "
          f"{C.TARGET_ABS_DBYTES_PCT} % and mean |dPSNR| <= {C.TARGET_ABS_DPSNR_DB} dB at every q, mean BD-rate "
          f"within +-{C.TARGET_BD_RATE_PCT} % (anchor: real bpgenc; akima; per image, then averaged).\n",
          "## Candidates\n"]
    md += [f"- `{n}` ({CANDIDATES[n][0].label()}): {CANDIDATES[n][1]}" for n in names]
    md += [f"\nThe `bpg` codecs use `{B.EMULATION.label()}` (rdp_bench.codecs.bpg.EMULATION). Points: "
           "points/<candidate>.csv (bytes, PSNR and the encoder's CPU seconds per image, chroma, q)."]
    md += ["\n## Summary\n", _md_table(summ.drop(columns=["emulation"]), {c: ".3f" for c in summ.columns})]
    for name in names:
        t = per_q[per_q["candidate"] == name].drop(columns=["candidate"])
        md += [f"\n## `{name}` per q\n", _md_table(t, {c: ".3f" for c in t.columns})]
    (args.out / f"calibration{suffix}.md").write_text("\n".join(md) + "\n")
    print(summ.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def _resolve(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise SystemExit(f"unknown candidate(s) {unknown}; known: {list(CANDIDATES)}")
    return names


if __name__ == "__main__":
    main()
