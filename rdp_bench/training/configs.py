"""The settings of the training jobs, the one place their defaults live.

Torch-free, so ``rdp-bench train ... --help`` can show these defaults without importing torch. Defaults owned
by torch-side modules (the rate tables, the model's λ) are fetched lazily when a config is made, and methods
returning model configs import them when called. The training modules re-export these classes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rdp_bench.codecs.corrdiff_net import ScoreNetConfig
    from rdp_bench.codecs.diffusion.model import CDCConfig
    from rdp_bench.codecs.gained_hyperprior import GainedHyperpriorConfig
    from rdp_bench.codecs.hific_arch import HiFiCConfig

from rdp_bench.bundled import CDC_WEIGHTS_DIR, HYPERPRIOR_DEFAULT, HYPERPRIOR_WEIGHTS_DIR

#: where job folders (resume states) live unless ``--jobs-dir`` says otherwise; out of git
DEFAULT_JOBS_DIR = Path(__file__).resolve().parents[2] / ".train_state"

#: the bundled CDC checkpoints, which a CDC job's phases start from
WEIGHTS_DIR = CDC_WEIGHTS_DIR
#: the bundled hyperprior, CorrDiff's frozen compressor + D
HYPERPRIOR_CHECKPOINT = HYPERPRIOR_WEIGHTS_DIR / f"{HYPERPRIOR_DEFAULT}.safetensors"


# Defaults whose owners import torch: read when a config is made, not when this module loads.

def _hyperprior_lambdas() -> tuple[float, ...]:
    from rdp_bench.codecs.gained_hyperprior import DEFAULT_LAMBDAS

    return DEFAULT_LAMBDAS


def _cdc_lambdas() -> tuple[float, ...]:
    from rdp_bench.training.cdc import DEFAULT_LAMBDAS

    return DEFAULT_LAMBDAS


def _hific_targets() -> tuple[float, ...]:
    """The bundled targets (their owner is the rate table)."""
    from rdp_bench.codecs.zoo.hific import TABLE

    return tuple(sorted(entry.params["target_bpp"] for entry in TABLE))


@dataclass(frozen=True)
class AutoencoderJobConfig:
    N: int = 64
    M: int = 128
    lambdas: tuple[float, ...] = field(default_factory=_hyperprior_lambdas)
    crop: int = 128
    batch: int = 8
    lr: float = 3e-4
    lr_aux: float = 1e-3
    #: learning rate × 0.1 from this fraction of ``max_steps`` on
    decay_at: float = 0.85
    max_steps: int = 150_000
    ema_decay: float = 0.999
    seed: int = 0
    val_every: int = 1000
    #: KID (two levels) on every n-th validation; 0 = never
    kid_every: int = 5
    save_every_s: float = 180.0
    threads: int = 2
    #: "cpu" or "cuda"; on CUDA the transforms run under bf16 autocast, the entropy models in float32
    device: str = "cpu"
    #: bundled checkpoint (safetensors + manifest) whose weights start a new job; "" = from scratch
    init: str = ""
    #: λ of rate levels added to ``init`` (whose levels are ``lambdas``): a gains-only job that trains just their
    #: gain and inv_gain rows
    add_lambdas: tuple[float, ...] = ()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AutoencoderJobConfig":
        """From a job's ``config.json``."""
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    def model_config(self) -> GainedHyperpriorConfig:
        from rdp_bench.codecs.gained_hyperprior import GainedHyperpriorConfig

        lambdas = tuple(sorted({*self.lambdas, *self.add_lambdas})) if self.add_lambdas else tuple(self.lambdas)
        return GainedHyperpriorConfig(self.N, self.M, lambdas)

    def trained_levels(self) -> list[int]:
        """The levels the steps draw from: the added ones, or every level."""
        lambdas = self.model_config().lambdas
        return [i for i, lam in enumerate(lambdas) if not self.add_lambdas or lam in self.add_lambdas]

    def validation_levels(self) -> list[int]:
        """Every level; in a gains-only job, the added levels and the existing ones beside them."""
        levels = self.model_config().levels
        return sorted({j for i in self.trained_levels() for j in (i - 1, i, i + 1) if 0 <= j < levels}
                      if self.add_lambdas else range(levels))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lambdas"] = list(self.lambdas)
        d["add_lambdas"] = list(self.add_lambdas)
        if not self.add_lambdas:  # the config.json of jobs started before the option still matches
            del d["add_lambdas"]
        return d


@dataclass(frozen=True)
class CDCJobConfig:
    #: the bundled rate weights λ (``training.cdc.DEFAULT_LAMBDAS``, from the rate table), lowest rate first
    lambdas: tuple[float, ...] = field(default_factory=_cdc_lambdas)
    steps: int = 1000  # per λ
    crop: int = 128
    batch: int = 8
    lr: float = 2e-4
    #: learning rate × 0.1 from this fraction of each phase on
    decay_at: float = 0.85
    joint: bool = False
    ema_decay: float = 0.995
    val_every: int = 500
    #: DDIM steps of the validation decode (the ``cdc`` codec's default)
    val_steps: int = 8
    save_every_s: float = 180.0
    threads: int = 2
    device: str = "cpu"
    seed: int = 0
    arch: str = "tiny"
    #: folder with ``cdc-tiny-l{λ}.safetensors`` (+ manifest) to start each phase from; "" = from scratch
    init_dir: str = str(WEIGHTS_DIR)

    def phases(self) -> list[tuple[str, float, int]]:
        return [(f"ft@{lam:g}", lam, self.steps) for lam in self.lambdas]

    def architecture(self) -> CDCConfig:
        from rdp_bench.training.cdc import ARCHITECTURES

        return ARCHITECTURES[self.arch]()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"lambdas": list(self.lambdas)}


@dataclass(frozen=True)
class HiFiCJobConfig:
    #: the bundled targets (their owner is the rate table)
    targets: tuple[float, ...] = field(default_factory=_hific_targets)
    crop: int = 128  # the MS-SSIM fallback needs > 96 px
    batch: int = 8
    #: λ_base of ``λ_base·bpp + k_M·MSE``; 0.25 is CompressAI's λ ≈ 0.0094 (k_M / λ_base), about 0.5 bpp
    base_lambda: float = 0.25
    base_steps: int = 10_000
    rate_steps: int = 1_200
    gan_steps: int = 800
    lr: float = 5e-4
    finetune_lr: float = 1e-4
    #: learning rate × 0.1 from this fraction of the base phase on
    decay_at: float = 0.85
    #: the base phase's generator input: "noise" (the noisy latent) or "ste" (rounded, straight-through)
    base_quantization: str = "noise"
    ema_decay: float = 0.999
    val_every: int = 1000
    save_every_s: float = 180.0
    threads: int = 2
    device: str = "cpu"
    seed: int = 0
    arch: str = "tiny"
    #: a HiFiC checkpoint (safetensors + manifest) whose weights start the base phase; "" = from scratch
    init: str = ""
    #: a folder of per-target checkpoints (``hific_tiny_0p20bpp`` ...): each target's first phase starts from
    #: its own there instead of from a base phase (so ``base_steps`` must be 0); "" = from the base phase
    init_targets: str = ""

    def phases(self) -> list[tuple[str, float | None, int]]:
        """(name, target, steps) in training order; a phase of 0 steps is left out (with ``init_targets``,
        ``rate_steps=0`` continues the GAN fine-tuning of the given checkpoints)."""
        out: list[tuple[str, float | None, int]] = [("base", None, self.base_steps)]
        for t in self.targets:
            out += [(f"rate@{t}", t, self.rate_steps), (f"gan@{t}", t, self.gan_steps)]
        return [p for p in out if p[2] > 0]

    def check(self) -> None:
        """ValueError for a plan that cannot run: nothing to train, or targets with nothing to start from."""
        if self.init_targets and self.base_steps:
            raise ValueError("--init-targets starts each target from its own checkpoint: use it with --base-steps 0")
        if not self.init_targets and not self.base_steps:
            raise ValueError("--base-steps 0 needs --init-targets (a folder of per-target checkpoints to start from)")
        if not self.phases():
            raise ValueError("nothing to train: give --rate-steps or --gan-steps more than 0")

    def architecture(self) -> HiFiCConfig:
        from rdp_bench.codecs.hific_arch import HiFiCConfig

        return HiFiCConfig.tiny() if self.arch == "tiny" else HiFiCConfig()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["targets"] = list(self.targets)
        if not d["init_targets"]:  # jobs started before the field existed resume with the same settings
            del d["init_targets"]
        return d


@dataclass(frozen=True)
class ScoreJobConfig:
    widths: tuple[int, ...] = (48, 96, 128)
    blocks: int = 1
    crop: int = 128
    batch: int = 8
    lr: float = 2e-4
    #: learning rate × 0.1 from this fraction of ``max_steps`` on
    decay_at: float = 0.85
    max_steps: int = 100_000
    ema_decay: float = 0.999
    seed: int = 0
    val_every: int = 1000
    #: KID on every n-th validation; 0 = never
    kid_every: int = 2
    #: the compressor's λ of the rate levels validated (by λ, so a level added below keeps them), and DDIM steps
    val_lambdas: tuple[float, ...] = (0.0018, 0.013)
    val_steps: int = 4
    save_every_s: float = 180.0
    threads: int = 2
    device: str = "cpu"
    #: the frozen compressor + D (a bundled hyperprior checkpoint); its sha256 goes into the state
    compressor: str = str(HYPERPRIOR_CHECKPOINT)
    #: bundled score-net checkpoint whose weights start a new job (fresh optimizer and EMA); "" = zero head
    init: str = ""

    def net_config(self, decoder_channels: int) -> ScoreNetConfig:
        from rdp_bench.codecs.corrdiff_net import ScoreNetConfig

        return ScoreNetConfig(widths=tuple(self.widths), blocks=self.blocks, decoder_channels=decoder_channels)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["widths"], d["val_lambdas"] = list(self.widths), list(self.val_lambdas)
        return d
