"""MS-ILLM (Muckley et al., ICML 2023): the official NeuralCompression weights in our HiFiC architecture.

The six released models ``msillm_quality_1..6`` (targets 0.035 ... 0.9 bpp; their table, with stable ids,
is ``rdp_bench/codecs/zoo/msillm.py``) are looked up in the torch
hub cache under their release file names, as ``torch.hub.load_state_dict_from_url`` stores them, or
given as one file with ``checkpoint=FILE`` (``rdp-bench run --checkpoint FILE``). A missing release
file is downloaded only under rdp-bench's one download policy (``rdp_bench.offline``: not with
``RDP_BENCH_OFFLINE=1`` or ``--no-download``) *and* when its sha256 is pinned in the table, since every
download is verified. NeuralCompression publishes no checksums for these files, so none is pinned and
they are not fetched automatically: a missing file makes the codec unavailable with the exact file name
and folder to use. No other model is ever substituted. (``RDP_BENCH_MSILLM_DOWNLOAD=1``, the former
opt-in to unverified downloads, is gone; pin a file's sum in ``zoo/msillm.py`` to enable its download.)

The weights are licensed CC-BY-NC 4.0 (non-commercial) by Meta; a notice is printed when loading.
The sha256 of the file actually loaded is recorded as the checkpoint id of every result.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

from rdp_bench.codecs.base import Availability, CodecUnavailable, RatePoint
from rdp_bench.codecs.hific import HiFiCFamily
from rdp_bench.codecs.zoo import CUSTOM_RATE_ID, WeightsEntry, entry_by_file
from rdp_bench.codecs.zoo.msillm import RELEASE_URL, TABLE
from rdp_bench.offline import OFF_REASON, downloads_allowed

#: quality -> (release file, target bpp), derived from the table
QUALITIES: dict[int, tuple[str, float]] = {e.id + 1: (e.file, e.params["target_bpp"]) for e in TABLE}
LICENSE_NOTICE = ("MS-ILLM weights by Meta Platforms are licensed CC-BY-NC 4.0 (non-commercial use only): "
                  "https://github.com/facebookresearch/NeuralCompression/blob/main/WEIGHTS_LICENSE")


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


#: the former opt-in to unverified downloads; only named in messages now
FORMER_DOWNLOAD_ENV = "RDP_BENCH_MSILLM_DOWNLOAD"


def download_problem(entry: WeightsEntry) -> str:
    """'' when ``entry``'s file may be downloaded now, else why not (a sum to verify it, the policy)."""
    if not downloads_allowed():
        return OFF_REASON
    if not entry.sha256:
        note = (f"; {FORMER_DOWNLOAD_ENV} no longer downloads unverified files"
                if os.environ.get(FORMER_DOWNLOAD_ENV) else "")
        return f"NeuralCompression publishes no sha256 for it, so rdp-bench does not download it{note}"
    return ""


class MSILLM(HiFiCFamily):
    name = "msillm"
    description = "MS-ILLM official weights (NeuralCompression, CC-BY-NC 4.0) in the HiFiC architecture"

    @classmethod
    def availability(cls) -> Availability:
        if any((hub_checkpoint_dir() / e.file).is_file() or not download_problem(e) for e in TABLE):
            return Availability(True)
        return Availability(False, (
            f"official weights not found (put {TABLE[0].file} ... {TABLE[-1].file} from {RELEASE_URL} in "
            f"{hub_checkpoint_dir()}, or pass --checkpoint FILE; {download_problem(TABLE[0])})"
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
        return [RatePoint(e.label, {"file": str(hub_checkpoint_dir() / e.file), "url": e.url, **e.params,
                                    **({"sha256": e.sha256} if e.sha256 else {})}, id=e.id)
                for e in TABLE]

    def rate_points(self) -> list[RatePoint]:
        return [p for p in self.rate_table() if not self.rate_point_problem(p)]

    def rate_point_problem(self, rate_point: RatePoint) -> str:
        path = Path(rate_point.params["file"])
        entry = entry_by_file(TABLE, path.name)
        if path.is_file() or (entry is not None and self.checkpoint is None and not download_problem(entry)):
            return ""
        if entry is None or self.checkpoint is not None:
            return f"{self.name}: checkpoint {path} not found"
        return f"{entry.missing(self.name, path.parent)} ({download_problem(entry)}), or pass --checkpoint FILE"

    def weights_for(self, rate_point: RatePoint) -> Path:
        from rdp_bench.datasets.download import DownloadError, download

        path = Path(rate_point.params["file"])
        entry = entry_by_file(TABLE, path.name)
        if not path.is_file() and self.checkpoint is None and entry is not None and not download_problem(entry):
            try:
                download(str(entry.url), path, expected_sha256=entry.sha256)
            except DownloadError as exc:
                raise CodecUnavailable(f"{self.name}: {exc}; put {entry.file} in {path.parent}") from exc
        return path

    def on_load(self, rate_point: RatePoint, path: Path) -> None:
        print(f"[msillm] loading {path.name}. {LICENSE_NOTICE}", file=sys.stderr)

    def provenance(self) -> dict[str, Any]:
        return {"weights_license": LICENSE_NOTICE, "release_url": RELEASE_URL,
                "files": {p.label: {"id": p.id, "file": p.params["file"], "sha256": self.checkpoint_id(p)}
                          for p in self.rate_points()}}


__all__ = ["LICENSE_NOTICE", "MSILLM", "QUALITIES", "RELEASE_URL", "download_problem", "hub_checkpoint_dir"]
