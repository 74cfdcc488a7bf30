"""FID and KID on 256x256 patches, the HiFiC / MS-ILLM ("FID/256") protocol.

Per image: cut a grid of non-overlapping 256x256 patches (the remainder is dropped); when both sides are
at least 384 px, add a second grid shifted by 128 px in both axes; take uint8 patches; compute the
InceptionV3 pool3 features (``inception.py``) of the original and of the reconstructed patches. Those
two N x 2048 arrays are the per-image partial the harness stores.

* FID streams: ``finalize`` keeps running sums of features and of their outer products (float64), so
  its memory does not depend on the number of images; the Fréchet distance itself is torch-fidelity's
  ``fid_statistics_to_metric``.
* KID is torch-fidelity's ``kid_features_to_metric`` (polynomial kernel of degree 3, gamma 1/2048,
  coef0 1, 100 subsets, seed 2020) with ``subset_size = min(1000, patches)``, computed in float64; it needs
  every feature in memory (N x 2048 float32 per side, plus a float64 copy while it runs). With fewer than
  1000 patches every subset is the whole set, so the
  100 estimates coincide and ``kid_std`` is 0.

Reference features depend only on the dataset image, so they are cached on disk under
``$RDP_BENCH_CACHE/features`` (default ``~/.cache/rdp-bench/features``), keyed by the weights, the
protocol and the ``reference_key`` (dataset + pixel hash).
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any, ClassVar, Iterable

import numpy as np
import torch

from rdp_bench.atomic import atomic_path
from rdp_bench.codecs.base import Availability
from rdp_bench.metrics.base import DatasetMetric
from rdp_bench.metrics.inception import (
    FEATURE_DIM, InceptionSource, LRUMemo, inception_features, inception_model, resolve_inception,
)
from rdp_bench.metrics.weights import WeightsMissing, weight_options

PATCH = 256
SHIFT = 128
#: both sides must reach this for the shifted grid (HiFiC: only images with room for it)
SHIFTED_GRID_MIN_SIDE = 384
PROTOCOL = f"patches{PATCH}-shift{SHIFT}-min{SHIFTED_GRID_MIN_SIDE}-uint8-pool3"
KID_SUBSETS = 100
KID_MAX_SUBSET_SIZE = 1000
KID_SEED = 2020


def patch_origins(height: int, width: int) -> list[tuple[int, int]]:
    """Top-left corners of the FID/256 patches of an H x W image."""
    origins = [(y, x) for y in range(0, height - PATCH + 1, PATCH) for x in range(0, width - PATCH + 1, PATCH)]
    if height >= SHIFTED_GRID_MIN_SIDE and width >= SHIFTED_GRID_MIN_SIDE:
        origins += [(y, x) for y in range(SHIFT, height - PATCH + 1, PATCH)
                    for x in range(SHIFT, width - PATCH + 1, PATCH)]
    return origins


def extract_patches(image: torch.Tensor) -> torch.Tensor:
    """uint8 N x 3 x 256 x 256 patches of a 3 x H x W image in [0, 1]."""
    pixels = image.detach().float().cpu().mul(255).round().clamp(0, 255).to(torch.uint8)
    origins = patch_origins(*pixels.shape[-2:])
    if not origins:
        return torch.empty((0, 3, PATCH, PATCH), dtype=torch.uint8)
    return torch.stack([pixels[:, y : y + PATCH, x : x + PATCH] for y, x in origins])


def feature_cache_dir() -> Path:
    root = os.environ.get("RDP_BENCH_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "rdp-bench") / "features"


def _atomic_save(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, array)


# (weights, device, reference key, reconstruction hash) -> (ref, rec) features, so that FID and KID
# requested together run the network once per image
_FEATURE_MEMO = LRUMemo(capacity=8)


class _PatchInceptionMetric(DatasetMetric):
    #: Inception batch per device type
    batch_sizes: ClassVar[dict[str, int]] = {"cuda": 64, "cpu": 16}

    def __init__(self, device: str | None = None, **options: Any) -> None:
        super().__init__(device, **options)
        self.weights_dir, self.allow_download = weight_options(options)
        self._source: InceptionSource | None = None

    @classmethod
    def availability(cls, **options: Any) -> Availability:
        try:
            resolve_inception(*weight_options(options))
        except WeightsMissing as exc:
            return Availability(False, str(exc))
        return Availability(True)

    @property
    def source(self) -> InceptionSource:
        if self._source is None:
            self._source = resolve_inception(self.weights_dir, self.allow_download)
        return self._source

    def features(self, patches: torch.Tensor) -> np.ndarray:
        model = inception_model(self.source, self.device)
        return inception_features(model, patches, self.batch_sizes.get(self.device.type, 16))

    def reference_features(self, patches: torch.Tensor, reference_key: str) -> np.ndarray:
        if not len(patches):
            return np.empty((0, FEATURE_DIM), np.float32)
        tag = hashlib.sha256(f"{PROTOCOL}|{reference_key}".encode()).hexdigest()[:32]
        path = feature_cache_dir() / f"{self.source.kind}-{self.source.digest[:12]}" / f"{tag}.npy"
        if path.is_file():
            try:
                cached = np.load(path, allow_pickle=False)
                if cached.shape == (len(patches), FEATURE_DIM):
                    return cached
            except (OSError, ValueError):
                pass  # a torn or foreign file: recompute and overwrite it
        feats = self.features(patches)
        _atomic_save(path, feats)
        return feats

    def extract(self, reference: torch.Tensor, reconstruction: torch.Tensor, reference_key: str) -> dict[str, np.ndarray]:
        rec_patches = extract_patches(reconstruction)
        memo_key = (self.source.digest, str(self.device), reference_key,
                    hashlib.sha256(rec_patches.numpy().tobytes()).hexdigest(), tuple(rec_patches.shape))
        if memo_key not in _FEATURE_MEMO:
            ref_feats = self.reference_features(extract_patches(reference), reference_key)
            rec_feats = self.features(rec_patches) if len(rec_patches) else np.empty((0, FEATURE_DIM), np.float32)
            _FEATURE_MEMO.put(memo_key, (ref_feats, rec_feats))
        ref_feats, rec_feats = _FEATURE_MEMO[memo_key]
        return {"ref": ref_feats, "rec": rec_feats}

    def provenance(self) -> dict[str, Any]:
        return {**self.source.describe(), "protocol": PROTOCOL, "feature_cache": str(feature_cache_dir())}


def _no_patches_reason(n: int) -> str:
    return f"{n} patches of {PATCH}x{PATCH}: images must be at least {PATCH} px on both sides"


class FIDStatistics:
    """Running mean and covariance of feature vectors (float64 sums; memory O(d^2), not O(n))."""

    def __init__(self) -> None:
        self.n = 0
        self.total: np.ndarray | None = None
        self.outer: np.ndarray | None = None

    def update(self, features: np.ndarray) -> None:
        f = np.asarray(features, dtype=np.float64)
        if self.total is None:  # sized by the first partial (2048 for Inception pool3)
            self.total = np.zeros(f.shape[1], dtype=np.float64)
            self.outer = np.zeros((f.shape[1], f.shape[1]), dtype=np.float64)
        self.n += len(f)
        self.total += f.sum(axis=0)
        self.outer += f.T @ f

    def mu_sigma(self) -> dict[str, np.ndarray]:
        mu = self.total / self.n
        sigma = (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)
        return {"mu": mu, "sigma": sigma}


def fid_from_statistics(reconstructed: FIDStatistics, reference: FIDStatistics) -> float:
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    return fid_statistics_to_metric(reconstructed.mu_sigma(), reference.mu_sigma(), verbose=False)[KEY_METRIC_FID]


class FID(_PatchInceptionMetric):
    name = "fid"
    higher_is_better = False
    description = "FID on 256x256 patches (HiFiC FID/256 protocol), FID-InceptionV3 pool3; also reports fid_patches"

    def finalize(self, partials: Iterable[dict[str, np.ndarray]]) -> dict[str, Any]:
        ref, rec = FIDStatistics(), FIDStatistics()
        for partial in partials:
            ref.update(partial["ref"])
            rec.update(partial["rec"])
        if rec.n < 2:
            return {"fid": math.nan, "fid_patches": rec.n, "reason": _no_patches_reason(rec.n)}
        return {"fid": fid_from_statistics(rec, ref), "fid_patches": rec.n}


def kid_subset_size(n_patches: int) -> int:
    return min(KID_MAX_SUBSET_SIZE, n_patches)


def kid_from_features(reconstructed: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """KID of reconstructed against reference features, in float64 (as NeuralCompression computes it).

    Argument order matters only through the subsets: torch-fidelity draws each subset's indexes from one
    seeded generator, first for its ``features_1`` and then for ``features_2``; we pass the
    reconstructions as ``features_1`` and the originals as ``features_2`` (torch-fidelity's
    generated-then-real order). With fewer than 1000 patches every subset is the whole set and the
    order does not change the value.
    """
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    # float64 kernels: in float32 the cubic kernel sums lose ~1e-6 relative (the features are ~1e3 in norm)
    out = kid_features_to_metric(
        torch.from_numpy(np.asarray(reconstructed, dtype=np.float64)),
        torch.from_numpy(np.asarray(reference, dtype=np.float64)),
        kid_subsets=KID_SUBSETS, kid_subset_size=kid_subset_size(len(reconstructed)), kid_kernel="poly",
        kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1, rng_seed=KID_SEED,
        verbose=False,
    )
    return {"kid": out[KEY_METRIC_KID_MEAN], "kid_std": out[KEY_METRIC_KID_STD]}


class KID(_PatchInceptionMetric):
    name = "kid"
    higher_is_better = False
    description = (f"KID on 256x256 patches (FID/256 protocol), torch-fidelity poly kernel, {KID_SUBSETS} subsets "
                   f"of min({KID_MAX_SUBSET_SIZE}, patches)")

    def finalize(self, partials: Iterable[dict[str, np.ndarray]]) -> dict[str, Any]:
        refs, recs = [], []
        for partial in partials:
            refs.append(np.asarray(partial["ref"], dtype=np.float32))
            recs.append(np.asarray(partial["rec"], dtype=np.float32))
        ref = np.concatenate(refs) if refs else np.empty((0, FEATURE_DIM), np.float32)
        rec = np.concatenate(recs) if recs else np.empty((0, FEATURE_DIM), np.float32)
        n = len(rec)
        if n < 2:
            return {"kid": math.nan, "kid_patches": n, "reason": _no_patches_reason(n)}
        return {**kid_from_features(rec, ref), "kid_patches": n, "kid_subset_size": kid_subset_size(n),
                "kid_subsets": KID_SUBSETS}
