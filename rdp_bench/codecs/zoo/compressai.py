"""Rate points of the CompressAI zoo codecs (``bmshj2018-*``, ``mbt2018*``, ``cheng2020-*``, MSE and MS-SSIM).

One table per (architecture, metric): rate point ``qK`` is CompressAI quality K, stable id K - 1 (the
quality's position in the zoo, whichever files are on disk). The files, their URLs and the (N, M) of
each quality are CompressAI 1.2's ``compressai/zoo/image.py`` (``model_urls``, ``cfgs``).

**What is pinned.** CompressAI publishes no full sha256 for these files. Like torchvision's, each file
name carries the first 8 hex digits of the file's sha256 (``mbt2018-mean-1-e522738d.pth.tar``), and that
prefix is all ``torch.hub.load_state_dict_from_url(check_hash=True)`` checks (``torch.hub.check_hash``:
``sha256(file)[:len(prefix)] == prefix``). So the pin here is that prefix, read from the name, and it is
checked the same way after every download and before every load: 32 bits, enough to catch a truncated,
corrupt or mixed-up file, not a forged one.
"""

from __future__ import annotations

import re

from rdp_bench.codecs.zoo import WeightsEntry, check_table

ROOT_URL = "https://compressai.s3.amazonaws.com/models/v1"
LICENSE = "BSD 3-Clause Clear (InterDigital, CompressAI)"
#: torch.hub's HASH_REGEX: the sha256 prefix between the last '-' and the first '.' after it
_PREFIX = re.compile(r"-([a-f0-9]{8,})\.")

# (architecture, metric) -> file name per quality 1, 2, ...
FILES: dict[tuple[str, str], tuple[str, ...]] = {
    ("bmshj2018-factorized", "mse"): tuple(f"bmshj2018-factorized-prior-{q}-{h}.pth.tar" for q, h in enumerate(
        ("446d5c7f", "87279a02", "5c6f152b", "1ed4405a", "866ba797", "9b02ea3a", "6dfd6734", "5232faa3"), 1)),
    ("bmshj2018-factorized", "ms-ssim"): tuple(f"bmshj2018-factorized-ms-ssim-{q}-{h}.pth.tar" for q, h in enumerate(
        ("9781d705", "4a584386", "5352f123", "4f91b847", "b3a88897", "ee028763", "8c265a29", "8811bd14"), 1)),
    ("bmshj2018-hyperprior", "mse"): tuple(f"bmshj2018-hyperprior-{q}-{h}.pth.tar" for q, h in enumerate(
        ("7eb97409", "93677231", "6d87be32", "de1b779c", "f8b614e1", "1ab9c41e", "3804dcbd", "a583f0cf"), 1)),
    ("bmshj2018-hyperprior", "ms-ssim"): tuple(f"bmshj2018-hyperprior-ms-ssim-{q}-{h}.pth.tar" for q, h in enumerate(
        ("5cf249be", "1ff60d1f", "92dd7878", "4377354e", "c34afc8d", "3a6d8229", "8747d3bc", "cc15b5f3"), 1)),
    ("mbt2018-mean", "mse"): tuple(f"mbt2018-mean-{q}-{h}.pth.tar" for q, h in enumerate(
        ("e522738d", "e54a039d", "723404a8", "6dba02a3", "d504e8eb", "a19628ab", "d5d441d1", "8089ae3e"), 1)),
    ("mbt2018-mean", "ms-ssim"): tuple(f"mbt2018-mean-ms-ssim-{q}-{h}.pth.tar" for q, h in enumerate(
        ("5bf9c0b6", "e2a1bf3f", "640ce819", "12626c13", "1be7f059", "b83bf379", "ddf9644c", "0cc7b94f"), 1)),
    ("mbt2018", "mse"): tuple(f"mbt2018-{q}-{h}.pth.tar" for q, h in enumerate(
        ("3f36cd77", "43b70cdd", "22901978", "456e2af9", "b4a046dd", "7052e5ea", "8ba2bf82", "dd0097aa"), 1)),
    ("mbt2018", "ms-ssim"): tuple(f"mbt2018-ms-ssim-{q}-{h}.pth.tar" for q, h in enumerate(
        ("2878436b", "c41cb208", "d0dd64e8", "a120e037", "9b30e3b7", "f8b3626f", "16e6ff50", "0cb49d43"), 1)),
    ("cheng2020-anchor", "mse"): tuple(f"cheng2020-anchor-{q}-{h}.pth.tar" for q, h in enumerate(
        ("dad2ebff", "a29008eb", "e49be189", "98b0b468", "23852949", "4c052b1a"), 1)),
    ("cheng2020-anchor", "ms-ssim"): tuple(f"cheng2020_anchor-ms-ssim-{q}-{h}.pth.tar" for q, h in enumerate(
        ("20f521db", "c7ff5812", "c23e22d5", "0e658304", "c0a95e77", "f2dc1913"), 1)),
    ("cheng2020-attn", "mse"): tuple(f"cheng2020_attn-mse-{q}-{h}.pth.tar" for q, h in enumerate(
        ("465f2b64", "e0805385", "2d07bbdf", "f7b0ccf2", "26c8920e", "730501f2"), 1)),
    ("cheng2020-attn", "ms-ssim"): tuple(f"cheng2020_attn-ms-ssim-{q}-{h}.pth.tar" for q, h in enumerate(
        ("c5381d91", "5dad201d", "5c9be841", "8b2f647e", "5ca1f34c", "216423ec"), 1)),
}

# architecture -> (N, M) per quality 1, 2, ... (cheng2020: M = N)
CHANNELS: dict[str, tuple[tuple[int, int], ...]] = {
    "bmshj2018-factorized": ((128, 192),) * 5 + ((192, 320),) * 3,
    "bmshj2018-hyperprior": ((128, 192),) * 5 + ((192, 320),) * 3,
    "mbt2018-mean": ((128, 192),) * 4 + ((192, 320),) * 4,
    "mbt2018": ((192, 192),) * 4 + ((192, 320),) * 4,
    "cheng2020-anchor": ((128, 128),) * 3 + ((192, 192),) * 3,
    "cheng2020-attn": ((128, 128),) * 3 + ((192, 192),) * 3,
}


def sha256_prefix(filename: str) -> str:
    match = _PREFIX.search(filename)
    if not match:
        raise ValueError(f"{filename} carries no sha256 prefix")
    return match.group(1)


def _table(architecture: str, metric: str) -> tuple[WeightsEntry, ...]:
    files = FILES[(architecture, metric)]
    return check_table(f"{architecture} ({metric})", [
        WeightsEntry(q - 1, f"q{q}", name, {"quality": q, "N": n, "M": m}, sha256=sha256_prefix(name),
                     url=f"{ROOT_URL}/{name}", license=LICENSE)
        for q, (name, (n, m)) in enumerate(zip(files, CHANNELS[architecture], strict=True), start=1)
    ])


TABLES: dict[tuple[str, str], tuple[WeightsEntry, ...]] = {key: _table(*key) for key in FILES}
