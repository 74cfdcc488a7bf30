"""CorrDiff: a conditional diffusion decoder corrected at every DDIM step by a privileged end-to-end
decoder, with the per-step mixing weights γ_t in the bitstream.

Paper: Ma, Yang, Liu, "Correcting Diffusion-Based Perceptual Image Compression with Privileged
End-to-End Decoder", ICML 2024 (arXiv 2404.04916). There is no official code; this follows the paper's
description and reuses CDC's compressor, conditional UNet and DDIM sampler
(``rdp_bench.codecs.diffusion``) plus the shared range coder (``rdp_bench.codecs.entropy``).

Mechanism. The compressor codes ŷ (hyperprior, real range coding). At decode, a conditional UNet
predicts x̂0 from x_t and the context synthesised from ŷ; a small convolutional decoder gives
x0e = D(ŷ). At each of the N DDIM steps the encoder, which sees x, picks
γ_t* = argmin ‖x − (x̂0 + γ(x0e − x̂0))‖² (closed form), quantizes it, and continues with the
*quantized* γ_t (x̃0 = x̂0 + γ_t(x0e − x̂0) replaces x̂0 in the DDIM update). The N γ values are written
after the latent strings; the decoder replays the identical trajectory and outputs the last x̃0.

Codec variants (same checkpoints, same ŷ bitstream; only the γ block differs):

* ``corrdiff``                -- corrected sampling (the paper's method).
* ``corrdiff-diffusion-only`` -- γ = 0 at every step: a plain CDC-style DDIM decode; no γ bits.
* ``corrdiff-e2e``            -- just D(ŷ), no diffusion; no γ bits.

Options (constructor keywords, also ``codec_options`` of a run):

* ``steps`` (η = 0): DDIM steps N, written in the payload, so the decoder needs no option. Default 8
  (the paper's N) on GPU and 2 on CPU, where each step is a full-size UNet pass at *both* ends (the
  encoder runs the trajectory to choose γ); ``steps=8`` gives the paper's setting on CPU too.
* ``gamma_granularity``: ``scalar`` (paper: one γ per step), ``channel`` (3 per step) or ``tile``
  (one per ``gamma_tile`` x ``gamma_tile`` block, default 64 px).
* ``gamma_precision``: ``float16`` (paper), ``bfloat16`` or ``uint8`` (uniform, step 1/128 on
  [-0.5, 1.49]; see ``corrdiff_parts.Uniform8Gamma``).
* ``gamma_solver``: ``mse`` (closed form, default) or ``mse+msssim`` (a few Adam steps on
  MSE + ``perceptual_weight`` · (1 − MS-SSIM), started at the closed form). Encoder-only choice.
* ``weights_dir``: folder of ``corrdiff-*.safetensors`` + ``.json`` manifests (default: bundled).

Choices made where the paper is silent (also in the README):

* Initial noise: ``0.8 · N(0, I)`` (CDC's default noise scale) from a CPU generator seeded with the
  CRC32 of the image's y string (as our CDC codec does), one generator per image, so the noise is a
  function of the bitstream alone and never depends on the batch.
* DDIM timesteps are CDC's (``N`` indices evenly spaced over the 8193 training steps, from the top);
  the final step goes to ᾱ = 1, so the output is exactly the last x̃0.
* x̂0 and x0e are clamped to [-1, 1] before the mix and x̃0 after it; the mix is ``torch.lerp`` so that
  γ = 0 gives x̂0 and γ = 1 gives D(ŷ) bit-exactly.
* γ is solved on the real image area only (not the padding), is 0 where ‖x0e − x̂0‖² vanishes, and
  is clipped to ±4 before quantization.
* The encoder uses the ŷ it decodes from its own strings, so both ends start from identical tensors.
* γ bits: N · count · (16 or 8) bits plus a 6-byte CorrDiff header, all inside the container and
  therefore in bpp; the ``bpp_gamma`` result column reports the γ share.

Bit-exactness: on CPU the decoder's image equals the encoder's final x̃0 bit for bit when both process
the same batch composition (tested for batch 1 and 8). Across devices (CPU vs GPU) or batch sizes the
UNet's floating point may differ in the last bits; γ then still applies, the output just is not
bit-identical to the encoder's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
from torch import nn

from rdp_bench.codecs.base import Availability, Codec, RatePoint
from rdp_bench.codecs.corrdiff_parts import (
    GRANULARITY_IDS, QUANTIZER_IDS, E2EDecoder, GammaLayout, corrected_sample, get_quantizer, mse_plus_msssim,
    solve_gamma_gradient, solve_gamma_mse,
)
from rdp_bench.container import BitstreamError, Container

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights" / "corrdiff"
NOISE_SCALE = 0.8
#: images per UNet batch are limited so that batch x H x W stays under this (GPU memory)
MAX_BATCH_PIXELS = 8 * 512 * 768
PAYLOAD_VERSION = 1
DEFAULT_STEPS = 8  # the paper's N, used on GPU
#: default N on CPU, where every step is a full UNet pass at image size on both ends (keeps the
#: README's main job at a few minutes; pass ``steps=8`` for the paper's setting)
CPU_DEFAULT_STEPS = 2
#: most DDIM steps a stream may ask for (encoder and decoder): each is a full UNet pass at image size,
#: so the step byte is bounded well below 255 (64 = 8x the paper's N)
MAX_STEPS = 64
#: version, steps, granularity id, precision id, tile size
_HEADER = struct.Struct(">BBBBH")
_MODES = ("corrected", "diffusion-only", "e2e")


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------
class CorrDiffModel(nn.Module):
    """CDC's compressor + conditional UNet (``cdc.*``) and the privileged e2e decoder (``e2e.*``)."""

    def __init__(self, cdc_config: Any, e2e_hidden: Sequence[int] = (64, 48, 32, 24), e2e_res_blocks: int = 1) -> None:
        super().__init__()
        from rdp_bench.codecs.diffusion.model import CDCModel

        self.cdc = CDCModel(cdc_config)
        self.e2e = E2EDecoder(self.cdc.context_fn.latent_channels, e2e_hidden, e2e_res_blocks)
        if self.e2e.upsample_factor != cdc_config.compressor.latent_factor:
            raise ValueError(f"e2e decoder upsamples x{self.e2e.upsample_factor}, the latent is at "
                             f"1/{cdc_config.compressor.latent_factor}")

    def config_dict(self) -> dict[str, Any]:
        return {"cdc": self.cdc.config.to_dict(), "e2e": dict(self.e2e.config)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "CorrDiffModel":
        from rdp_bench.codecs.diffusion.model import CDCConfig

        e2e = config.get("e2e", {})
        return cls(CDCConfig.from_dict(config["cdc"]), e2e.get("hidden", (64, 48, 32, 24)), e2e.get("res_blocks", 1))

    def shipped_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights without the schedule buffers (recomputed from the config on load)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("cdc.train_")}

    def load_shipped(self, state: dict[str, torch.Tensor]) -> None:
        own = self.state_dict()
        expected = {k for k in own if not k.startswith("cdc.train_")}
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        bad = [k for k in expected & set(state) if tuple(state[k].shape) != tuple(own[k].shape)]
        if missing or unexpected or bad:
            raise ValueError(f"CorrDiff checkpoint does not fit its config: missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}, shape mismatches {bad[:3]}")
        self.load_state_dict({k: state[k].to(own[k].dtype) for k in expected}, strict=False)


# ----------------------------------------------------------------------------------------------
# Payload
# ----------------------------------------------------------------------------------------------
def _pack_payload(steps: int, layout: GammaLayout, precision: str, gamma_bytes: bytes,
                  z_string: bytes, y_string: bytes) -> bytes:
    from rdp_bench.codecs.entropy import pack_strings

    header = _HEADER.pack(PAYLOAD_VERSION, steps, GRANULARITY_IDS[layout.granularity], QUANTIZER_IDS[precision],
                          layout.tile)
    return pack_strings([header, gamma_bytes, z_string, y_string])


def _unpack_payload(payload: bytes) -> tuple[int, GammaLayout, str, bytes, bytes, bytes]:
    from rdp_bench.codecs.entropy import unpack_strings

    header, gamma_bytes, z_string, y_string = unpack_strings(payload, expected_count=4)
    if len(header) != _HEADER.size:
        raise BitstreamError(f"CorrDiff header has {len(header)} bytes, expected {_HEADER.size}")
    version, steps, gran_id, prec_id, tile = _HEADER.unpack(header)
    if version != PAYLOAD_VERSION:
        raise BitstreamError(f"CorrDiff payload version {version} (this build reads {PAYLOAD_VERSION})")
    if steps > MAX_STEPS:
        raise BitstreamError(f"CorrDiff stream asks for {steps} steps (at most {MAX_STEPS})")
    grans = {v: k for k, v in GRANULARITY_IDS.items()}
    precs = {v: k for k, v in QUANTIZER_IDS.items()}
    if gran_id not in grans or prec_id not in precs:
        raise BitstreamError(f"CorrDiff header has unknown gamma granularity {gran_id} or precision {prec_id}")
    try:
        layout = GammaLayout(grans[gran_id], tile=tile if grans[gran_id] == "tile" else 64)
    except ValueError as exc:
        raise BitstreamError(str(exc)) from exc
    return steps, layout, precs[prec_id], gamma_bytes, z_string, y_string


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------
def _manifests(weights_dir: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(Path(weights_dir).glob("corrdiff-*.json")):
        info = json.loads(path.read_text())
        if (path.parent / info.get("file", "")).is_file():
            info["_path"] = str(path.parent / info["file"])
            out.append(info)
    # low rate first: a larger rate weight λ gives a lower rate
    return sorted(out, key=lambda m: (-float(m["rate_weight"]), m["label"]))


@lru_cache(maxsize=16)
def _load_model(path: str, sha256: str, config_json: str) -> CorrDiffModel:
    from rdp_bench.codecs.checkpoints import load_state_dict

    model = CorrDiffModel.from_config(json.loads(config_json))
    model.load_shipped(load_state_dict(path, expected_sha256=sha256))
    return model.eval()


# ----------------------------------------------------------------------------------------------
# The codec
# ----------------------------------------------------------------------------------------------
class CorrDiff(Codec):
    name = "corrdiff"
    description = "CorrDiff (ICML 2024): diffusion decoder corrected per DDIM step by a privileged e2e decoder; γ in the bitstream"
    wants_gpu = True
    supports_amp = True
    mode: ClassVar[str] = "corrected"

    def __init__(self, device: str | None = None, *, steps: int | None = None, gamma_granularity: str = "scalar",
                 gamma_tile: int = 64, gamma_precision: str = "float16", gamma_solver: str = "mse",
                 perceptual_weight: float = 0.1, weights_dir: str | Path | None = None, amp: str | None = None,
                 max_batch_pixels: int = MAX_BATCH_PIXELS, **options: Any) -> None:
        super().__init__(device, **options)
        if steps is None:
            steps = DEFAULT_STEPS if self.device.type == "cuda" else CPU_DEFAULT_STEPS
        if not 1 <= int(steps) <= MAX_STEPS:
            raise ValueError(f"steps must be in 1..{MAX_STEPS}, got {steps}")
        if gamma_solver not in ("mse", "mse+msssim"):
            raise ValueError(f"gamma_solver must be 'mse' or 'mse+msssim', got {gamma_solver!r}")
        self.steps = int(steps)
        self.layout = GammaLayout(gamma_granularity, int(gamma_tile))
        self.precision = get_quantizer(gamma_precision).name
        self.gamma_solver = gamma_solver
        self.perceptual_weight = float(perceptual_weight)
        self.weights_dir = Path(weights_dir) if weights_dir else WEIGHTS_DIR
        self.amp = amp if self.device.type == "cuda" else None  # UNet autocast on GPU only
        if self.amp not in (None, "bf16", "fp16"):
            raise ValueError(f"amp must be bf16 or fp16, got {amp!r}")
        self.max_batch_pixels = int(max_batch_pixels)
        self._coders: dict[str, Any] = {}

    # --- registry interface ---------------------------------------------------------------
    @classmethod
    def availability(cls) -> Availability:
        try:
            import rdp_bench.codecs.diffusion.model  # noqa: F401
        except ImportError as exc:
            return Availability(False, f"diffusion modules missing: {exc}")
        if not _manifests(WEIGHTS_DIR):
            return Availability(False, f"no CorrDiff checkpoints (corrdiff-*.safetensors + .json) in {WEIGHTS_DIR}")
        return Availability(True)

    def rate_points(self) -> list[RatePoint]:
        return [RatePoint(m["label"], {"rate_weight": m["rate_weight"], "file": m["file"]})
                for m in _manifests(self.weights_dir)]

    def _manifest(self, rate_point: RatePoint) -> dict[str, Any]:
        for m in _manifests(self.weights_dir):
            if m["label"] == rate_point.label:
                return m
        raise KeyError(f"{self.name}: no checkpoint for rate point {rate_point.label!r} in {self.weights_dir}")

    def settings(self) -> dict[str, Any]:
        """The options that change this variant's bitstream or output."""
        if self.mode == "e2e":
            return {"mode": self.mode}
        out: dict[str, Any] = {"mode": self.mode, "steps": self.steps, "eta": 0.0, "noise_scale": NOISE_SCALE,
                               "amp": self.amp}
        if self.mode == "corrected":
            out.update(gamma_granularity=self.layout.granularity, gamma_precision=self.precision,
                       gamma_solver=self.gamma_solver)
            if self.layout.granularity == "tile":
                out["gamma_tile"] = self.layout.tile
            if self.gamma_solver != "mse":
                out["perceptual_weight"] = self.perceptual_weight
        return out

    def checkpoint_id(self, rate_point: RatePoint) -> str:
        """sha256 of the weights combined with the settings, which change the output."""
        settings = json.dumps(self.settings(), sort_keys=True)
        return hashlib.sha256(f"{self._manifest(rate_point)['sha256']}|{settings}".encode()).hexdigest()

    def provenance(self) -> dict[str, Any]:
        return {
            **self.settings(), "noise_seed": "crc32 of the y string", "x0_clamp": [-1, 1],
            "max_batch_pixels": self.max_batch_pixels,
            "checkpoints": {m["label"]: {"file": m["file"], "sha256": m["sha256"], "note": m.get("note", "")}
                            for m in _manifests(self.weights_dir)},
        }

    # --- model plumbing -------------------------------------------------------------------
    def _model(self, rate_point: RatePoint) -> tuple[CorrDiffModel, Any]:
        m = self._manifest(rate_point)
        model = _load_model(m["_path"], m["sha256"], json.dumps(m["config"], sort_keys=True)).to(self.device)
        key = m["sha256"]
        if key not in self._coders:
            from rdp_bench.codecs.diffusion.compressor import LatentCoder

            self._coders[key] = LatentCoder(model.cdc.context_fn.to("cpu"))
            model.to(self.device)
        return model, self._coders[key]

    def _pad_multiple(self, model: CorrDiffModel) -> int:
        return model.cdc.config.pad_multiple

    def _sampler(self, model: CorrDiffModel, steps: int):
        from rdp_bench.codecs.diffusion.sampler import DDIMSampler

        return DDIMSampler(model.cdc.train_alphas_cumprod, steps, eta=0.0)

    def _chunks(self, n: int, h: int, w: int) -> list[slice]:
        per = max(1, self.max_batch_pixels // max(1, h * w))
        return [slice(i, min(n, i + per)) for i in range(0, n, per)]

    def _autocast(self):
        if self.amp:
            return torch.autocast("cuda", dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[self.amp])
        return contextlib.nullcontext()

    def _run(self, model: CorrDiffModel, y_hat: torch.Tensor, seeds: Sequence[int], valid: tuple[int, int],
             steps: int, layout: GammaLayout, precision: str, target: torch.Tensor | None = None,
             gammas: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Batched in chunks of at most ``max_batch_pixels``; -> (images in [-1,1] cropped, γ B x N x count)."""
        images, used = [], []
        hp, wp = (y_hat.shape[-2] * model.e2e.upsample_factor, y_hat.shape[-1] * model.e2e.upsample_factor)
        for sl in self._chunks(y_hat.shape[0], hp, wp):
            img, g = self._run_chunk(model, y_hat[sl], list(seeds)[sl], valid, steps, layout, precision,
                                     None if target is None else target[sl], None if gammas is None else gammas[sl])
            images.append(img)
            used.append(g)
        return torch.cat(images), (None if used[0] is None else torch.cat(used))

    def _run_chunk(self, model: CorrDiffModel, y_hat: torch.Tensor, seeds: list[int], valid: tuple[int, int],
                   steps: int, layout: GammaLayout, precision: str, target: torch.Tensor | None,
                   gammas: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        y_hat = y_hat.to(self.device)
        b = y_hat.shape[0]
        x0_e = model.e2e(y_hat).float().clamp(-1.0, 1.0)
        if self.mode == "e2e":
            return x0_e[..., : valid[0], : valid[1]], None
        context = model.cdc.context_fn.synthesis(y_hat)
        sampler = self._sampler(model, steps)
        noise = sampler.initial_noise(x0_e.shape, seeds, NOISE_SCALE, device=self.device)

        def denoiser(x_t: torch.Tensor, t: int) -> torch.Tensor:
            with self._autocast():
                x0 = model.cdc.denoise(x_t, sampler.time_input(t, b, self.device), context)
            return x0.float()

        if self.mode == "diffusion-only":
            gammas = torch.zeros(b, steps, 1)
            layout = GammaLayout("scalar")
        solver = solve_gamma_mse
        if self.gamma_solver == "mse+msssim":
            loss = mse_plus_msssim(self.perceptual_weight)
            solver = lambda x, a, e, lay, h, w: solve_gamma_gradient(x, a, e, lay, loss, h=h, w=w)  # noqa: E731
        result = corrected_sample(denoiser, x0_e, sampler, noise, target=target, gammas=gammas, layout=layout,
                                  quantizer=get_quantizer(precision), solver=solver, valid=valid)
        return result.image[..., : valid[0], : valid[1]], result.gammas

    # --- encode / decode ------------------------------------------------------------------
    @torch.no_grad()
    def encode_payloads(self, images: Sequence[torch.Tensor], rate_point: RatePoint) -> list[tuple[bytes, dict]]:
        """Also keeps the encoder's own final x̃0 in ``encoder_reconstructions`` (corrected mode),
        which the decoder must reproduce bit for bit."""
        out: list[tuple[bytes, dict] | None] = [None] * len(images)
        recon: list[torch.Tensor | None] = [None] * len(images)
        for idx in _groups_by_shape(images):
            batch = torch.stack([images[i] for i in idx])
            items, images_out = self._encode_group(batch, rate_point)
            for j, (i, item) in enumerate(zip(idx, items)):
                out[i] = item
                recon[i] = None if images_out is None else images_out[j]
        self.encoder_reconstructions = recon
        return out  # type: ignore[return-value]

    def _encode_group(self, batch: torch.Tensor, rate_point: RatePoint) -> tuple[list[tuple[bytes, dict]], torch.Tensor | None]:
        from rdp_bench.codecs.entropy import pad_to_multiple

        model, coder = self._model(rate_point)
        b, _, h, w = batch.shape
        x = batch.to(self.device) * 2.0 - 1.0
        x_pad, _ = pad_to_multiple(x, self._pad_multiple(model))
        y = model.cdc.context_fn.analysis(x_pad)
        z = model.cdc.context_fn.hyper_analysis(y)
        z_strings, y_strings, _, bits = coder.encode(y, z)
        # decode our own strings: the trajectory must start from exactly the decoder's ŷ
        y_hat = coder.decode(z_strings, y_strings, tuple(z.shape[-2:]))
        seeds = [_noise_seed(s) for s in y_strings]
        steps = self.steps if self.mode != "e2e" else 0
        gamma_bytes = [b""] * b
        gamma_count = 0
        images_out = None
        if self.mode == "corrected":
            images_out, gammas = self._run(model, y_hat, seeds, (h, w), steps, self.layout, self.precision,
                                           target=x_pad)
            quantizer = get_quantizer(self.precision)
            gamma_bytes = [quantizer.to_bytes(g) for g in gammas.cpu()]
            gamma_count = gammas[0].numel()
            images_out = _to_unit(images_out)
        layout = self.layout if self.mode == "corrected" else GammaLayout("scalar")
        precision = self.precision if self.mode == "corrected" else "float16"
        results = []
        for i in range(b):
            payload = _pack_payload(steps, layout, precision, gamma_bytes[i], z_strings[i], y_strings[i])
            extras = {"bpp_estimated": float(bits[i]) / (h * w), "bpp_gamma": 8.0 * len(gamma_bytes[i]) / (h * w),
                      "gamma_count": gamma_count}
            results.append((payload, extras))
        return results, images_out

    @torch.no_grad()
    def decode_payloads(self, records: Sequence[Container]) -> list[torch.Tensor]:
        out: list[torch.Tensor | None] = [None] * len(records)
        groups: dict[tuple, list[int]] = {}
        parsed = []
        for i, rec in enumerate(records):
            steps, layout, precision, gamma_bytes, z_string, y_string = _unpack_payload(rec.payload)
            parsed.append((steps, layout, precision, gamma_bytes, z_string, y_string))
            groups.setdefault((rec.rate_id, rec.height, rec.width, steps, layout, precision), []).append(i)
        points = self.rate_points()
        for (rate_id, h, w, steps, layout, precision), idx in groups.items():
            model, coder = self._model(points[rate_id])
            m = self._pad_multiple(model)
            hp, wp = -(-h // m) * m, -(-w // m) * m
            z_shape = (hp // model.cdc.config.compressor.pad_multiple, wp // model.cdc.config.compressor.pad_multiple)
            y_hat = coder.decode([parsed[i][4] for i in idx], [parsed[i][5] for i in idx], z_shape)
            if tuple(y_hat.shape[-2:]) != (hp // model.cdc.config.compressor.latent_factor,
                                           wp // model.cdc.config.compressor.latent_factor):
                raise BitstreamError("latent shape does not match the image size in the header")
            gammas = None
            if self.mode == "corrected":
                if steps < 1:
                    raise BitstreamError("a corrected CorrDiff stream needs at least one step")
                quantizer = get_quantizer(precision)
                count = steps * layout.count(h, w)
                gammas = torch.stack([quantizer.from_bytes(parsed[i][3], count) for i in idx])
                gammas = gammas.reshape(len(idx), steps, layout.count(h, w))
            else:
                if any(parsed[i][3] for i in idx):
                    raise BitstreamError(f"{self.name} streams carry no gamma values")
                if self.mode == "diffusion-only" and steps < 1:
                    raise BitstreamError("a diffusion decode needs at least one step")
            seeds = [_noise_seed(parsed[i][5]) for i in idx]
            images, _ = self._run(model, y_hat, seeds, (h, w), steps, layout, precision, gammas=gammas)
            images = _to_unit(images)
            for j, i in enumerate(idx):
                out[i] = images[j]
        return out  # type: ignore[return-value]


class CorrDiffDiffusionOnly(CorrDiff):
    name = "corrdiff-diffusion-only"
    description = "CorrDiff ablation: same checkpoint and ŷ stream, γ = 0 (plain CDC-style DDIM decode)"
    mode = "diffusion-only"


class CorrDiffE2E(CorrDiff):
    name = "corrdiff-e2e"
    description = "CorrDiff ablation: same checkpoint and ŷ stream, decoded by the privileged e2e decoder D(ŷ) only"
    wants_gpu = False
    mode = "e2e"


def _noise_seed(y_string: bytes) -> int:
    """The initial-noise seed of an image: CRC32 of its y string (known to both ends)."""
    return zlib.crc32(y_string) & 0x7FFFFFFF


def _to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] on CPU float32 (the same op at both ends)."""
    return ((images.float().cpu() + 1.0) / 2.0).clamp(0.0, 1.0)


def _groups_by_shape(images: Sequence[torch.Tensor]) -> list[list[int]]:
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(tuple(img.shape), []).append(i)
    return list(groups.values())
