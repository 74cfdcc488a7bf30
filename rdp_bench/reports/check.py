"""``rdp-bench check``: the regression gate for users who retrain or replace a checkpoint.

A new run is compared with a baseline run folder (e.g. ``results/reference/samples``) per codec and
rate point, on the images both contain:

* bpp may not rise by more than ``bpp_rise_pct`` percent;
* PSNR / MS-SSIM (dB) may not fall, LPIPS / DISTS / FID / KID may not rise, by more than their tolerance
  (FID/KID only when both runs computed them on the same images);
* the BD-rate of the new curve against the baseline curve (same rate points) may not exceed
  ``bdrate_worse_pct`` percent, for every metric both runs have.

Decoders with float noise or seeds (the diffusion codecs) differ between machines even for an unchanged
checkpoint. Give one or more re-runs of the baseline (another seed, another machine) as ``spread`` runs:
each tolerance then becomes at least ``spread_factor`` times the largest difference seen between the
baseline and its re-runs, for that codec, rate point and check. The tolerance column says when it did.

A checkpoint whose sha256 differs from the baseline's provenance is reported (and fails only with
``fail_on_checkpoint_change``): after a retrain it is expected, in CI of an unchanged model it is not.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from rdp_bench.reports.bdrate import bd
from rdp_bench.reports.runs import Aggregate, ReportError, Run, aggregate, load_run, metric_spec


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
    #: a measured spread widens a tolerance to this many times the spread
    spread_factor: float = 2.0

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
    worsening: float = math.nan  # how much worse, in the tolerance's unit (negative: better)
    limit: float = math.nan  # the tolerance applied (after any measured spread)
    unit: str = ""

    @property
    def margin(self) -> float:
        """Room left before the check fails (negative: by how much it failed)."""
        return self.limit - self.worsening

    @property
    def severity(self) -> float:
        """Worsening as a share of the tolerance: compares checks of different units."""
        if not (math.isfinite(self.worsening) and math.isfinite(self.limit)):
            return -math.inf
        return self.worsening / self.limit if self.limit > 0 else (math.inf if self.worsening > 0 else 0.0)

    def short(self) -> str:
        """One phrase for a summary line: 'bpp at q35 +5.00% (tolerance 1%)'."""
        where = "" if self.rate == "curve" else f" at {self.rate}"
        return f"{self.check}{where} {self.change} ({self.tolerance})"


@dataclass
class CodecVerdict:
    codec: str
    passed: bool
    checks: int
    failures: int
    worst: CheckRow | None

    def line(self) -> str:
        status = "pass" if self.passed else "FAIL"
        head = f"{self.codec}: {status}, {self.checks} checks" + (f", {self.failures} failed" if self.failures else "")
        if self.worst is None:
            return head
        w = self.worst
        unit = w.unit
        margin = f"over by {-w.margin:.4g}{unit}" if w.margin < 0 else f"margin {w.margin:.4g}{unit}"
        return f"{head}; worst: {w.short()}, {margin}"


@dataclass
class CheckResult:
    rows: list[CheckRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    images: int = 0
    baseline_images: int = 0
    codecs: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[CheckRow]:
        return [r for r in self.rows if r.status == "FAIL"]

    @property
    def compared(self) -> int:
        return sum(r.status in ("ok", "FAIL") for r in self.rows)

    @property
    def passed(self) -> bool:
        return not self.failures and self.compared > 0

    def verdicts(self) -> list[CodecVerdict]:
        out = []
        for codec in self.codecs:
            rows = [r for r in self.rows if r.codec == codec and r.status in ("ok", "FAIL")]
            fails = [r for r in rows if r.status == "FAIL"]
            worst = max(rows, key=lambda r: r.severity) if rows else None
            out.append(CodecVerdict(codec, bool(rows) and not fails, len(rows), len(fails), worst))
        return out

    def verdict(self) -> str:
        """The last line: what failed, by name, or that everything passed."""
        if self.failures:
            names = "; ".join(f"{r.codec} {r.short()}" for r in self.failures)
            return f"FAILED: {len(self.failures)} regression(s): {names}"
        if not self.passed:
            return "error: nothing was compared (no shared codec, rate point or metric)"
        return f"passed: {self.compared} checks within tolerance"

    def markdown(self, details: bool = True) -> str:
        head = ["codec", "rate", "check", "baseline", "new", "change", "tolerance", "status"]

        def table(rows: Iterable[CheckRow]) -> list[str]:
            lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for r in rows:
                status = f"**{r.status}**" if r.status == "FAIL" else r.status
                lines.append("| " + " | ".join([r.codec, r.rate, r.check, r.baseline, r.new, r.change, r.tolerance,
                                                status]) + " |")
            return lines

        verdict = self.verdict()
        images = f"{self.images} image{'s' if self.images != 1 else ''}"
        out = [f"### rdp-bench check on {images}: {'**' + verdict.split(':')[0] + '**'}", ""]
        if self.failures:
            out += ["**Failures**", "", *table(self.failures), ""]
        out += [f"- {v.line()}" for v in self.verdicts()]
        out += [""] + [f"- note: {n}" for n in self.notes]
        if details:
            out += ["", "<details><summary>every check</summary>", "", *table(self.rows), "", "</details>"]
        out += ["", verdict]
        return "\n".join(out) + "\n"


def _fmt(metric: str, value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.4f}" if metric in ("bpp", "lpips", "dists", "kid") else f"{value:.3f}"


def _image_names(run: Run, shas: Iterable[str]) -> list[str]:
    rows = run.rows.drop_duplicates("image_sha256").set_index("image_sha256")
    return sorted(str(rows.loc[s, "image_id"]) for s in shas if s in rows.index)


def _listing(names: list[str], limit: int = 8) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _point_values(agg: Aggregate, codec: str) -> dict[str, dict[str, float]]:
    """rate label -> {"bpp": ..., metric: display value} for one codec."""
    out: dict[str, dict[str, float]] = {}
    for _, p in agg.points[agg.points["codec"] == codec].iterrows():
        vals = {"bpp": float(p["bpp"])}
        for m in agg.metrics:
            vals[m] = metric_spec(m).display(float(p[m])) if m in p and pd.notna(p[m]) else math.nan
        out[str(p["rate_label"])] = vals
    return out


def _bd_rates(base: Aggregate, other: Aggregate, codec: str, labels: list[str], metric: str):
    spec = metric_spec(metric)
    b = base.points[(base.points["codec"] == codec) & base.points["rate_label"].isin(labels)]
    n = other.points[(other.points["codec"] == codec) & other.points["rate_label"].isin(labels)]
    return bd(b["bpp"].to_numpy(float), [spec.display(v) for v in b[metric].to_numpy(float)],
              n["bpp"].to_numpy(float), [spec.display(v) for v in n[metric].to_numpy(float)],
              higher_is_better=spec.higher_is_better, kind="rate", method="akima")


def _dataset_metric_images(run: Run, codec: str, metric: str) -> set[int]:
    d = run.dataset_rows
    if d.empty or "images" not in d.columns:
        return set()
    sub = d[(d["codec"].astype(str) == codec) & (d["metric"].astype(str) == metric) & d["value"].notna()]
    return {int(v) for v in sub["images"]}


def run_check(new_dir: str | Path, baseline_dir: str | Path, tol: Tolerances = Tolerances(),
              codecs: list[str] | None = None, spread: list[str | Path] | None = None) -> CheckResult:
    """Compare ``new_dir`` with ``baseline_dir``; ``spread``: re-runs of the baseline that measure its noise."""
    new_run, base_run = load_run(new_dir), load_run(baseline_dir)
    spread_runs = [load_run(p) for p in (spread or [])]
    result = CheckResult()
    wanted = codecs or list(dict.fromkeys(new_run.rows["codec"].astype(str)))
    base_codecs = set(base_run.rows["codec"].astype(str))
    for c in [c for c in wanted if c not in base_codecs]:
        result.notes.append(f"{c}: not in the baseline, not checked")
    wanted = [c for c in wanted if c in base_codecs]
    result.codecs = wanted
    if not wanted:
        result.notes.append("no codec of the new run is in the baseline")
        return result
    new_shas = set(new_run.rows.loc[new_run.rows["codec"].astype(str).isin(wanted), "image_sha256"])
    base_shas = set(base_run.rows.loc[base_run.rows["codec"].astype(str).isin(wanted), "image_sha256"])
    common = new_shas & base_shas
    if not common:
        raise ReportError(f"{new_dir} and {baseline_dir} share no image (compare runs on the same dataset)")
    result.baseline_images = len(base_shas)
    if base_shas - new_shas:  # a --limit run: fine, but the reader must know what was left out
        result.notes.append(f"the new run covers {len(common)} of the baseline's {len(base_shas)} images; compared on "
                            f"those. Not in the new run: {_listing(_image_names(base_run, base_shas - new_shas))}")
    if new_shas - base_shas:
        result.notes.append(f"{len(new_shas - base_shas)} image(s) of the new run are not in the baseline, not compared: "
                            f"{_listing(_image_names(new_run, new_shas - base_shas))}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        new = aggregate([new_run], codecs=wanted, images=common)
        shared_images = set(new.rows["image_sha256"])
        base = aggregate([base_run], codecs=wanted, images=shared_images)
        spreads = []
        for r in spread_runs:
            present = [c for c in wanted if c in set(r.rows["codec"].astype(str))]
            if present and shared_images & set(r.rows["image_sha256"]) == shared_images:
                spreads.append(aggregate([r], codecs=present, images=shared_images))
            else:
                result.notes.append(f"spread run {r.path} lacks these codecs or images; not used")
    if set(new.rows["image_sha256"]) != set(base.rows["image_sha256"]):
        raise ReportError("the new run and the baseline cover different images for these codecs")
    result.images = new.rows["image_sha256"].nunique()
    result.notes += [f"new run: {w}" for w in new.warnings if "not measured" not in w]
    metrics = [m for m in new.metrics if m in base.metrics]
    _note_unshared_metrics(result, new, base, new_run, base_run, wanted)

    for codec in wanted:
        nvals, bvals = _point_values(new, codec), _point_values(base, codec)
        svals = [_point_values(s, codec) for s in spreads if codec in s.codecs]
        shared = [lab for lab in nvals if lab in bvals]
        for lab in nvals:
            if lab not in shared:
                result.rows.append(CheckRow(codec, lab, "rate point", "absent", "present", "", "", "skip"))
        not_run = [lab for lab in bvals if lab not in nvals]
        if not_run:
            result.notes.append(f"{codec}: baseline rate point(s) not in the new run: {', '.join(not_run)}")
        for lab in shared:
            n, b = nvals[lab], bvals[lab]
            npt = new.points[(new.points["codec"] == codec) & (new.points["rate_label"] == lab)].iloc[0]
            bpt = base.points[(base.points["codec"] == codec) & (base.points["rate_label"] == lab)].iloc[0]
            _checkpoint_row(result, tol, codec, lab, str(npt["checkpoint"]),
                            base_run.checkpoint_of(codec, lab) or str(bpt["checkpoint"]))
            # bpp, in percent of the baseline
            change = 100.0 * (n["bpp"] - b["bpp"]) / b["bpp"]
            noise = [abs(100.0 * (s[lab]["bpp"] - b["bpp"]) / b["bpp"]) for s in svals if lab in s]
            limit, note = _widen(tol.bpp_rise_pct, noise, tol.spread_factor)
            result.rows.append(CheckRow(codec, lab, "bpp", _fmt("bpp", b["bpp"]), _fmt("bpp", n["bpp"]), f"{change:+.2f}%",
                                        f"rise ≤ {limit:.3g}%{note}", "FAIL" if change > limit else "ok",
                                        change, limit, "%"))
            for m in metrics:
                base_limit = tol.for_metric(m)
                if base_limit is None:
                    continue
                spec = metric_spec(m)
                nv, bv = n[m], b[m]
                label = f"{spec.label}{f' [{spec.unit}]' if spec.unit else ''}"
                if not (math.isfinite(nv) and math.isfinite(bv)):
                    why = new.reason(codec, m) if not math.isfinite(nv) else base.reason(codec, m)
                    result.rows.append(CheckRow(codec, lab, label, _fmt(m, bv), _fmt(m, nv), why, "", "skip"))
                    continue
                worse = (bv - nv) if spec.higher_is_better else (nv - bv)
                noise = [abs(s[lab][m] - bv) for s in svals if lab in s and math.isfinite(s[lab].get(m, math.nan))]
                limit, note = _widen(base_limit, noise, tol.spread_factor)
                word = "drop" if spec.higher_is_better else "rise"
                unit = f" {spec.unit}" if spec.unit else ""
                result.rows.append(CheckRow(codec, lab, label, _fmt(m, bv), _fmt(m, nv),
                                            f"{(nv - bv) + 0.0:+.4f}".replace("-0.0000", "+0.0000"),
                                            f"{word} ≤ {limit:.3g}{unit}{note}",
                                            "FAIL" if worse > limit + 1e-12 else "ok", worse, limit, unit))
        # BD-rate of the new curve against the baseline's, on the same rate points
        for m in metrics:
            spec = metric_spec(m)
            res = _bd_rates(base, new, codec, shared, m)
            if not res.ok:
                result.rows.append(CheckRow(codec, "curve", f"BD-rate ({spec.label})", "", "", res.reason, "", "skip"))
                continue
            noise = [abs(r.value) for s in spreads if codec in s.codecs
                     for r in [_bd_rates(base, s, codec, shared, m)] if r.ok]
            limit, note = _widen(tol.bdrate_worse_pct, noise, tol.spread_factor)
            result.rows.append(CheckRow(codec, "curve", f"BD-rate ({spec.label})", "0%", f"{res.value:+.2f}%",
                                        f"{res.value:+.2f}%", f"≤ {limit:.3g}%{note}",
                                        "FAIL" if res.value > limit else "ok", res.value, limit, "%"))
    return result


def _widen(limit: float, noise: list[float], factor: float) -> tuple[float, str]:
    """The tolerance, raised to ``factor`` × the measured spread when that is larger (and the note saying so)."""
    if not noise:
        return limit, ""
    measured = factor * max(noise)
    if measured <= limit:
        return limit, ""
    return measured, f" ({factor:g}× measured spread)"


def _note_unshared_metrics(result: CheckResult, new: Aggregate, base: Aggregate, new_run: Run, base_run: Run,
                           codecs: list[str]) -> None:
    """Say which metrics one side has and the other lacks, and why FID/KID could not be compared."""
    def has(agg: Aggregate, m: str) -> bool:
        return m in agg.points.columns and agg.points[m].notna().any()

    def measured(run: Run, m: str) -> bool:
        if m in run.rows.columns and run.rows[m].notna().any():
            return True
        d = run.dataset_rows
        return not d.empty and (d["metric"].astype(str) == m).any() and d.loc[d["metric"].astype(str) == m, "value"].notna().any()

    metrics = list(dict.fromkeys([*base.metrics, *new.metrics, *_dataset_metric_names(base_run),
                                  *_dataset_metric_names(new_run)]))
    for m in metrics:
        try:
            label = metric_spec(m).label
        except KeyError:
            continue
        in_new, in_base = measured(new_run, m), measured(base_run, m)
        if in_base and not in_new:
            result.notes.append(f"{label}: in the baseline, not measured in the new run (add it to --metrics to gate it)")
        elif in_new and not in_base:
            result.notes.append(f"{label}: measured in the new run, not in the baseline; not compared")
        elif in_new and in_base and not (has(new, m) and has(base, m)) and metric_spec(m).kind == "dataset":
            sizes_b = sorted({s for c in codecs for s in _dataset_metric_images(base_run, c, m)})
            sizes_n = sorted({s for c in codecs for s in _dataset_metric_images(new_run, c, m)})
            result.notes.append(f"{label}: not compared, the runs computed it on different image sets (baseline: "
                                f"{'/'.join(map(str, sizes_b)) or '?'} images, new run: {'/'.join(map(str, sizes_n)) or '?'}); "
                                "run the new one on the baseline's images")


def _dataset_metric_names(run: Run) -> list[str]:
    d = run.dataset_rows
    return [] if d.empty or "metric" not in d.columns else list(dict.fromkeys(d["metric"].astype(str)))


def _checkpoint_row(result: CheckResult, tol: Tolerances, codec: str, label: str, new: str, base: str) -> None:
    if new == base:
        return
    status = "FAIL" if tol.fail_on_checkpoint_change else "changed"
    result.rows.append(CheckRow(codec, label, "checkpoint sha256", base[:12], new[:12], "different weights", "", status))
    if status == "changed":  # not a failure, but never hidden behind --details
        result.notes.append(f"{codec} {label}: checkpoint sha256 changed ({base[:12]} -> {new[:12]}): different weights")
