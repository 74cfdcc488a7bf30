"""MS-ILLM (Muckley et al., ICML 2023): the official NeuralCompression weights in our HiFiC architecture.

The six released models ``msillm_quality_1..6`` (targets 0.035 ... 0.9 bpp; their table, with stable ids,
is ``rdp_bench/codecs/zoo/msillm.py``) are looked up in the torch
hub cache under their release file names, as ``torch.hub.load_state_dict_from_url`` stores them, or
given as one file with ``checkpoint=FILE`` (``rdp-bench run --checkpoint FILE``). Downloading happens
only when ``RDP_BENCH_MSILLM_DOWNLOAD=1``; otherwise a missing file makes the codec unavailable with
the exact file name and folder to use. No other model is ever substituted.

The weights are licensed CC-BY-NC 4.0 (non-commercial) by Meta; a notice is printed when loading.
NeuralCompression does not publish checksums for these files, so the sha256 of the file actually
loaded is recorded as the checkpoint id of every result.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

from rdp_bench.codecs.base import Availability, RatePoint
from rdp_bench.codecs.hific import HiFiCFamily
from rdp_bench.codecs.zoo import CUSTOM_RATE_ID, entry_by_file
from rdp_bench.codecs.zoo.msillm import RELEASE_URL, TABLE

#: quality -> (release file, target bpp), derived from the table
QUALITIES: dict[int, tuple[str, float]] = {e.id + 1: (e.file, e.params["target_bpp"]) for e in TABLE}
LICENSE_NOTICE = ("MS-ILLM weights by Meta Platforms are licensed CC-BY-NC 4.0 (non-commercial use only): "
                  "https://github.com/facebookresearch/NeuralCompression/blob/main/WEIGHTS_LICENSE")


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def download_enabled() -> bool:
    return os.environ.get("RDP_BENCH_MSILLM_DOWNLOAD", "") == "1"


class MSILLM(HiFiCFamily):
    name = "msillm"
    description = "MS-ILLM official weights (NeuralCompression, CC-BY-NC 4.0) in the HiFiC architecture"

    @classmethod
    def availability(cls) -> Availability:
        if download_enabled() or any((hub_checkpoint_dir() / f).is_file() for f, _ in QUALITIES.values()):
            return Availability(True)
        example = QUALITIES[1][0]
        return Availability(False, (
            f"official weights not found (put {example} ... msillm_target_0.9bpp.ckpt from {RELEASE_URL} in "
            f"{hub_checkpoint_dir()}, set RDP_BENCH_MSILLM_DOWNLOAD=1 to download them, or pass --checkpoint FILE)"
        ))

    @classmethod
    def availability_for_options(cls, options: dict[str, Any]) -> Availability:
        if options.get("checkpoint"):
            path = Path(options["checkpoint"])
            return Availability(True) if path.is_file() else Availability(False, f"checkpoint {path} not found")
        return cls.availability()

    def rate_table(self) -> list[RatePoint]:
        if self.checkpoint is not None:
            entry = entry_by_file(TABLE, self.checkpoint.name)
            if entry is not None:  # a release file keeps its quality's id, wherever it lies
                return [RatePoint(entry.label, {"file": str(self.checkpoint), **entry.params}, id=entry.id)]
            return [RatePoint(f"custom:{self.checkpoint.stem}", {"file": str(self.checkpoint)}, id=CUSTOM_RATE_ID)]
        return [RatePoint(e.label, {"file": str(hub_checkpoint_dir() / e.file), "url": e.url, **e.params}, id=e.id)
                for e in TABLE]

    def rate_points(self) -> list[RatePoint]:
        return [p for p in self.rate_table() if not self.rate_point_problem(p)]

    def rate_point_problem(self, rate_point: RatePoint) -> str:
        path = Path(rate_point.params["file"])
        if path.is_file() or (download_enabled() and "url" in rate_point.params):
            return ""
        entry = entry_by_file(TABLE, path.name)
        if entry is None or self.checkpoint is not None:
            return f"{self.name}: checkpoint {path} not found"
        return (entry.missing(self.name, path.parent) + ", set RDP_BENCH_MSILLM_DOWNLOAD=1 to download it, "
                "or pass --checkpoint FILE")

    def weights_for(self, rate_point: RatePoint) -> Path:
        path = Path(rate_point.params["file"])
        if not path.is_file() and download_enabled() and "url" in rate_point.params:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(rate_point.params["url"], str(path), progress=False)
        return path

    def on_load(self, rate_point: RatePoint, path: Path) -> None:
        print(f"[msillm] loading {path.name}. {LICENSE_NOTICE}", file=sys.stderr)

    def provenance(self) -> dict[str, Any]:
        return {"weights_license": LICENSE_NOTICE, "release_url": RELEASE_URL,
                "files": {p.label: {"id": p.id, "file": p.params["file"], "sha256": self.checkpoint_id(p)}
                          for p in self.rate_points()}}


__all__ = ["LICENSE_NOTICE", "MSILLM", "QUALITIES", "RELEASE_URL", "hub_checkpoint_dir"]
