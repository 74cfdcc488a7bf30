"""``rdp-bench check``: the regression gate for users who retrain or replace a checkpoint.

A new run is compared with a baseline run folder (e.g. ``results/reference/samples``) per codec and
rate point, on the images both contain:

* bpp may not rise by more than ``bpp_rise_pct`` percent;
* PSNR / MS-SSIM (dB) may not fall, LPIPS / DISTS / FID / KID may not rise, by more than their tolerance;
* the BD-rate of the new curve against the baseline curve (same rate points) may not exceed
  ``bdrate_worse_pct`` percent, for every metric both runs have.

A checkpoint whose sha256 differs from the baseline's provenance is reported (and fails only with
``fail_on_checkpoint_change``): after a retrain it is expected, in CI of an unchanged model it is not.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from rdp_bench.reports.bdrate import bd
from rdp_bench.reports.runs import Aggregate, ReportError, aggregate, load_run, metric_spec


@dataclass(frozen=True)
class Tolerances:
    bpp_rise_pct: float = 1.0
    psnr_drop_db: float = 0.05
    msssim_drop_db: float = 0.05
    lpips_rise: float = 0.005
    dists_rise: float = 0.005
    fid_rise: float = 1.0
    kid_rise: float = 0.002
    bdrate_worse_pct: float = 1.0
    fail_on_checkpoint_change: bool = False

    def for_metric(self, metric: str) -> float | None:
        return {"psnr": self.psnr_drop_db, "ms-ssim": self.msssim_drop_db, "lpips": self.lpips_rise,
                "dists": self.dists_rise, "fid": self.fid_rise, "kid": self.kid_rise}.get(metric)


@dataclass
class CheckRow:
    codec: str
    rate: str  # rate label, or "curve" for BD-rate rows
    check: str
    baseline: str
    new: str
    change: str
    tolerance: str
    status: str  # "ok", "FAIL", "changed", "skip"


@dataclass
class CheckResult:
    rows: list[CheckRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    images: int = 0

    @property
    def failures(self) -> list[CheckRow]:
        return [r for r in self.rows if r.status == "FAIL"]

    @property
    def compared(self) -> int:
        return sum(r.status in ("ok", "FAIL") for r in self.rows)

    @property
    def passed(self) -> bool:
        return not self.failures and self.compared > 0

    def markdown(self) -> str:
        head = ["codec", "rate", "check", "baseline", "new", "change", "tolerance", "status"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            status = f"**{r.status}**" if r.status == "FAIL" else r.status
            lines.append("| " + " | ".join([r.codec, r.rate, r.check, r.baseline, r.new, r.change, r.tolerance, status]) + " |")
        verdict = (f"**FAILED**: {len(self.failures)} regression(s)" if self.failures else
                   ("passed" if self.passed else "**nothing compared**"))
        return "\n".join([f"rdp-bench check on {self.images} image(s): {verdict}", "", *lines, "",
                          *[f"- {n}" for n in self.notes]]) + "\n"


def _fmt(metric: str, value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.4f}" if metric in ("bpp", "lpips", "dists", "kid") else f"{value:.3f}"


def run_check(new_dir: str | Path, baseline_dir: str | Path, tol: Tolerances = Tolerances(),
              codecs: list[str] | None = None) -> CheckResult:
    new_run, base_run = load_run(new_dir), load_run(baseline_dir)
    result = CheckResult()
    wanted = codecs or list(dict.fromkeys(new_run.rows["codec"].astype(str)))
    base_codecs = set(base_run.rows["codec"].astype(str))
    missing = [c for c in wanted if c not in base_codecs]
    for c in missing:
        result.notes.append(f"{c}: not in the baseline, not checked")
    wanted = [c for c in wanted if c in base_codecs]
    if not wanted:
        result.notes.append("no codec of the new run is in the baseline")
        return result
    common = set(new_run.rows["image_sha256"]) & set(base_run.rows["image_sha256"])
    if not common:
        raise ReportError(f"{new_dir} and {baseline_dir} share no image (compare runs on the same dataset)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        new = aggregate([new_run], codecs=wanted, images=common)
        base = aggregate([base_run], codecs=wanted, images=set(new.rows["image_sha256"]))
    if set(new.rows["image_sha256"]) != set(base.rows["image_sha256"]):
        raise ReportError("the new run and the baseline cover different images for these codecs")
    result.images = new.rows["image_sha256"].nunique()
    result.notes += [f"new run: {w}" for w in new.warnings if "not measured" not in w]
    metrics = [m for m in new.metrics if m in base.metrics]

    for codec in wanted:
        npts = new.points[new.points["codec"] == codec]
        bpts = base.points[base.points["codec"] == codec]
        shared = [lab for lab in npts["rate_label"] if lab in set(bpts["rate_label"])]
        for lab in npts["rate_label"]:
            if lab not in shared:
                result.rows.append(CheckRow(codec, lab, "rate point", "absent", "present", "", "", "skip"))
        for lab in shared:
            n = npts[npts["rate_label"] == lab].iloc[0]
            b = bpts[bpts["rate_label"] == lab].iloc[0]
            _checkpoint_row(result, tol, codec, lab, str(n["checkpoint"]),
                            base_run.checkpoint_of(codec, lab) or str(b["checkpoint"]))
            change = 100.0 * (n["bpp"] - b["bpp"]) / b["bpp"]
            result.rows.append(CheckRow(codec, lab, "bpp", _fmt("bpp", b["bpp"]), _fmt("bpp", n["bpp"]), f"{change:+.2f}%",
                                        f"rise ≤ {tol.bpp_rise_pct:g}%", "FAIL" if change > tol.bpp_rise_pct else "ok"))
            for m in metrics:
                limit = tol.for_metric(m)
                if limit is None:
                    continue
                spec = metric_spec(m)
                nv, bv = spec.display(float(n[m])), spec.display(float(b[m]))
                if not (math.isfinite(nv) and math.isfinite(bv)):
                    why = new.reason(codec, m) if not math.isfinite(nv) else base.reason(codec, m)
                    result.rows.append(CheckRow(codec, lab, spec.label, _fmt(m, bv), _fmt(m, nv), why, "", "skip"))
                    continue
                worse = (bv - nv) if spec.higher_is_better else (nv - bv)
                word = "drop" if spec.higher_is_better else "rise"
                unit = f" {spec.unit}" if spec.unit else ""
                result.rows.append(CheckRow(codec, lab, f"{spec.label}{' [dB]' if m == 'ms-ssim' else ''}", _fmt(m, bv),
                                            _fmt(m, nv), f"{(nv - bv) + 0.0:+.4f}".replace("-0.0000", "+0.0000"),
                                            f"{word} ≤ {limit:g}{unit}",
                                            "FAIL" if worse > limit + 1e-12 else "ok"))
        # BD-rate of the new curve against the baseline's, on the same rate points
        bsub = bpts[bpts["rate_label"].isin(shared)]
        nsub = npts[npts["rate_label"].isin(shared)]
        for m in metrics:
            spec = metric_spec(m)
            res = bd(bsub["bpp"].to_numpy(float), [spec.display(v) for v in bsub[m].to_numpy(float)],
                     nsub["bpp"].to_numpy(float), [spec.display(v) for v in nsub[m].to_numpy(float)],
                     higher_is_better=spec.higher_is_better, kind="rate", method="akima")
            if not res.ok:
                result.rows.append(CheckRow(codec, "curve", f"BD-rate ({spec.label})", "", "", res.reason, "", "skip"))
                continue
            result.rows.append(CheckRow(codec, "curve", f"BD-rate ({spec.label})", "0%", f"{res.value:+.2f}%",
                                        f"{res.value:+.2f}%", f"≤ {tol.bdrate_worse_pct:g}%",
                                        "FAIL" if res.value > tol.bdrate_worse_pct else "ok"))
    return result


def _checkpoint_row(result: CheckResult, tol: Tolerances, codec: str, label: str, new: str, base: str) -> None:
    if new == base:
        return
    status = "FAIL" if tol.fail_on_checkpoint_change else "changed"
    result.rows.append(CheckRow(codec, label, "checkpoint sha256", base[:12], new[:12], "different weights", "", status))
