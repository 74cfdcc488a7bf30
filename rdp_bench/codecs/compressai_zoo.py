"""CompressAI's pretrained zoo as baselines, coded by the shared ``HyperpriorCoder``.

A codec here is one (architecture, distortion metric) of CompressAI's zoo; its rate points are the
zoo's qualities (``rdp_bench/codecs/zoo/compressai.py``: ``qK`` has stable id K - 1). An adapter (one
module per architecture, e.g. ``codecs/mbt2018_mean.py``) only names the architecture, the
``HyperpriorParts`` variant that wires it, and how to build the CompressAI module for one quality.

Weights are CompressAI's own files, fetched from its URLs into torch's hub cache
(``torch.hub.get_dir()/checkpoints``, where ``compressai.zoo`` keeps them too, so an existing cache is
reused) under rdp-bench's one download policy (``rdp_bench.offline``: not with ``RDP_BENCH_OFFLINE=1``
or ``--no-download``). Each file is checked against the sha256 prefix in its name after a download and
before every load (what ``torch.hub`` checks; no full sum is published, see the table's docstring) and
read with ``torch.load(weights_only=True)``. A missing file while downloads are off makes its rate point
unavailable with one line naming the file and the folder; no other model is ever substituted. The
checkpoint id of a rate point is the full sha256 of the file loaded.

Everything runs on CPU in float32, one image at a time (``HyperpriorCoder``), so a stream decodes to
the same pixels on any machine; for the autoregressive models (mbt2018, cheng2020) that serial
decoding is also the slow part (CompressAI decodes them the same way).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
from torch import nn

from rdp_bench.codecs.base import Availability, Codec, CodecUnavailable, RatePoint
from rdp_bench.codecs.hyperprior_coder import HyperpriorCoder, HyperpriorParts, decode_records, encode_images
from rdp_bench.codecs.zoo import WeightsEntry
from rdp_bench.codecs.zoo.compressai import ROOT_URL, TABLES
from rdp_bench.container import Container
from rdp_bench.offline import OFF_REASON, downloads_allowed, offline_miss


def hub_checkpoints_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def upstream_key(key: str) -> str:
    """The module names of older CompressAI checkpoints, as CompressAI 1.2 names them."""
    key = key.removeprefix("module.")  # saved from DataParallel
    key = key.replace(".downsample.", ".skip.")  # ResidualBlockWithStride
    for old, new in (("_biases.", "_bias"), ("_matrices.", "_matrix"), ("_factors.", "_factor")):
        if key.startswith(f"entropy_bottleneck.{old}"):  # ParameterList -> one parameter each
            return f"entropy_bottleneck.{new}{key.rsplit('.', 1)[1]}"
    return key


class CompressAIZoo(Codec):
    """Base of the zoo codecs: a subclass sets ``name``, ``architecture``, ``metric``, ``parts`` and ``build``."""

    architecture: ClassVar[str]
    metric: ClassVar[str] = "mse"
    #: how the model plugs into ``HyperpriorCoder``
    parts: ClassVar[type[HyperpriorParts]] = HyperpriorParts

    def build(self, entry: WeightsEntry) -> nn.Module:
        """The CompressAI module of one quality, untrained (its weights are loaded into it)."""
        raise NotImplementedError

    def __init__(self, device: str | None = None, **options: Any) -> None:
        super().__init__(device, **options)
        self._coders: dict[int, HyperpriorCoder] = {}
        self._sha: dict[int, str] = {}

    # --- the table and its files --------------------------------------------------------------------
    @classmethod
    def table(cls) -> tuple[WeightsEntry, ...]:
        return TABLES[(cls.architecture, cls.metric)]

    @classmethod
    def availability(cls) -> Availability:
        table = cls.table()
        if downloads_allowed() or any((hub_checkpoints_dir() / e.file).is_file() for e in table):
            return Availability(True)
        return Availability(False, f"none of its files ({table[0].file} ... {table[-1].file}) is in "
                                   f"{hub_checkpoints_dir()} and {OFF_REASON}; put them there (from {ROOT_URL}/)")

    def rate_table(self) -> list[RatePoint]:
        return [RatePoint(e.label, {"quality": e.params["quality"], "file": e.file}, id=e.id) for e in self.table()]

    def rate_points(self) -> list[RatePoint]:
        return [p for p in self.rate_table() if not self.rate_point_problem(p)]

    def rate_point_problem(self, rate_point: RatePoint) -> str:
        entry = self.table()[rate_point.id]
        if (hub_checkpoints_dir() / entry.file).is_file() or downloads_allowed():
            return ""
        return offline_miss(f"{self.name} {entry.label} (id {entry.id})", entry.file, hub_checkpoints_dir(), entry.url)

    def weights(self, entry: WeightsEntry) -> Path:
        """The verified file of ``entry``, downloaded into the hub cache when missing and allowed."""
        from rdp_bench.datasets.download import DownloadError, download, sha256_file

        folder = hub_checkpoints_dir()
        path = folder / entry.file
        if not path.is_file():
            if not downloads_allowed():
                raise CodecUnavailable(offline_miss(self.name, entry.file, folder, entry.url))
            try:  # verified by its sha256 prefix before it is moved into place
                self._sha[entry.id] = download(str(entry.url), path, expected_sha256=entry.sha256)
            except DownloadError as exc:
                raise CodecUnavailable(f"{self.name}: {exc}; put {entry.file} in {folder}") from exc
        if entry.id not in self._sha:
            self._sha[entry.id] = sha256_file(path)
        if not self._sha[entry.id].startswith(str(entry.sha256)):
            raise CodecUnavailable(f"{self.name}: {path} fails its sha256 check (sha256 {self._sha[entry.id][:16]}..., "
                                   f"expected {entry.sha256}... as in its name); delete it to download it again, "
                                   f"or put the file from {entry.url} there")
        return path

    def checkpoint_id(self, rate_point: RatePoint) -> str:
        entry = self.table()[rate_point.id]
        self.weights(entry)
        return self._sha[entry.id]

    def weights_sha256(self, rate_point: RatePoint) -> str:
        return self.checkpoint_id(rate_point)

    def provenance(self) -> dict[str, Any]:
        return {"weights": "CompressAI zoo", "license": self.table()[0].license, "metric": self.metric,
                "files": {e.label: {"id": e.id, "file": e.file, "url": e.url, "sha256": self._sha.get(e.id)}
                          for e in self.table()}}

    # --- model and coding ---------------------------------------------------------------------------
    def coder(self, rate_id: int) -> HyperpriorCoder:
        if rate_id not in self._coders:
            entry = self.table()[rate_id]
            path = self.weights(entry)
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                state = state.get("state_dict", state) if isinstance(state, dict) else state
                model = self.build(entry)
                model.load_state_dict({upstream_key(k): v for k, v in state.items()})
            except Exception as exc:  # not a tensors-only file, or not this architecture
                raise CodecUnavailable(f"{self.name}: {path} is not a {self.architecture} quality "
                                       f"{entry.params['quality']} state dict ({type(exc).__name__}: "
                                       f"{str(exc).splitlines()[0][:200]})") from exc
            self._coders[rate_id] = HyperpriorCoder(self.parts(model.eval().requires_grad_(False)))
        return self._coders[rate_id]

    def encode_payloads(self, images: Sequence[torch.Tensor], rate_point: RatePoint) -> list[tuple[bytes, dict]]:
        return encode_images(self.coder(rate_point.id), images)

    def decode_payloads(self, records: Sequence[Container]) -> list[torch.Tensor]:
        return decode_records(self.coder, records)


__all__ = ["CompressAIZoo", "hub_checkpoints_dir", "upstream_key"]
