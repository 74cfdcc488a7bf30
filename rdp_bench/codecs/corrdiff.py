"""CorrDiff: a conditional diffusion decoder corrected at every DDIM step by a privileged end-to-end
decoder, with the per-step mixing weights γ_t in the bitstream.

Paper: Ma, Yang, Liu, "Correcting Diffusion-Based Perceptual Image Compression with Privileged
End-to-End Decoder", ICML 2024 (arXiv 2404.04916). There is no official code; this follows the paper's
description. Networks: ``corrdiff_net`` (the bundled hyperprior as compressor and privileged decoder
D, and a score network predicting a residual on D(ŷ)); γ solvers, quantizers and the corrected loop:
``corrdiff_parts``; DDIM: ``diffusion.sampler``.

Mechanism. The compressor codes ŷ with the bundled variable-rate hyperprior (the ``hyperprior``
codec's exact ŷ stream). At decode, the score network predicts x̂0 from x_t and features of
x0e = D(ŷ). At each of the N DDIM steps the encoder, which sees x, picks
γ_t* = argmin ‖x − (x̂0 + γ(x0e − x̂0))‖² (closed form), quantizes it, and continues with the
*quantized* γ_t (x̃0 = x̂0 + γ_t(x0e − x̂0) replaces x̂0 in the DDIM update). The N γ values are written
beside the ŷ stream; the decoder replays the identical trajectory and outputs the last x̃0.

Codec variants (same checkpoint, same ŷ stream; only the γ block differs):

* ``corrdiff``                -- corrected sampling (the paper's method).
* ``corrdiff-diffusion-only`` -- γ = 0 at every step: a plain DDIM decode; no γ bits.
* ``corrdiff-e2e``            -- just D(ŷ), no diffusion; no γ bits (the ``hyperprior`` codec's image).

Rate points ``q1``, ``q2``, … are the hyperprior's gain levels in rate order, fixed by the score net's manifest
(a stream's rate id never depends on which files are on disk); the manifest's ``compressor.trained_lambdas``
names the levels the score net trained on, where a level was added to the compressor later.

Options (constructor keywords, also ``codec_options`` of a run):

* ``steps`` (η = 0): DDIM steps N, written in the payload, so the decoder needs no option. Default 4
  on every device (the same command gives the same numbers anywhere); ``steps=8`` is the paper's N.
* ``gamma_granularity``: ``scalar`` (paper: one γ per step), ``channel`` (3 per step) or ``tile``
  (one per ``gamma_tile`` x ``gamma_tile`` block, default 64 px).
* ``gamma_precision``: ``float16`` (paper), ``bfloat16`` or ``uint8`` (uniform, step 1/128 on
  [-0.5, 1.49]; see ``corrdiff_parts.Uniform8Gamma``).
* ``gamma_solver``: ``mse`` (closed form, default) or ``mse+msssim`` (a few Adam steps on
  MSE + ``perceptual_weight`` · (1 − MS-SSIM), started at the closed form). Encoder-only choice.
* ``checkpoint``: another score-network checkpoint (``.safetensors`` + ``.json`` manifest).

Choices made where the paper is silent (also in the README):

* D is the MSE-trained hyperprior's own synthesis, frozen; the score network is trained against it
  (``training/corrdiff.py``), not jointly (the paper's phase 2 is left out: no budget for it).
* Initial noise: ``0.8 · N(0, I)`` (CDC's default noise scale) from a CPU generator seeded with the
  CRC32 of the image's ŷ stream, one generator per image, so the noise is a function of the bitstream
  alone and never depends on the batch. ``corrdiff-diffusion-only`` draws other samples of the same
  stream with ``--seeds K``; the corrected decode has one, as its γ were solved on that noise.
* DDIM timesteps are CDC's (``N`` indices evenly spaced over the 8193 training steps, from the top);
  the final step goes to ᾱ = 1, so the output is exactly the last x̃0.
* x̂0 and x0e are clamped to [-1, 1] before the mix and x̃0 after it; the mix is ``torch.lerp`` so that
  γ = 0 gives x̂0 and γ = 1 gives D(ŷ) bit-exactly.
* γ is solved on the real image area only (not the padding), is 0 where ‖x0e − x̂0‖² vanishes, and
  is clipped to ±4 before quantization.
* γ bits: N · count · (16 or 8) bits plus a 6-byte CorrDiff header, all inside the container and
  therefore in bpp; the ``bpp_gamma`` result column reports the γ share.

Bit-exactness: on CPU the decoder's image equals the encoder's final x̃0 bit for bit when both process
the same batch composition (tested). Across devices or batch sizes the network's floating point may
differ in the last bits; γ then still applies, the output just is not bit-identical to the encoder's.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import struct
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch

from rdp_bench.codecs.base import AMP_OPTION, Availability, Codec, CodecUnavailable, Option, RatePoint
from rdp_bench.codecs.batching import bucket, chunks, image_shape, record_group
from rdp_bench.codecs.corrdiff_parts import (
    GRANULARITIES, GRANULARITY_IDS, QUANTIZER_IDS, QUANTIZERS, GammaLayout, corrected_sample, get_quantizer, mse_plus_msssim,
    solve_gamma_gradient, solve_gamma_mse,
)
from rdp_bench.codecs.diffusion.sampler import stream_noise_seed
from rdp_bench.container import BitstreamError, Container

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights" / "corrdiff"
DEFAULT_CHECKPOINT = "corrdiff-score-w48"
NOISE_SCALE = 0.8
#: images per network batch are limited so that batch x H x W stays under this (GPU memory)
MAX_BATCH_PIXELS = 8 * 512 * 768
PAYLOAD_VERSION = 2
#: DDIM steps N on every device (the paper's N is 8: pass ``steps=8``)
DEFAULT_STEPS = 4
#: most DDIM steps a stream may ask for (encoder and decoder): each is a full network pass at image
#: size, so the step byte is bounded well below 255 (64 = 8x the paper's N)
MAX_STEPS = 64
#: version, steps, granularity id, precision id, tile size
_HEADER = struct.Struct(">BBBBH")
_MODES = ("corrected", "diffusion-only", "e2e")


# ----------------------------------------------------------------------------------------------
# Payload (after the weights fingerprint Codec adds): [CorrDiff header, γ bytes, the hyperprior codec's ŷ payload]
# ----------------------------------------------------------------------------------------------
def _pack_payload(steps: int, layout: GammaLayout, precision: str, gamma_bytes: bytes, latent_payload: bytes) -> bytes:
    from rdp_bench.codecs.entropy import pack_strings

    header = _HEADER.pack(PAYLOAD_VERSION, steps, GRANULARITY_IDS[layout.granularity], QUANTIZER_IDS[precision],
                          layout.tile)
    return pack_strings([header, gamma_bytes, latent_payload])


def _unpack_payload(payload: bytes) -> tuple[int, GammaLayout, str, bytes, bytes]:
    from rdp_bench.codecs.entropy import unpack_strings

    header, gamma_bytes, latent_payload = unpack_strings(payload, expected_count=3)
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
    return steps, layout, precs[prec_id], gamma_bytes, latent_payload


# ----------------------------------------------------------------------------------------------
# Checkpoints: the score network's manifest names the compressor checkpoint (file + sha256)
# ----------------------------------------------------------------------------------------------
def _manifest(path: Path) -> dict[str, Any]:
    return json.loads(path.with_suffix(".json").read_text())


def _compressor_path(score_path: Path, manifest: dict[str, Any]) -> Path:
    from rdp_bench.codecs.hyperprior import WEIGHTS_DIR as HYPERPRIOR_DIR

    name = manifest["compressor"]["file"]
    beside = score_path.parent / name
    return beside if beside.is_file() else HYPERPRIOR_DIR / name


@lru_cache(maxsize=4)
def _load_score_net(path: str, sha256: str, config_json: str):
    from rdp_bench.codecs.checkpoints import load_state_dict
    from rdp_bench.codecs.corrdiff_net import ScoreNet, ScoreNetConfig

    net = ScoreNet(ScoreNetConfig.from_dict(json.loads(config_json)))
    net.load_state_dict(load_state_dict(path, expected_sha256=sha256))
    return net.eval()


# ----------------------------------------------------------------------------------------------
# The codec
# ----------------------------------------------------------------------------------------------
class CorrDiff(Codec):
    name = "corrdiff"
    description = ("CorrDiff (ICML 2024) on the bundled hyperprior: diffusion decoder corrected per DDIM step by "
                   "the privileged MSE decoder D; γ in the bitstream (small CPU-trained model)")
    wants_gpu = True
    supports_amp = True
    mode: ClassVar[str] = "corrected"
    OPTIONS: ClassVar[dict[str, Option]] = {
        "steps": Option(int, DEFAULT_STEPS, "DDIM steps N (written in the payload; the paper's N is 8)",
                        minimum=1, maximum=MAX_STEPS),
        "gamma_granularity": Option(str, "scalar", "one γ per step (scalar), per channel, or per tile",
                                    choices=GRANULARITIES),
        "gamma_tile": Option(int, 64, "tile side in px with gamma_granularity=tile", minimum=8, maximum=4096),
        "gamma_precision": Option(str, "float16", "how each γ is stored", choices=tuple(sorted(QUANTIZERS))),
        "gamma_solver": Option(str, "mse", "closed-form MSE γ, or Adam steps on MSE + perceptual_weight·(1 − MS-SSIM)",
                               choices=("mse", "mse+msssim")),
        "perceptual_weight": Option(float, 0.1, "MS-SSIM weight of gamma_solver=mse+msssim", minimum=0),
        "checkpoint": Option(Path, None, "another score-network checkpoint (.safetensors + .json manifest)"),
        "amp": AMP_OPTION,
        "max_batch_pixels": Option(int, MAX_BATCH_PIXELS, "most batch x H x W pixels per network call", minimum=1),
    }

    def __init__(self, device: str | None = None, *, steps: int | None = None, gamma_granularity: str = "scalar",
                 gamma_tile: int = 64, gamma_precision: str = "float16", gamma_solver: str = "mse",
                 perceptual_weight: float = 0.1, checkpoint: str | Path | None = None, amp: str | None = None,
                 max_batch_pixels: int = MAX_BATCH_PIXELS, **options: Any) -> None:
        super().__init__(device, **options)
        steps = DEFAULT_STEPS if steps is None else int(steps)
        if not 1 <= steps <= MAX_STEPS:
            raise ValueError(f"steps must be in 1..{MAX_STEPS}, got {steps}")
        if gamma_solver not in ("mse", "mse+msssim"):
            raise ValueError(f"gamma_solver must be 'mse' or 'mse+msssim', got {gamma_solver!r}")
        self.steps = steps
        self.layout = GammaLayout(gamma_granularity, int(gamma_tile))
        self.precision = get_quantizer(gamma_precision).name
        self.gamma_solver = gamma_solver
        self.perceptual_weight = float(perceptual_weight)
        self.path = Path(checkpoint) if checkpoint else WEIGHTS_DIR / f"{DEFAULT_CHECKPOINT}.safetensors"
        self.amp = amp if self.device.type == "cuda" else None  # network autocast on GPU only
        if self.amp not in (None, "bf16", "fp16"):
            raise ValueError(f"amp must be bf16 or fp16, got {amp!r}")
        self.max_batch_pixels = int(max_batch_pixels)
        self._compressor = None
        self._device_model = None

    # --- registry interface ---------------------------------------------------------------
    @classmethod
    def _check(cls, path: Path) -> Availability:
        if not (path.is_file() and path.with_suffix(".json").is_file()):
            return Availability(False, f"{path.name} (with its .json manifest) not found in {path.parent} "
                                       "(run `rdp-bench train corrdiff`, then --export)")
        compressor = _compressor_path(path, _manifest(path))
        if not compressor.is_file():
            return Availability(False, f"compressor checkpoint {compressor.name} not found (beside {path.name} "
                                       "or in rdp_bench/weights/hyperprior)")
        return Availability(True)

    @classmethod
    def availability(cls) -> Availability:
        return cls._check(WEIGHTS_DIR / f"{DEFAULT_CHECKPOINT}.safetensors")

    @classmethod
    def availability_for_options(cls, options: dict[str, Any]) -> Availability:
        return cls._check(Path(options["checkpoint"])) if options.get("checkpoint") else cls.availability()

    def _score_manifest(self) -> dict[str, Any]:
        if not self.path.is_file():
            raise CodecUnavailable(f"{self.name}: checkpoint {self.path} not found")
        return _manifest(self.path)

    def rate_points(self) -> list[RatePoint]:
        lambdas = self._score_manifest()["compressor"]["lambdas"]
        return [RatePoint(f"q{i + 1}", {"level": i, "lambda": lam}) for i, lam in enumerate(lambdas)]

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
        """sha256 of both checkpoints combined with the settings, which change the output."""
        m = self._score_manifest()
        settings = json.dumps(self.settings(), sort_keys=True)
        return hashlib.sha256(f"{m['sha256']}|{m['compressor']['sha256']}|{settings}".encode()).hexdigest()

    def weights_sha256(self, rate_point: RatePoint) -> str:
        """The compressor's sha256 for ``e2e`` (its decode is D(ŷ) alone), else one over both checkpoints."""
        m = self._score_manifest()
        if self.mode == "e2e":
            return m["compressor"]["sha256"]
        return hashlib.sha256(f"{m['sha256']}|{m['compressor']['sha256']}".encode()).hexdigest()

    def provenance(self) -> dict[str, Any]:
        m = self._score_manifest()
        t = m.get("training", {})
        return {**self.settings(), "noise_seed": "crc32 of the ŷ stream", "x0_clamp": [-1, 1],
                "max_batch_pixels": self.max_batch_pixels,
                "weights": {"file": self.path.name, "sha256": m["sha256"], "steps": t.get("steps"),
                            "cpu_hours": t.get("cpu_hours"), "data": t.get("data")},
                "compressor": {k: m["compressor"][k] for k in ("file", "sha256")}}

    # --- model plumbing -------------------------------------------------------------------
    def compressor(self):
        """The hyperprior codec whose ŷ stream and synthesis D this CorrDiff uses."""
        if self._compressor is None:
            from rdp_bench.codecs.hyperprior import Hyperprior

            m = self._score_manifest()
            path = _compressor_path(self.path, m)
            if not (path.is_file() and path.with_suffix(".json").is_file()):
                raise CodecUnavailable(f"{self.name}: compressor checkpoint {path.name} (+ .json) not found beside "
                                       f"{self.path.name} or in rdp_bench/weights/hyperprior")
            hp = Hyperprior(device=str(self.device), checkpoint=path)
            if hp.checkpoint_id(RatePoint("q1")) != m["compressor"]["sha256"]:
                raise CodecUnavailable(f"{self.name}: {path.name} is not the compressor this score network was "
                                       f"trained on (sha256 {m['compressor']['sha256'][:12]}…)")
            self._compressor = hp
        return self._compressor

    def _decoder_model(self):
        """The hyperprior on this codec's device. A copy off the CPU: the coder's entropy path must stay
        on the CPU module (moving that one would move the coder with it)."""
        model = self.compressor().model()
        if self.device.type == "cpu":
            return model
        if self._device_model is None:
            self._device_model = copy.deepcopy(model).to(self.device)
        return self._device_model

    def score_net(self):
        m = self._score_manifest()
        return _load_score_net(str(self.path), m["sha256"], json.dumps(m["config"], sort_keys=True)).to(self.device)

    def _sampler(self, steps: int):
        from rdp_bench.codecs.diffusion.sampler import DDIMSampler

        return DDIMSampler(self.score_net().train_alphas_cumprod, steps, eta=0.0)

    def _autocast(self):
        if self.amp:
            return torch.autocast("cuda", dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[self.amp])
        return contextlib.nullcontext()

    def _run(self, level: int, y_hat: torch.Tensor, seeds: Sequence[int], valid: tuple[int, int], steps: int,
             layout: GammaLayout, precision: str, target: torch.Tensor | None = None,
             gammas: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Batched in chunks of at most ``max_batch_pixels``; -> (images in [-1,1] cropped, γ B x N x count)."""
        images, used = [], []
        stride = self.compressor().coder(level).parts.latent_stride
        hp, wp = y_hat.shape[-2] * stride, y_hat.shape[-1] * stride
        for part in chunks(range(y_hat.shape[0]), hp * wp, self.max_batch_pixels):
            sl = slice(part[0], part[-1] + 1)
            img, g = self._run_chunk(level, y_hat[sl], list(seeds)[sl], valid, steps, layout, precision,
                                     None if target is None else target[sl], None if gammas is None else gammas[sl])
            images.append(img)
            used.append(g)
        return torch.cat(images), (None if used[0] is None else torch.cat(used))

    def _run_chunk(self, level: int, y_hat: torch.Tensor, seeds: list[int], valid: tuple[int, int], steps: int,
                   layout: GammaLayout, precision: str, target: torch.Tensor | None,
                   gammas: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        from rdp_bench.codecs.corrdiff_net import privileged_decoder

        model = self._decoder_model()
        y_dec = y_hat.to(self.device) * model.inv_gain.abs()[level][None, :, None, None]
        decoded = privileged_decoder(model.g_s, y_dec)
        x0_e = decoded.x0_e.float().clamp(-1.0, 1.0)
        if self.mode == "e2e":
            return x0_e[..., : valid[0], : valid[1]], None
        net = self.score_net()
        context = net.context(decoded)
        b = y_hat.shape[0]
        sampler = self._sampler(steps)
        noise = sampler.initial_noise(x0_e.shape, seeds, NOISE_SCALE, device=self.device)

        def denoiser(x_t: torch.Tensor, t: int) -> torch.Tensor:
            with self._autocast():
                x0 = net(x_t, sampler.time_input(t, b, self.device), context)
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
        for idx in bucket(images, image_shape).values():
            batch = torch.stack([images[i] for i in idx])
            items, images_out = self._encode_group(batch, rate_point)
            for j, (i, item) in enumerate(zip(idx, items)):
                out[i] = item
                recon[i] = None if images_out is None else images_out[j]
        self.encoder_reconstructions = recon
        return out  # type: ignore[return-value]

    def _encode_group(self, batch: torch.Tensor, rate_point: RatePoint) -> tuple[list[tuple[bytes, dict]], torch.Tensor | None]:
        from rdp_bench.codecs.entropy import pad_to_multiple

        level = rate_point.params["level"]
        coder = self.compressor().coder(level)
        b, _, h, w = batch.shape
        enc = coder.encode(batch)
        # the trajectory starts from exactly the ŷ the decoder will see (the coder returns it with the strings)
        y_hat = enc.y_hat
        seeds = [stream_noise_seed(p) for p in enc.payloads]
        steps = self.steps if self.mode != "e2e" else 0
        gamma_bytes = [b""] * b
        gamma_count = 0
        images_out = None
        if self.mode == "corrected":
            x_pad, _ = pad_to_multiple(batch.to("cpu", torch.float32), coder.parts.pad_multiple)
            images_out, gammas = self._run(level, y_hat, seeds, (h, w), steps, self.layout, self.precision,
                                           target=x_pad.to(self.device) * 2.0 - 1.0)
            quantizer = get_quantizer(self.precision)
            gamma_bytes = [quantizer.to_bytes(g) for g in gammas.cpu()]
            gamma_count = gammas[0].numel()
            images_out = _to_unit(images_out)
        layout = self.layout if self.mode == "corrected" else GammaLayout("scalar")
        precision = self.precision if self.mode == "corrected" else "float16"
        results = []
        for i in range(b):
            payload = _pack_payload(steps, layout, precision, gamma_bytes[i], enc.payloads[i])
            # the ŷ stream's identity: the variants of one image and rate point share it (one compressor,
            # deterministic encode), which the rows show side by side
            extras = {"bpp_estimated": float(enc.estimated_bits[i]) / (h * w),
                      "bpp_gamma": 8.0 * len(gamma_bytes[i]) / (h * w), "gamma_count": gamma_count,
                      "latent_sha256": hashlib.sha256(enc.payloads[i]).hexdigest()[:16]}
            results.append((payload, extras))
        return results, images_out

    @torch.no_grad()
    def decode_payloads(self, records: Sequence[Container], seed: int = 0) -> list[torch.Tensor]:
        out: list[torch.Tensor | None] = [None] * len(records)
        parsed = [_unpack_payload(rec.payload) for rec in records]
        # one batch per rate point, size and header (steps, γ layout, precision)
        groups = bucket(range(len(records)), lambda i: (*record_group(records[i]), *parsed[i][:3]))
        points = self.rate_points()
        for (rate_id, h, w, steps, layout, precision), idx in groups.items():
            level = points[rate_id].params["level"]
            y_hat = self.compressor().coder(level).decode_latents([parsed[i][4] for i in idx], (h, w))
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
            seeds = [stream_noise_seed(parsed[i][4], seed) for i in idx]
            images, _ = self._run(level, y_hat, seeds, (h, w), steps, layout, precision, gammas=gammas)
            images = _to_unit(images)
            for j, i in enumerate(idx):
                out[i] = images[j]
        return out  # type: ignore[return-value]


class CorrDiffDiffusionOnly(CorrDiff):
    name = "corrdiff-diffusion-only"
    description = "CorrDiff ablation: same checkpoint and ŷ stream, γ = 0 (plain DDIM decode)"
    mode = "diffusion-only"
    # no γ ties the decode to the encoder's trajectory, so any noise is a valid sample (--seeds K);
    # the corrected decode is not seeded: its γ were solved on the trajectory of the stream's own noise
    seeded_decode = True


class CorrDiffE2E(CorrDiff):
    name = "corrdiff-e2e"
    description = "CorrDiff ablation: same checkpoint and ŷ stream, decoded by the privileged decoder D(ŷ) only"
    wants_gpu = False
    mode = "e2e"


def _to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] on CPU float32 (the same op at both ends)."""
    return ((images.float().cpu() + 1.0) / 2.0).clamp(0.0, 1.0)

