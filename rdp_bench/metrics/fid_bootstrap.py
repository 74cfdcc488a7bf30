"""Bootstrap intervals of FID and KID by resampling patches, from the Inception features a run stored.

A run keeps each image's patch features (``partials/<metric>/.../<sha>.npz``: ``ref`` and ``rec``,
N x 2048 float32, row i of both from the same patch). A resample draws N patches with replacement
(reference and reconstruction of a patch together) and recomputes the statistic from those rows: the
network never runs again. A draw is a vector of counts ``w`` (how often each patch was drawn); the
same draws are used for every codec and rate point measured on the same patches, so their intervals
are paired like the per-image ones of ``rdp_bench.reports.bootstrap``.

* **FID** of a resample is the Fréchet distance of the count-weighted means and covariances
  (``sum w = N``, covariances divided by ``N - 1`` as in ``FIDStatistics``). ``tr sqrt(S1 S2)`` is computed
  exactly: with ``S1 = A^T A``, ``S2 = B^T B`` (A, B the centred rows scaled by ``sqrt(w / (N - 1))``) it is
  the sum of the singular values of ``A B^T`` when fewer patches than feature dimensions were drawn
  (the covariances are then rank-deficient), else the sum of ``sqrt(eig(S1^1/2 S2 S1^1/2))``. With every
  count 1 it is the FID of ``FID.finalize`` (torch-fidelity's formula) to rounding.
* **KID** of a resample is the unbiased MMD² of torch-fidelity's cubic kernel over all patch pairs,
  with pairs made of two copies of the same patch left out (a duplicate is not a second sample; keeping
  those pairs would add ``k(x, x)`` terms and shift every resample); a reconstruction and its own
  original count once per drawn copy, as each patch does once in the unresampled set. With every count 1 and at most
  1,000 patches this is exactly the KID ``KID.finalize`` reports (one subset = all patches). With more
  patches the reported KID averages 100 random subsets of 1,000 while the interval is that of the
  all-pairs estimator of the same quantity (``kid_std`` keeps the subsets' spread).

KID's interval is the percentile interval of the resampled values. FID is biased upwards, more so the
fewer distinct patches it sees, and a resample holds only about 63 % distinct patches, so resampled FIDs
sit above the estimate (by about the estimate's own small-sample bias, the bootstrap's reading of it).
FID's interval is therefore the percentile interval of the resamples shifted by their mean bias, so that
it is centred on the reported FID and gives its spread at this patch count; the shift is returned as
``bias`` (``fid_bootstrap_bias``): on few patches it is large, which is the small-sample warning in numbers
(see ``FID_MIN_PATCHES``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

#: fewer patches than the Inception feature dimension: the covariance is rank-deficient and FID is
#: strongly biased upwards (comparable within one run, not with published numbers); KID is unbiased
FID_MIN_PATCHES = 2048


def patch_draws(n_patches: int, resamples: int, seed: int = 0) -> np.ndarray:
    """(resamples, n_patches) counts: each row a draw of n_patches patches with replacement.

    Deterministic in (n_patches, resamples, seed), so every codec measured on the same patches gets the same draws."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_patches, size=(resamples, n_patches))
    return np.stack([np.bincount(row, minlength=n_patches) for row in idx]).astype(np.float64)


def load_features(paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(reconstruction, reference) features of the stored partials, concatenated in the order given."""
    recs, refs = [], []
    for path in paths:
        with np.load(path) as z:
            recs.append(np.asarray(z["rec"], np.float64))
            refs.append(np.asarray(z["ref"], np.float64))
    if not recs:
        return np.empty((0, 0)), np.empty((0, 0))
    return np.concatenate(recs), np.concatenate(refs)


def _trace_sqrt_product(a: np.ndarray, b: np.ndarray) -> float:
    """tr sqrt(A^T A B^T B) for k x d matrices A, B (both products positive semi-definite)."""
    k, d = a.shape
    if k <= d:
        return float(np.linalg.svd(a @ b.T, compute_uv=False).sum())
    vals, vecs = np.linalg.eigh(a.T @ a)
    root = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    inner = root @ (b.T @ b) @ root
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum())


def weighted_fid(rec: np.ndarray, ref: np.ndarray, counts: np.ndarray | None = None) -> float:
    """FID of reconstruction against reference features, each patch counted ``counts[i]`` times."""
    w = np.ones(len(rec)) if counts is None else np.asarray(counts, np.float64)
    keep = w > 0
    x, y, w = np.asarray(rec, np.float64)[keep], np.asarray(ref, np.float64)[keep], w[keep]
    n = w.sum()
    if n < 2:
        return math.nan
    mx, my = w @ x / n, w @ y / n
    scale = np.sqrt(w / (n - 1))[:, None]
    a, b = (x - mx) * scale, (y - my) * scale
    diff = mx - my
    return float(diff @ diff + (a * a).sum() + (b * b).sum() - 2 * _trace_sqrt_product(a, b))


def bootstrap_fid(rec: np.ndarray, ref: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """FID of every draw (rows of ``patch_draws``)."""
    return np.array([weighted_fid(rec, ref, w) for w in draws])


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # torch-fidelity's KID kernel: (x.y / d + 1) ** 3
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def bootstrap_kid(rec: np.ndarray, ref: np.ndarray, draws: np.ndarray, block: int = 512) -> np.ndarray:
    """Unbiased all-pairs MMD² (cubic kernel) of every draw, copies of one patch never paired with each other.

    Kernel blocks of ``block`` rows are computed once and applied to all draws together, so the cost is
    that of one all-pairs KID plus N² per draw, with ``block x N`` kernel values in memory."""
    x, y = np.asarray(rec, np.float64), np.asarray(ref, np.float64)
    w = np.atleast_2d(np.asarray(draws, np.float64))
    n = w.sum(axis=1)
    quad = {"xx": np.zeros(len(w)), "yy": np.zeros(len(w)), "xy": np.zeros(len(w))}
    diag = {"xx": np.zeros(len(w)), "yy": np.zeros(len(w)), "xy": np.zeros(len(w))}
    own = np.zeros(len(w))  # a patch's reconstruction against its own original, once per drawn copy
    for start in range(0, len(x), block):
        sl = slice(start, start + block)
        wb = w[:, sl]
        for key, (p, q) in {"xx": (x, x), "yy": (y, y), "xy": (x, y)}.items():
            k = _poly_kernel(p[sl], q)  # rows of this block against every patch
            quad[key] += np.einsum("ri,ir->r", wb, k @ w.T)
            diag[key] += (wb ** 2) @ np.diagonal(k[:, sl])
            if key == "xy":
                own += wb @ np.diagonal(k[:, sl])
    same = (w ** 2).sum(axis=1)  # ordered pairs of copies of one patch, diagonal included
    pairs = n * n - same
    with np.errstate(invalid="ignore", divide="ignore"):
        kxx = (quad["xx"] - diag["xx"]) / pairs
        kyy = (quad["yy"] - diag["yy"]) / pairs
        # cross pairs: distinct patches, plus each drawn patch with its own original (the n of n^2 an
        # unresampled set has); two different copies of one patch are a duplicate, as above
        kxy = (quad["xy"] - diag["xy"] + own) / (pairs + n)
        return kxx + kyy - 2 * kxy


def percentile_interval(samples: Iterable[float], level: float = 0.95, min_finite: int = 10) -> tuple[float, float]:
    """The percentile interval of resampled values; NaNs when fewer than ``min_finite`` (or half) are finite."""
    arr = np.asarray(list(samples), np.float64)
    finite = arr[np.isfinite(arr)]
    if len(finite) < max(min_finite, len(arr) // 2):
        return math.nan, math.nan
    alpha = (1 - level) / 2
    return float(np.quantile(finite, alpha)), float(np.quantile(finite, 1 - alpha))


def patch_interval(metric: str, rec: np.ndarray, ref: np.ndarray, resamples: int, seed: int = 0,
                   level: float = 0.95) -> dict[str, float]:
    """``low``, ``high``, ``patches`` (and for FID ``bias``) of ``fid`` or ``kid`` from the features of one
    (codec, rate point); the draws depend only on the patch count and the seed."""
    out = {"low": math.nan, "high": math.nan, "patches": len(rec)}
    if len(rec) < 2 or resamples <= 0:
        return out
    draws = patch_draws(len(rec), resamples, seed)
    if metric == "fid":
        values = bootstrap_fid(rec, ref, draws)
        finite = values[np.isfinite(values)]
        bias = float(finite.mean() - weighted_fid(rec, ref)) if len(finite) else math.nan
        lo, hi = percentile_interval(values - bias, level)
        return {**out, "low": lo, "high": hi, "bias": bias}
    lo, hi = percentile_interval(bootstrap_kid(rec, ref, draws), level)
    return {**out, "low": lo, "high": hi}


def partial_intervals(metric: str, paths: Sequence[Path], resamples: int, seed: int = 0,
                      level: float = 0.95) -> dict[str, float]:
    """``patch_interval`` from the partial files of one (codec, rate point), in the order given."""
    rec, ref = load_features(paths)
    return patch_interval(metric, rec, ref, resamples, seed, level)
