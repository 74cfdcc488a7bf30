import os

import numpy as np
import pytest
import torch

os.environ.setdefault("RDP_BENCH_OFFLINE_TESTS", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def photo_tensor(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A smooth, photo-like test image (gradients plus mild texture), 3xHxW in [0,1], on the 8-bit grid."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([xx, yy, 0.5 * (xx + yy)])
    img = 0.9 * base + 0.1 * torch.rand(3, h, w, generator=g)
    return img.mul(255).round().div(255)


@pytest.fixture
def photo():
    return photo_tensor
