"""The x265 4.x emulation of BPG measured against real bpgenc 0.9.8 (the shared reference table).

The table (``bpgenc-0.9.8-reference.csv``: image, chroma, q, bytes, bpp, psnr) holds what the real
binaries give: ``bytes`` is the .bpg file, ``psnr`` RGB PSNR over all pixels. The emulation is run
on the same photos and compared point by point (bytes of the .bpg file bpgenc would write for the
emulated HEVC stream, and PSNR of our decoder's output) and as curves (BD-rate of the emulation
with real bpgenc as anchor, per image, with the project's BD implementation).

Used by ``scripts/calibrate_bpg.py`` (candidate settings, results/bpg_calibration/) and by the test
that pins the measured gaps (``tests/test_bpg_calibration.py``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from rdp_bench.codecs import bpg as B

#: ../shared/bpg and ../shared/photos next to the repository (where the project keeps them)
SHARED = Path(__file__).resolve().parents[3] / "shared"
REFERENCE_CSV = SHARED / "bpg" / "bpgenc-0.9.8-reference.csv"
PHOTOS_DIR = SHARED / "photos"
#: the issue's targets: per q, mean |dbytes| and mean |dPSNR|; per chroma, mean BD-rate
TARGET_ABS_DBYTES_PCT = 1.5
TARGET_ABS_DPSNR_DB = 0.05
TARGET_BD_RATE_PCT = 1.0


def read_reference(path: Path = REFERENCE_CSV) -> pd.DataFrame:
    ref = pd.read_csv(path, dtype={"chroma": str})
    missing = {"image", "chroma", "q", "bytes", "psnr"} - set(ref.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    return ref


def rgb_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def emulate_point(rgb: np.ndarray, q: int, chroma: str, emulation: B.X265Emulation) -> dict:
    """One emulated (image, q, chroma): the bytes of its .bpg file, RGB PSNR, and the encode's CPU seconds."""
    h, w, _ = rgb.shape
    t0 = time.process_time()
    stream = B.x265_encode(B.bpg_planes(rgb, chroma), q, chroma, emulation, min_cu=B.min_cu_size(h, w))
    cpu = time.process_time() - t0
    planes = B.hevc_decode(stream, chroma)
    out = B.rgb_from_planes(planes, h, w, chroma)
    return {"bytes": len(B.bpg_file(stream, h, w, chroma)), "psnr": rgb_psnr(rgb, out), "cpu_s": cpu}


def measure(emulation: B.X265Emulation, reference: pd.DataFrame, photos: Path = PHOTOS_DIR,
            images: Iterable[str] | None = None, log=None) -> pd.DataFrame:
    """Run the emulation on every reference row (of ``images`` when given); one row per point."""
    from rdp_bench.imageio import load_image_uint8

    rows = reference if images is None else reference[reference["image"].isin(list(images))]
    out = []
    for name, group in rows.groupby("image", sort=False):
        rgb = load_image_uint8(Path(photos) / name)
        for r in group.itertuples():
            point = emulate_point(rgb, int(r.q), str(r.chroma), emulation)
            out.append({"image": name, "chroma": str(r.chroma), "q": int(r.q),
                        "pixels": rgb.shape[0] * rgb.shape[1], **point})
        if log:
            log(f"  {name}: {len(group)} points")
    return pd.DataFrame(out)


def joined(reference: pd.DataFrame, emulated: pd.DataFrame) -> pd.DataFrame:
    """Reference and emulated points side by side, with dbytes_pct and dpsnr (emulation minus real)."""
    ref = reference[["image", "chroma", "q", "bytes", "psnr"]].rename(columns={"bytes": "ref_bytes", "psnr": "ref_psnr"})
    emu = emulated[["image", "chroma", "q", "bytes", "psnr", "pixels"]].rename(columns={"bytes": "emu_bytes", "psnr": "emu_psnr"})
    j = ref.merge(emu, on=["image", "chroma", "q"], how="inner", validate="one_to_one")
    j["dbytes_pct"] = 100.0 * (j["emu_bytes"] / j["ref_bytes"] - 1.0)
    j["dpsnr"] = j["emu_psnr"] - j["ref_psnr"]
    return j


def per_q_gaps(j: pd.DataFrame) -> pd.DataFrame:
    """Per (chroma, q): mean and mean-absolute dbytes (%) and dPSNR (dB) over the images."""
    g = j.groupby(["chroma", "q"])
    t = pd.DataFrame({
        "images": g.size(),
        "mean_dbytes_pct": g["dbytes_pct"].mean(),
        "mean_abs_dbytes_pct": g["dbytes_pct"].apply(lambda v: v.abs().mean()),
        "max_abs_dbytes_pct": g["dbytes_pct"].apply(lambda v: v.abs().max()),
        "mean_dpsnr": g["dpsnr"].mean(),
        "mean_abs_dpsnr": g["dpsnr"].apply(lambda v: v.abs().mean()),
        "max_abs_dpsnr": g["dpsnr"].apply(lambda v: v.abs().max()),
    })
    return t.reset_index()


def bd_rates(j: pd.DataFrame) -> pd.DataFrame:
    """Per (chroma, image): BD-rate (%) of the emulation against real bpgenc (anchor), akima, on bpp/PSNR."""
    from rdp_bench.reports.bdrate import bd

    out = []
    for (chroma, image), g in j.groupby(["chroma", "image"]):
        g = g.sort_values("q")
        bpp_ref = 8.0 * g["ref_bytes"].to_numpy() / g["pixels"].to_numpy()
        bpp_emu = 8.0 * g["emu_bytes"].to_numpy() / g["pixels"].to_numpy()
        r = bd(bpp_ref, g["ref_psnr"].to_numpy(), bpp_emu, g["emu_psnr"].to_numpy(), kind="rate")
        out.append({"chroma": chroma, "image": image, "bd_rate_pct": r.value, "note": r.reason})
    return pd.DataFrame(out)


def summary(j: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per chroma: the worst per-q mean |dbytes| and |dPSNR|, the overall means, the per-image BD-rate
    mean/min/max, and the share of points within 2 % bytes and 0.05 dB."""
    gaps, bdr = per_q_gaps(j), bd_rates(j)
    out = {}
    for chroma in sorted(j["chroma"].unique()):
        gq, gb = gaps[gaps["chroma"] == chroma], bdr[bdr["chroma"] == chroma]["bd_rate_pct"]
        jc = j[j["chroma"] == chroma]
        out[chroma] = {
            "worst_q_mean_abs_dbytes_pct": float(gq["mean_abs_dbytes_pct"].max()),
            "worst_q_mean_abs_dpsnr": float(gq["mean_abs_dpsnr"].max()),
            "mean_dbytes_pct": float(jc["dbytes_pct"].mean()),
            "mean_dpsnr": float(jc["dpsnr"].mean()),
            "bd_rate_mean_pct": float(gb.mean()),
            "bd_rate_min_pct": float(gb.min()),
            "bd_rate_max_pct": float(gb.max()),
            "share_within_2pct_005db": float(((jc["dbytes_pct"].abs() <= 2.0) & (jc["dpsnr"].abs() <= 0.05)).mean()),
        }
    return out


def meets_targets(s: dict[str, dict[str, float]]) -> bool:
    return all(v["worst_q_mean_abs_dbytes_pct"] <= TARGET_ABS_DBYTES_PCT
               and v["worst_q_mean_abs_dpsnr"] <= TARGET_ABS_DPSNR_DB
               and abs(v["bd_rate_mean_pct"]) <= TARGET_BD_RATE_PCT for v in s.values())


__all__ = ["PHOTOS_DIR", "REFERENCE_CSV", "bd_rates", "emulate_point", "joined", "measure", "meets_targets",
           "per_q_gaps", "read_reference", "summary"]
