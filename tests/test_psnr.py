import math

import numpy as np
import torch

from rdp_bench.metrics import get_metric
from rdp_bench.metrics.psnr import psnr


def test_psnr_hand_computed():
    ref = torch.zeros(3, 2, 2)
    rec = ref.clone()
    rec[0, 0, 0] = 10 / 255  # one value off by 10 levels among 12
    expected = 10 * math.log10(255**2 / (100 / 12))
    assert psnr(ref, rec) == pytest_approx(expected)


def pytest_approx(v):
    import pytest

    return pytest.approx(v, abs=1e-6)  # float32 storage of 10/255


def test_psnr_matches_compressai_uint8_convention(rng):
    # compressai.utils.bench computes PSNR on uint8 arrays: 20*log10(255) - 10*log10(mse)
    a = rng.integers(0, 256, (3, 31, 17)).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-6, 7, a.shape), 0, 255).astype(np.uint8)
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    reference = 20 * math.log10(255) - 10 * math.log10(mse)
    ours = get_metric("psnr").compute(torch.from_numpy(a).float() / 255, torch.from_numpy(b).float() / 255)
    assert abs(ours - reference) < 1e-6


def test_identical_images_infinite():
    x = torch.rand(3, 4, 4)
    assert psnr(x, x) == math.inf


def test_msssim_matches_library_and_small_images_nan():
    from pytorch_msssim import ms_ssim

    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 200, 180, generator=g)
    b = (a + 0.05 * torch.randn(3, 200, 180, generator=g)).clamp(0, 1)
    m = get_metric("ms-ssim")
    assert m.compute(a, b) == float(ms_ssim(a[None], b[None], data_range=1.0))
    assert math.isnan(m.compute(a[:, :100, :100], b[:, :100, :100]))
