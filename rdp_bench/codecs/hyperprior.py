"""``hyperprior``: rdp-bench's variable-rate mean-scale hyperprior, an MSE codec.

It is stage 1 of the bundled CorrDiff (its compressor and privileged decoder D, see
``training/hyperprior.py``), shipped on its own as the distortion-optimised reference of the
learned codecs: D(ŷ) is what bounds CorrDiff's PSNR. One checkpoint serves every rate point; rate
point ``qK`` is gain level K-1, whose λ the manifest records (CompressAI's MSE λ scale).

Payload: the weights fingerprint (``Codec``), then ``pack_strings([z string, y string])`` from the shared
``HyperpriorCoder``; the level is the container's rate id. ``checkpoint=FILE`` runs another checkpoint of this architecture.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch

from rdp_bench.codecs.base import Availability, Codec, CodecUnavailable, Option, RatePoint
from rdp_bench.codecs.checkpoints import load_state_dict
from rdp_bench.codecs.hyperprior_coder import decode_records, encode_images
from rdp_bench.container import Container

from rdp_bench.bundled import HYPERPRIOR_DEFAULT as DEFAULT_CHECKPOINT, HYPERPRIOR_WEIGHTS_DIR as WEIGHTS_DIR


def _manifest(path: Path) -> dict[str, Any]:
    return json.loads(path.with_suffix(".json").read_text())


class Hyperprior(Codec):
    name = "hyperprior"
    description = ("rdp-bench variable-rate mean-scale hyperprior (CompressAI mbt2018-mean layout + gain units), "
                   "small CPU-trained model; CorrDiff's compressor + D")
    OPTIONS: ClassVar[dict[str, Option]] = {
        "checkpoint": Option(Path, None, "another gained-hyperprior checkpoint (.safetensors + .json manifest)"),
    }

    def __init__(self, device: str | None = None, checkpoint: str | Path | None = None, **options: Any) -> None:
        super().__init__(device, **options)
        self.path = Path(checkpoint) if checkpoint else WEIGHTS_DIR / f"{DEFAULT_CHECKPOINT}.safetensors"
        self._model = None
        self._coders: dict[int, Any] = {}

    @classmethod
    def availability(cls) -> Availability:
        path = WEIGHTS_DIR / f"{DEFAULT_CHECKPOINT}.safetensors"
        if path.is_file() and path.with_suffix(".json").is_file():
            return Availability(True)
        return Availability(False, f"{path.name} not found in {WEIGHTS_DIR} (run `rdp-bench train autoencoder`, "
                                   "then --export)")

    @classmethod
    def availability_for_options(cls, options: dict[str, Any]) -> Availability:
        if options.get("checkpoint"):
            path = Path(options["checkpoint"])
            if not (path.is_file() and path.with_suffix(".json").is_file()):
                return Availability(False, f"checkpoint {path} (with its .json manifest) not found")
            return Availability(True)
        return cls.availability()

    def rate_points(self) -> list[RatePoint]:
        lambdas = _manifest(self.path)["config"]["lambdas"]
        return [RatePoint(f"q{i + 1}", {"level": i, "lambda": lam}) for i, lam in enumerate(lambdas)]

    def checkpoint_id(self, rate_point: RatePoint) -> str:
        return _manifest(self.path)["sha256"]

    def weights_sha256(self, rate_point: RatePoint) -> str:
        return self.checkpoint_id(rate_point)

    def provenance(self) -> dict[str, Any]:
        m = _manifest(self.path)
        t = m.get("training", {})
        return {"weights": {"file": self.path.name, "sha256": m["sha256"], "steps": t.get("steps"),
                            "cpu_hours": t.get("cpu_hours"), "data": t.get("data")}}

    def model(self):
        from rdp_bench.codecs.gained_hyperprior import GainedHyperpriorConfig, GainedMeanScaleHyperprior

        if self._model is None:
            if not self.path.is_file():
                raise CodecUnavailable(f"{self.name}: checkpoint {self.path} not found")
            manifest = _manifest(self.path)
            model = GainedMeanScaleHyperprior(GainedHyperpriorConfig.from_dict(manifest["config"]))
            model.load_state_dict(load_state_dict(self.path, expected_sha256=manifest["sha256"]))
            self._model = model.eval()
        return self._model

    def coder(self, level: int):
        from rdp_bench.codecs.gained_hyperprior import GainedParts
        from rdp_bench.codecs.hyperprior_coder import HyperpriorCoder

        if level not in self._coders:
            self._coders[level] = HyperpriorCoder(GainedParts(self.model(), level))
        return self._coders[level]

    def encode_payloads(self, images: Sequence[torch.Tensor], rate_point: RatePoint) -> list[tuple[bytes, dict]]:
        return encode_images(self.coder(rate_point.params["level"]), images)

    def decode_payloads(self, records: Sequence[Container]) -> list[torch.Tensor]:
        points = self.rate_points()
        return decode_records(lambda rate_id: self.coder(points[rate_id].params["level"]), records)


__all__ = ["DEFAULT_CHECKPOINT", "Hyperprior", "WEIGHTS_DIR"]
