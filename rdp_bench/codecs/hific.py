"""HiFiC (Mentzer et al., NeurIPS 2020) with the bundled tiny checkpoints trained by rdp-bench.

Every rate point is one checkpoint in ``rdp_bench/weights/hific/`` (fp16 safetensors + JSON manifest,
see ``rdp-bench train hific``), declared with its stable id and sha256 in ``rdp_bench/codecs/zoo/hific.py``;
``weights_dir=DIR`` looks for those files in DIR instead. ``checkpoint=FILE`` (``rdp-bench run --checkpoint FILE``) runs one
user-supplied HiFiC-architecture checkpoint instead (any width; NeuralCompression's full-size
``HiFiCAutoencoder`` files load unchanged).

Payload: the weights fingerprint (``Codec``), then ``pack_strings([hyper-latent string, latent string])``; images are padded to a multiple of
64 and cropped back. Each image reports ``bpp_estimated`` (from the model's likelihoods) next to the
real bpp of its payload, so the entropy-coding overhead is visible.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch

from rdp_bench.codecs.base import Availability, Codec, CodecUnavailable, Option, RatePoint
from rdp_bench.codecs.batching import batched, image_shape
from rdp_bench.codecs.checkpoints import file_sha256, load_state_dict
from rdp_bench.codecs.hific_arch import HiFiCAutoencoder, HiFiCConfig, config_from_state_dict
from rdp_bench.codecs.zoo import CUSTOM_RATE_ID, WeightsEntry
from rdp_bench.codecs.zoo.hific import TABLE
from rdp_bench.container import Container

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights" / "hific"


def bundled_checkpoints(weights_dir: Path = WEIGHTS_DIR,
                        table: tuple[WeightsEntry, ...] = TABLE) -> list[tuple[Path, dict]]:
    """(weights file, manifest) pairs of the table's entries present in ``weights_dir``, in table order."""
    found = []
    for entry in table:
        weights = Path(weights_dir) / entry.file
        manifest_file = weights.with_suffix(".json")
        if weights.is_file():
            manifest = json.loads(manifest_file.read_text()) if manifest_file.is_file() else {}
            found.append((weights, manifest))
    return found


def model_config(path: Path, state: dict[str, torch.Tensor]) -> HiFiCConfig:
    """The architecture from the checkpoint's manifest when it has one (it records the norm kind),
    else inferred from the state dict with HiFiC's ChannelNorm (upstream files)."""
    manifest = Path(path).with_suffix(".json")
    if manifest.is_file():
        config = json.loads(manifest.read_text()).get("architecture", {}).get("config")
        if config:
            return HiFiCConfig.from_dict(config)
    return config_from_state_dict(state)


class HiFiCFamily(Codec):
    """Shared by HiFiC and MS-ILLM: one HiFiC-architecture model per rate point, loaded lazily."""

    wants_gpu: ClassVar[bool] = False
    OPTIONS: ClassVar[dict[str, Option]] = {
        "checkpoint": Option(Path, None, "one HiFiC-architecture weights file to run instead of the table (--checkpoint)"),
    }

    def __init__(self, device: str | None = None, checkpoint: str | Path | None = None, **options: Any) -> None:
        super().__init__(device, **options)
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self._models: dict[str, HiFiCAutoencoder] = {}
        self._sha: dict[str, str] = {}

    # subclasses: where each rate point's weights come from
    def weights_for(self, rate_point: RatePoint) -> Path:
        return Path(rate_point.params["file"])

    def expected_sha256(self, rate_point: RatePoint) -> str | None:
        return rate_point.params.get("sha256")

    def on_load(self, rate_point: RatePoint, path: Path) -> None:
        """Hook: e.g. print a licence notice."""

    def model(self, rate_point: RatePoint) -> HiFiCAutoencoder:
        if rate_point.label not in self._models:
            path = self.weights_for(rate_point)
            if not path.is_file():
                raise CodecUnavailable(f"{self.name}: checkpoint {path} not found")
            self.on_load(rate_point, path)
            try:
                state = load_state_dict(path, expected_sha256=self.expected_sha256(rate_point))
            except ValueError as exc:  # not the file the table pins: never run other weights under its id
                raise CodecUnavailable(f"{self.name}: {exc} (the sha256 pinned in rdp_bench/codecs/zoo/"
                                       f"{self.name}.py)") from exc
            model = HiFiCAutoencoder(model_config(path, state))
            model.load_state_dict(state)
            model.eval()
            # the synthesis/analysis transforms may run on the GPU; the hyper path always runs on CPU
            model.encoder.to(self.device)
            model.decoder.to(self.device)
            self._models[rate_point.label] = model
        return self._models[rate_point.label]

    def checkpoint_id(self, rate_point: RatePoint) -> str:
        if rate_point.label not in self._sha:
            known = self.expected_sha256(rate_point)
            path = self.weights_for(rate_point)
            self._sha[rate_point.label] = known or (file_sha256(path) if path.is_file() else "missing")
        return self._sha[rate_point.label]

    def weights_sha256(self, rate_point: RatePoint) -> str:
        return self.checkpoint_id(rate_point)

    def encode_payloads(self, images: Sequence[torch.Tensor], rate_point: RatePoint) -> list[tuple[bytes, dict]]:
        model = self.model(rate_point)

        def encode(shape: tuple[int, ...], idx: list[int]) -> list[tuple[bytes, dict]]:
            payloads, info = model.compress_image(torch.stack([images[i] for i in idx]).to(self.device))
            pixels = shape[1] * shape[2]
            return [(p, {"bpp_estimated": float(bits) / pixels}) for p, bits in zip(payloads, info["estimated_bits"])]

        return batched(images, image_shape, encode)

    def decode_payloads(self, records: Sequence[Container]) -> list[torch.Tensor]:
        def decode(key: tuple[int, int, int], idx: list[int]) -> list[torch.Tensor]:
            model = self.model(self.rate_point(key[0]))
            return model.decompress_image([records[i].payload for i in idx],
                                          [(records[i].height, records[i].width) for i in idx])

        # one batch per rate point and latent grid (the model crops each image to its own size)
        return batched(records, lambda rec: (rec.rate_id, -(-rec.height // 64), -(-rec.width // 64)), decode)


class HiFiC(HiFiCFamily):
    name = "hific"
    #: the rate points (stable ids, files, sha256); a class attribute so a test can run another table
    weights_table: ClassVar[tuple[WeightsEntry, ...]] = TABLE
    OPTIONS: ClassVar[dict[str, Option]] = {
        "weights_dir": Option(Path, None, "folder holding the table's checkpoint files (default: the bundled ones)"),
    }
    description = ("HiFiC architecture (NeuralCompression-compatible), bundled tiny CPU-trained checkpoints; "
                   "checkpoint=FILE for your own")

    def __init__(self, device: str | None = None, checkpoint: str | Path | None = None,
                 weights_dir: str | Path | None = None, **options: Any) -> None:
        super().__init__(device, checkpoint=checkpoint, **options)
        self.weights_dir = Path(weights_dir) if weights_dir else WEIGHTS_DIR

    @classmethod
    def availability(cls) -> Availability:
        if bundled_checkpoints(WEIGHTS_DIR, cls.weights_table):
            return Availability(True)
        return Availability(False, f"no HiFiC checkpoints in {WEIGHTS_DIR}: put "
                                   f"{', '.join(e.file for e in cls.weights_table)} there (or run `rdp-bench train hific`)")

    @classmethod
    def availability_for_options(cls, options: dict[str, Any]) -> Availability:
        if options.get("checkpoint"):
            path = Path(options["checkpoint"])
            return Availability(True) if path.is_file() else Availability(False, f"checkpoint {path} not found")
        if options.get("weights_dir") and not bundled_checkpoints(Path(options["weights_dir"]), cls.weights_table):
            return Availability(False, f"no HiFiC checkpoints in {options['weights_dir']}: put "
                                       f"{', '.join(e.file for e in cls.weights_table)} there")
        return cls.availability()

    def rate_table(self) -> list[RatePoint]:
        if self.checkpoint is not None:
            return [RatePoint(f"custom:{self.checkpoint.stem}", {"file": str(self.checkpoint)}, id=CUSTOM_RATE_ID)]
        return [e.rate_point(self.weights_dir / e.file) for e in self.weights_table]

    def rate_points(self) -> list[RatePoint]:
        return [p for p in self.rate_table() if not self.rate_point_problem(p)]

    def rate_point_problem(self, rate_point: RatePoint) -> str:
        if Path(rate_point.params["file"]).is_file():
            return ""
        entry = next((e for e in self.weights_table if e.label == rate_point.label), None)
        if entry is None:
            return f"{self.name}: checkpoint {rate_point.params['file']} not found"
        return entry.missing(self.name, self.weights_dir) + " (bundled with rdp-bench, or `rdp-bench train hific`)"

    def provenance(self) -> dict[str, Any]:
        if self.checkpoint is not None:
            return {"weights": str(self.checkpoint)}
        weights = {}
        for entry in self.weights_table:
            path = self.weights_dir / entry.file
            m = json.loads(path.with_suffix(".json").read_text()) if path.with_suffix(".json").is_file() else {}
            weights[entry.label] = {"id": entry.id, "file": entry.file, "sha256": entry.sha256,
                                    "present": path.is_file(), "note": m.get("note"),
                                    "perceptual_term": m.get("loss", {}).get("perceptual_term")}
        return {"weights": weights}


__all__ = ["HiFiC", "HiFiCFamily", "WEIGHTS_DIR", "bundled_checkpoints"]
