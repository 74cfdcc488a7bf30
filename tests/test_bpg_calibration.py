"""The x265 4.x emulation of BPG stays as close to real bpgenc 0.9.8 as measured (scripts/calibrate_bpg.py).

By default the gaps are pinned on two of the twelve reference photos (24 points, about 5 CPU seconds):
kivy_kiwi and skimage_chelsea, the two smallest. They are noisier than the twelve (per-q means over two
images; their BD-rate in 4:2:0 is -0.5 % where the twelve give +0.4 %), but they separate the settings
that matter: the emulation before calibration (QP q+1, x265 4.x's lambdas) gives 4.4 / 5.2 % worst
per-q |dbytes| and 0.26 / 0.46 dB worst per-q |dPSNR| on them, far outside the margins below.
RDP_BENCH_BPG_REFERENCE=1 pins the twelve photos' values instead (144 encodes, about 70 CPU seconds).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rdp_bench.codecs import bpg as B
from rdp_bench.codecs import bpg_calibration as C

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REFERENCE = SHARED / "bpg" / "bpgenc-0.9.8-reference.csv"
PHOTOS = SHARED / "photos"
SUBSET = ("kivy_kiwi.png", "skimage_chelsea.png")

#: measured with the adopted emulation (B.EMULATION): per chroma, the worst per-q mean |dbytes| (%),
#: the worst per-q mean |dPSNR| (dB), and the mean BD-rate (%) against real bpgenc
PINNED = {
    "subset": {"420": {"worst_q_mean_abs_dbytes_pct": 3.054, "worst_q_mean_abs_dpsnr": 0.118, "bd_rate_mean_pct": -0.487},
               "444": {"worst_q_mean_abs_dbytes_pct": 1.999, "worst_q_mean_abs_dpsnr": 0.085, "bd_rate_mean_pct": 0.419}},
    "all": {"420": {"worst_q_mean_abs_dbytes_pct": 4.076, "worst_q_mean_abs_dpsnr": 0.089, "bd_rate_mean_pct": 0.368},
            "444": {"worst_q_mean_abs_dbytes_pct": 2.329, "worst_q_mean_abs_dpsnr": 0.049, "bd_rate_mean_pct": 0.583}},
}
#: how much worse than measured a value may get before the test fails (another CPU or x265 build
#: moves single decisions of the encoder; a change of settings moves all of them)
MARGIN = {"worst_q_mean_abs_dbytes_pct": 0.5, "worst_q_mean_abs_dpsnr": 0.02, "bd_rate_mean_pct": 0.3}


def _needs_shared() -> None:
    if not REFERENCE.is_file():
        pytest.skip(f"needs the bpgenc reference table {REFERENCE}")
    if not PHOTOS.is_dir():
        pytest.skip(f"needs the photos in {PHOTOS}")
    av = pytest.importorskip("av", reason="the x265 emulation needs PyAV")
    if "libx265" not in av.codecs_available or "hevc" not in av.codecs_available:
        pytest.skip("this PyAV build lacks libx265 or the hevc decoder")


@pytest.mark.parametrize("scope", ["subset", "all"])
def test_emulation_gaps_to_real_bpgenc_do_not_grow(scope):
    _needs_shared()
    if scope == "all" and not os.environ.get("RDP_BENCH_BPG_REFERENCE"):
        pytest.skip("the twelve photos (144 x265 encodes): set RDP_BENCH_BPG_REFERENCE=1")
    ref = C.read_reference(REFERENCE)
    images = SUBSET if scope == "subset" else None
    j = C.joined(ref, C.measure(B.EMULATION, ref, PHOTOS, images))
    assert len(j) == (24 if scope == "subset" else len(ref))
    got = C.summary(j)
    for chroma, pinned in PINNED[scope].items():
        for key, margin in MARGIN.items():
            value = got[chroma][key]
            if key == "bd_rate_mean_pct":
                assert abs(value) <= abs(pinned[key]) + margin, (chroma, key, value, pinned[key])
            else:
                assert value <= pinned[key] + margin, (chroma, key, value, pinned[key])
