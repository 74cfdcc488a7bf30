import os
import struct
import zlib

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


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack(">I", zlib.crc32(body))


def v1_stream(codec: str, rate_id: int, height: int, width: int, payload: bytes) -> bytes:
    """A format-v1 container, laid out as rdp-bench wrote them before the codec ids (name in the header)."""
    name = codec.encode("ascii")
    return _with_crc(struct.pack(">4sBB", b"RDPB", 1, len(name)) + name
                     + struct.pack(">HIII", rate_id, height, width, len(payload)) + payload)


def raw_v2_stream(codec_id: int, rate_id: int, height: int, width: int, payload: bytes, version: int = 2) -> bytes:
    """A CRC-valid v2 container with any header values, also those ``Container.pack`` refuses to write."""
    return _with_crc(struct.pack(">4sBHHIII", b"RDPB", version, codec_id, rate_id, height, width, len(payload))
                     + payload)


@pytest.fixture()
def job_photos(tmp_path):
    """Bundled samples under other names, for training jobs: two to train on, one named as a validation photo."""
    import shutil

    from rdp_bench.datasets import SAMPLES_DIR

    folder = tmp_path / "photos"
    folder.mkdir()
    srcs = sorted(SAMPLES_DIR.glob("*.png"))
    shutil.copy(srcs[0], folder / "train_a.png")
    shutil.copy(srcs[1], folder / "train_b.png")
    shutil.copy(srcs[2], folder / "skimage_astronaut.png")
    return folder
