"""The HiFiC autoencoder (Mentzer et al. 2020), state-dict compatible with NeuralCompression's
``HiFiCAutoencoder`` (the architecture of the official MS-ILLM and No-GAN weights).

Module names and shapes follow NeuralCompression exactly at the default (full) size: encoder
``encoder.blocks``, generator ``decoder.block_0 / resid_blocks / blocks``, ``hyper_analysis``,
``hyper_synthesis_mean``, ``hyper_synthesis_scale``, ``hyper_bottleneck`` (CompressAI
``EntropyBottleneck``) and ``latent_bottleneck`` (CompressAI ``GaussianConditional``).
``HiFiCConfig.tiny()`` keeps that topology with fewer channels, for the bundled CPU-trained models.

Coding (``compress_image`` / ``decompress_image``) follows NeuralCompression: the image is padded to
a multiple of 64, the hyper path and all entropy coding run on CPU in float32; additionally each image
goes through the networks on its own, so bitstreams and decoded images do not depend on the batch size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.models import CompressionModel
from compressai.ops import quantize_ste

from rdp_bench.codecs.checkpoints import with_architecture_constants
from rdp_bench.codecs.entropy import (
    FactorizedCoder, GaussianLatentCoder, bits_from_likelihoods, crop, pack_strings, pad_to_multiple,
    unpack_strings,
)
from rdp_bench.container import BitstreamError

FACTOR = 64  # total downsampling: 16 (analysis) x 4 (hyper-analysis)


@dataclass(frozen=True)
class HiFiCConfig:
    in_channels: int = 3
    latent_features: int = 220
    hyper_features: int = 320
    encoder_channels: tuple[int, ...] = (60, 120, 240, 480, 960)
    generator_channels: tuple[int, ...] = (960, 480, 240, 120, 60)
    num_residual_blocks: int = 9
    #: "channel" = HiFiC's ChannelNorm; "affine" keeps only its per-channel gamma/beta (same parameters,
    #: no normalization). The bundled tiny models use "affine": with 16-64 channels, ChannelNorm models
    #: did not get past predicting the mean colour within our CPU budget, the affine variant did.
    norm: str = "channel"

    @classmethod
    def tiny(cls) -> "HiFiCConfig":
        """Same modules and parameter names, fewer channels (~0.8 M parameters), affine-only norms."""
        return cls(latent_features=64, hyper_features=32, encoder_channels=(16, 32, 48, 64, 64),
                   generator_channels=(48, 48, 32, 24, 16), num_residual_blocks=9, norm="affine")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "HiFiCConfig":
        data = dict(data)
        for key in ("encoder_channels", "generator_channels"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


class ChannelNorm2D(nn.Module):
    """Normalize across channels at every pixel (HiFiC's ChannelNorm), with per-channel affine."""

    def __init__(self, channels: int, epsilon: float = 1e-3, affine: bool = True, normalize: bool = True) -> None:
        super().__init__()
        if channels <= 1:
            raise ValueError("ChannelNorm needs more than one channel")
        self.epsilon = epsilon
        self.affine = affine
        self.normalize = normalize
        if affine:
            self.gamma = nn.Parameter(torch.ones(1, channels, 1, 1))
            self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.normalize:
            return self.gamma * x + self.beta if self.affine else x
        centered = x - x.mean(dim=1, keepdim=True)
        # unbiased variance as in NeuralCompression; written out because torch.var over dim 1 is ~3x slower on CPU
        var = (centered * centered).sum(dim=1, keepdim=True) / (x.shape[1] - 1)
        x = centered * torch.rsqrt(var + self.epsilon)
        return self.gamma * x + self.beta if self.affine else x


def _norm_factory(kind: str):
    if kind not in ("channel", "affine"):
        raise ValueError(f"norm must be 'channel' or 'affine', got {kind!r}")
    return lambda c: ChannelNorm2D(c, normalize=kind == "channel")


class HiFiCEncoder(nn.Module):
    def __init__(self, in_channels: int, channels: tuple[int, ...], latent_features: int, norm: str = "channel") -> None:
        super().__init__()
        Norm = _norm_factory(norm)
        layers: list[nn.Module] = []
        cin = in_channels
        for i, cout in enumerate(channels):
            conv = (nn.Conv2d(cin, cout, 7, padding=3) if i == 0 else nn.Conv2d(cin, cout, 3, stride=2, padding=1))
            layers.append(nn.Sequential(conv, Norm(cout), nn.ReLU()))
            cin = cout
        layers.append(nn.Conv2d(cin, latent_features, 3, padding=1))
        self.blocks = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, norm: str = "channel") -> None:
        super().__init__()
        Norm = _norm_factory(norm)
        self.sequence = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), Norm(channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), Norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sequence(x)


class HiFiCGenerator(nn.Module):
    def __init__(self, image_channels: int, latent_features: int, channels: tuple[int, ...], num_residual_blocks: int,
                 norm: str = "channel") -> None:
        super().__init__()
        Norm = _norm_factory(norm)
        self.block_0 = nn.Sequential(
            Norm(latent_features),
            nn.Conv2d(latent_features, channels[0], 3, padding=1),
            Norm(channels[0]),
        )
        self.resid_blocks = nn.Sequential(*[ResidualBlock(channels[0], norm) for _ in range(num_residual_blocks)])
        layers: list[nn.Module] = []
        for cin, cout in zip(channels[:-1], channels[1:]):
            layers.append(nn.Sequential(
                nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1), Norm(cout), nn.ReLU(),
            ))
        layers.append(nn.Conv2d(channels[-1], image_channels, 7, padding=3))
        self.blocks = nn.Sequential(*layers)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        x = self.block_0(y)
        x = x + self.resid_blocks(x)  # a long skip around all residual blocks, as upstream
        return self.blocks(x)


def _conv(cin: int, cout: int, kernel: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)


def _deconv(cin: int, cout: int, kernel: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, kernel, stride=stride, padding=kernel // 2, output_padding=1)


def _hyper_synthesis(hyper: int, latent: int) -> nn.Sequential:
    return nn.Sequential(
        _deconv(hyper, hyper), nn.ReLU(inplace=True), _deconv(hyper, hyper), nn.ReLU(inplace=True),
        _conv(hyper, latent, kernel=3, stride=1),
    )


@dataclass
class HiFiCForward:
    """Training-time outputs (noisy/STE quantization) with likelihoods for the rate term."""

    reconstruction: torch.Tensor
    latent: torch.Tensor
    latent_likelihoods: torch.Tensor
    hyper_likelihoods: torch.Tensor
    extras: dict = field(default_factory=dict)

    def bits(self) -> torch.Tensor:
        """Estimated bits per image (noisy likelihoods, differentiable)."""
        return bits_from_likelihoods(self.latent_likelihoods) + bits_from_likelihoods(self.hyper_likelihoods)


class HiFiCAutoencoder(CompressionModel):
    """HiFiC mean-scale hyperprior autoencoder; input and output images in [0, 1]."""

    def __init__(self, config: HiFiCConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or HiFiCConfig()
        lat, hyp = config.latent_features, config.hyper_features
        self.encoder = HiFiCEncoder(config.in_channels, config.encoder_channels, lat, config.norm)
        self.decoder = HiFiCGenerator(config.in_channels, lat, config.generator_channels, config.num_residual_blocks, config.norm)
        self.hyper_analysis = nn.Sequential(
            _conv(lat, hyp, kernel=3, stride=1), nn.ReLU(inplace=True), _conv(hyp, hyp), nn.ReLU(inplace=True), _conv(hyp, hyp),
        )
        self.hyper_synthesis_mean = _hyper_synthesis(hyp, lat)
        self.hyper_synthesis_scale = _hyper_synthesis(hyp, lat)
        self.hyper_bottleneck = EntropyBottleneck(hyp)
        self.latent_bottleneck = GaussianConditional(scale_table=None)
        self._coders: tuple[FactorizedCoder, GaussianLatentCoder] | None = None

    # --- training ------------------------------------------------------------------------------
    def forward(self, image: torch.Tensor, decoder_noise: bool = False) -> HiFiCForward:
        # Under bf16 autocast (GPU training) the transforms run in bf16; the entropy models and the rounding
        # stay in float32, where the likelihood tails keep their precision.
        latent = self.encoder(image).float()
        hyper = self.hyper_analysis(latent).float()
        with torch.autocast(image.device.type, enabled=False):
            hyper_noisy, hyper_lik = self.hyper_bottleneck(hyper)
        means = self.hyper_synthesis_mean(hyper_noisy).float()
        scales = self.hyper_synthesis_scale(hyper_noisy).float()
        with torch.autocast(image.device.type, enabled=False):
            latent_noisy, latent_lik = self.latent_bottleneck(latent, scales, means=means)
            if self.training and decoder_noise:
                # pretraining: the generator sees the noisy latent (CompressAI's practice). Rounded latents of an
                # untrained encoder are all zero, and the tiny model then only learns the mean colour.
                latent_hat = latent_noisy
            elif self.training:  # the generator sees rounded latents (straight-through), as it will at test time
                latent_hat = quantize_ste(latent - means) + means
            else:
                latent_hat = torch.round(latent - means) + means
        return HiFiCForward(self.decoder(latent_hat).float(), latent_hat, latent_lik, hyper_lik)

    def aux_loss(self) -> torch.Tensor:  # CompressAI's quantile loss for the factorized prior
        return self.hyper_bottleneck.loss()

    # --- real coding ---------------------------------------------------------------------------
    def load_state_dict(self, state_dict, strict: bool = True):  # type: ignore[override]
        self._coders = None  # fp16 files flush the likelihood bounds to 0: keep the module's own
        return super().load_state_dict(with_architecture_constants(self, state_dict), strict=strict)

    def train(self, mode: bool = True):  # type: ignore[override]
        self._coders = None  # tables are rebuilt from the (changed) weights
        return super().train(mode)

    def coders(self) -> tuple[FactorizedCoder, GaussianLatentCoder]:
        """CPU float32 coding tables, built once from the current weights."""
        if self._coders is None:
            table = self.latent_bottleneck.scale_table
            self._coders = (
                FactorizedCoder.from_entropy_bottleneck(self.hyper_bottleneck),
                GaussianLatentCoder(table.detach().cpu().float() if table.numel() else None),
            )
        return self._coders

    def _hyper_cpu(self, hyper_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Means and scales from ẑ: CPU float32, one image at a time (batch-size invariant)."""
        mean_net = _cpu_copy(self.hyper_synthesis_mean)
        scale_net = _cpu_copy(self.hyper_synthesis_scale)
        means, scales = [], []
        with torch.no_grad():
            for z in hyper_hat.split(1):
                means.append(mean_net(z))
                scales.append(scale_net(z))
        return torch.cat(means), torch.cat(scales)

    @torch.no_grad()
    def compress_image(self, images: torch.Tensor) -> tuple[list[bytes], dict[str, torch.Tensor]]:
        """Encode a batch (N x 3 x H x W in [0, 1]) to one payload per image, plus estimated bits."""
        factorized, gaussian = self.coders()
        padded, _ = pad_to_multiple(images, FACTOR)
        # one image at a time everywhere: batched convolutions may round differently, and the
        # bitstream and the decoded image must not depend on the batch size
        latent = torch.cat([self.encoder(x).to("cpu", torch.float32) for x in padded.split(1)])
        analysis = _cpu_copy(self.hyper_analysis)
        hyper = torch.cat([analysis(y) for y in latent.split(1)])
        hyper_strings = factorized.compress(hyper)
        hyper_hat = factorized.quantize(hyper)
        means, scales = self._hyper_cpu(hyper_hat)
        latent_strings = gaussian.compress(latent, scales, means)
        latent_hat = torch.round(latent - means) + means
        est_bits = bits_from_likelihoods(gaussian.likelihood(latent_hat, scales, means))
        _, hyper_lik = _cpu_copy(self.hyper_bottleneck)(hyper_hat, training=False)
        est_bits = est_bits + bits_from_likelihoods(hyper_lik)
        payloads = [pack_strings([h, y]) for h, y in zip(hyper_strings, latent_strings)]
        return payloads, {"estimated_bits": est_bits, "latent_hat": latent_hat}

    @torch.no_grad()
    def decompress_image(self, payloads: list[bytes], sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        """Decode payloads of images sharing one padded size; returns cropped images in [0, 1]."""
        factorized, gaussian = self.coders()
        ph, pw = [-(-s // FACTOR) * FACTOR for s in sizes[0]]
        if any([-(-s // FACTOR) * FACTOR for s in size] != [ph, pw] for size in sizes):
            raise ValueError("decompress_image needs images of one padded size per call")
        parts = [unpack_strings(p, expected_count=2) for p in payloads]
        hyper_hat = factorized.decompress([p[0] for p in parts], (ph // FACTOR, pw // FACTOR))
        means, scales = self._hyper_cpu(hyper_hat)
        latent_hat = gaussian.decompress([p[1] for p in parts], scales, means)
        if not torch.isfinite(latent_hat).all() or latent_hat.abs().max() > 1e6:
            raise BitstreamError("decoded latents are out of range: the payload is corrupt")
        device = next(self.decoder.parameters()).device
        dtype = next(self.decoder.parameters()).dtype
        images = torch.cat([self.decoder(y.to(device, dtype)).float().clamp(0, 1).cpu() for y in latent_hat.split(1)])
        return [crop(img, size) for img, size in zip(images, sizes)]


def _cpu_copy(module: nn.Module) -> nn.Module:
    """The module itself when already on CPU float32, else a CPU float32 copy (for the hyper path)."""
    param = next(module.parameters())
    if param.device.type == "cpu" and param.dtype == torch.float32:
        return module
    import copy

    return copy.deepcopy(module).to("cpu", torch.float32)


def config_from_state_dict(state: dict[str, torch.Tensor], norm: str = "channel") -> HiFiCConfig:
    """Infer the channel widths of a HiFiC-architecture state dict (the norm kind is not in it)."""
    try:
        encoder = [state[f"encoder.blocks.{i}.0.weight"].shape[0] for i in range(5)]
        generator = [state["decoder.block_0.1.weight"].shape[0]] + [state[f"decoder.blocks.{i}.0.weight"].shape[1] for i in range(4)]
        blocks = len({k.split(".")[2] for k in state if k.startswith("decoder.resid_blocks.")})
        return HiFiCConfig(
            in_channels=state["encoder.blocks.0.0.weight"].shape[1],
            latent_features=state["encoder.blocks.5.weight"].shape[0],
            hyper_features=state["hyper_analysis.0.weight"].shape[0],
            encoder_channels=tuple(encoder), generator_channels=tuple(generator), num_residual_blocks=blocks, norm=norm,
        )
    except KeyError as exc:
        raise ValueError(f"not a HiFiC-architecture state dict (missing {exc})") from None


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["ChannelNorm2D", "FACTOR", "config_from_state_dict", "HiFiCAutoencoder", "HiFiCConfig", "HiFiCForward", "parameter_count"]
