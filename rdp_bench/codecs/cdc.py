"""CDC: "Lossy Image Compression with Conditional Diffusion Models" (Yang & Mandt, NeurIPS 2023),
the x-parameterised variant, with real range coding and batched DDIM decoding.

Three registered codecs share this code:

* ``cdc``               -- the TINY checkpoints bundled in ``rdp_bench/weights/cdc/``, trained here on a
  shared CPU for minutes (see their manifests), declared with stable ids and sha256 in
  ``rdp_bench/codecs/zoo/cdc.py`` (``weights_dir=DIR`` looks for those files in DIR). They run offline; they are a small-scale stand-in,
  not the published model, and their numbers are far below the paper's.
* ``cdc-official``      -- the published weights (ρ = 0: β = 0.0128, 0.0064, 0.0032), ``{"ema": ...}``
  files from the Hugging Face repo ``rhyang/CDC_params`` (``x_param/``), loaded unchanged.
* ``cdc-official-lpips``-- the published ρ = 0.9 (LPIPS) weights (β = 0.2048, 0.1024, 0.0512); their
  LPIPS-VGG weights are skipped.

Official files are looked up in ``weights_dir`` (option), ``$RDP_BENCH_CDC_DIR``, and the torch hub cache
(``torch.hub.get_dir()/checkpoints/cdc``). A missing file is downloaded there only when its sha256 is pinned
in ``OFFICIAL_SHA256`` (none is yet: the server's ETag is not trusted as a checksum) and downloads are
allowed (``rdp_bench.offline``: not with ``RDP_BENCH_OFFLINE=1`` or ``--no-download``); otherwise the codec
is unavailable and says which file to put where.

Bitstream (inside the rdp-bench container, which records the image size; after the weights fingerprint
that ``Codec`` adds): ``pack_strings([settings, z, y])`` -- the sampler settings the decode depends on
(version, DDIM steps, γ; written by the encoder, so a stream decodes the same under any decoder options),
the hyper-latent ẑ range-coded under the FlexiblePrior's per-channel CDF tables, and the latent ŷ under
the Gaussian N(μ, σ) from the hyper-decoder (σ ≥ 0.1). The image is reflect-padded to a multiple of 64.

Decoding: ŷ -> multi-scale context -> DDIM (η = 0) with ``steps`` steps (default 8 for ``cdc``, 65 for
the official models as in CDC's test script) from x_T = γ·N(0, I), γ = 0.8, x̂0 clamped to [-1, 1]. The
noise comes from a CPU generator seeded with CRC32 of the image's y string, so the same file always
decodes to the same image on a given device, whatever the batch; ``--seeds K`` draws K samples per stream
(``stream_noise_seed``). Images of the same padded size are
decoded as one UNet batch, at most ``max_batch_pixels`` pixels per batch (a 2048x1365 image is decoded
alone). The hyper path and all entropy coding run on CPU in float32.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch

from rdp_bench.codecs.base import AMP_OPTION, Availability, Codec, CodecUnavailable, Option, RatePoint
from rdp_bench.codecs.batching import bucket, chunks
from rdp_bench.codecs.zoo import WeightsEntry
from rdp_bench.codecs.zoo.cdc import TABLE
from rdp_bench.container import BitstreamError, Container
# the one download policy; OFFLINE_ENV stays importable from here
from rdp_bench.offline import OFF_REASON, OFFLINE_ENV, downloads_allowed, offline_miss  # noqa: F401

from rdp_bench.bundled import CDC_WEIGHTS_DIR as WEIGHTS_DIR
HF_URL = "https://huggingface.co/rhyang/CDC_params/resolve/main/x_param/{name}"
CDC_DIR_ENV = "RDP_BENCH_CDC_DIR"
NOISE_SCALE = 0.8
#: pixels per UNet batch (one 2048x2048 image); bigger batches are split, big images go alone
MAX_BATCH_PIXELS = 2048 * 2048
SETTINGS_VERSION = 1
#: the settings string of a payload: version, DDIM steps, γ (float64, so the decoder uses the encoder's exact value)
_SETTINGS = struct.Struct(">BHd")
#: most DDIM steps a stream may ask for (each is a UNet pass at image size): 1000, the usual DDPM T
MAX_STEPS = 1000
#: largest initial-noise scale a stream may ask for (the published models use 0.8 and 1.0)
MAX_GAMMA = 10.0


def pack_settings(steps: int, gamma: float) -> bytes:
    return _SETTINGS.pack(SETTINGS_VERSION, steps, gamma)


def unpack_settings(data: bytes) -> tuple[int, float]:
    """(steps, γ) of a payload's settings string; ``BitstreamError`` for one this build cannot use."""
    if len(data) != _SETTINGS.size:
        raise BitstreamError(f"CDC settings have {len(data)} bytes, expected {_SETTINGS.size}")
    version, steps, gamma = _SETTINGS.unpack(data)
    if version != SETTINGS_VERSION:
        raise BitstreamError(f"CDC settings version {version} (this build reads {SETTINGS_VERSION})")
    if not 1 <= steps <= MAX_STEPS:
        raise BitstreamError(f"CDC stream asks for {steps} DDIM steps (1..{MAX_STEPS})")
    if not (math.isfinite(gamma) and 0.0 <= gamma <= MAX_GAMMA):
        raise BitstreamError(f"CDC stream asks for noise scale {gamma!r} (0..{MAX_GAMMA:g})")
    return steps, gamma


def official_filename(beta: float, rho: float) -> str:
    aux = "aux0.0" if rho == 0 else f"aux{rho:g}lpips"
    return f"image-l2-use_weight5-vimeo-d64-t8193-b{beta:g}-x-cosine-01-float32-{aux}_2.pt"


def official_search_dirs(weights_dir: str | Path | None = None) -> list[Path]:
    dirs = [Path(weights_dir)] if weights_dir else []
    if os.environ.get(CDC_DIR_ENV):
        dirs.append(Path(os.environ[CDC_DIR_ENV]))
    dirs.append(Path(torch.hub.get_dir()) / "checkpoints" / "cdc")
    return dirs


#: sha256 of the official files, pinned here and checked after every download. The Hub's ETag is the
#: server's word, not a checksum we can hold it to, and no published list of these sums was found, so
#: this is empty: the files are not downloaded automatically; put them in place by hand (the sha256 of
#: the file loaded is recorded as the checkpoint id). Add a file's sum here to enable its download.
OFFICIAL_SHA256: dict[str, str] = {}


def _hub_sha256(url: str, timeout: float = 10.0) -> str:
    """The sha256 the Hub publishes for an LFS file (``X-Linked-Etag`` of the resolve URL)."""
    import urllib.request

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # the header is on the first response
            return None

    opener = urllib.request.build_opener(_NoRedirect)
    req = urllib.request.Request(url, method="HEAD")
    try:
        resp = opener.open(req, timeout=timeout)
        headers = resp.headers
    except urllib.error.HTTPError as exc:  # 302 arrives as an HTTPError without redirects
        headers = exc.headers
    etag = (headers.get("X-Linked-Etag") or headers.get("ETag") or "").strip('"').removeprefix("W/").strip('"')
    if len(etag) != 64:
        raise CodecUnavailable(f"the Hub did not publish a sha256 for {url}")
    return etag


_HUB_PROBES: dict[str, str] = {}


def _hub_problem(filename: str) -> str:
    """'' when the Hub answers for ``filename`` with a sha256, else why not (probed once per process)."""
    if filename not in _HUB_PROBES:
        try:
            _hub_sha256(HF_URL.format(name=filename), timeout=3.0)
            _HUB_PROBES[filename] = ""
        except Exception as exc:  # offline, DNS failure, no sha256 published, ...
            _HUB_PROBES[filename] = f"{type(exc).__name__}: {exc}"
    return _HUB_PROBES[filename]


class _Loaded:
    """A model on the codec's device, its CPU coder, and the weights' identity."""

    def __init__(self, model: Any, coder: Any, sha256: str, source: str) -> None:
        self.model, self.coder, self.sha256, self.source = model, coder, sha256, source


class _CDCBase(Codec):
    wants_gpu = True
    seeded_decode = True
    supports_amp = True
    default_steps: ClassVar[int] = 65
    OPTIONS: ClassVar[dict[str, Option]] = {
        "steps": Option(int, None, "DDIM steps the encoder writes into the stream (default: 8 for cdc, 65 for "
                        "the official models); the decoder follows the stream", minimum=1, maximum=MAX_STEPS),
        "gamma": Option(float, NOISE_SCALE, "scale of the initial noise x_T = gamma * N(0, I), written into the "
                        "stream", minimum=0, maximum=MAX_GAMMA),
        "max_batch_pixels": Option(int, MAX_BATCH_PIXELS, "most batch x H x W pixels per UNet call", minimum=1),
        "amp": AMP_OPTION,
        "weights_dir": Option(Path, None, "folder searched first for the checkpoint files"),
    }

    def __init__(self, device: str | None = None, steps: int | None = None, gamma: float = NOISE_SCALE,
                 max_batch_pixels: int = MAX_BATCH_PIXELS, amp: str | None = None,
                 weights_dir: str | Path | None = None, **options: Any) -> None:
        super().__init__(device, **options)
        self.steps = int(steps) if steps is not None else self.default_steps
        if self.steps < 1:
            raise ValueError(f"{self.name}: steps must be >= 1, got {self.steps}")
        self.gamma = float(gamma)
        self.max_batch_pixels = int(max_batch_pixels)
        self.amp = amp
        self.weights_dir = Path(weights_dir) if weights_dir else None
        self._loaded: dict[str, _Loaded] = {}

    # --- what subclasses provide ---------------------------------------------------------------
    def _load(self, rate_point: RatePoint) -> _Loaded:
        raise NotImplementedError

    # --- shared --------------------------------------------------------------------------------
    def model(self, rate_point: RatePoint) -> _Loaded:
        if rate_point.label not in self._loaded:
            self._loaded[rate_point.label] = self._load(rate_point)
        return self._loaded[rate_point.label]

    def _finish(self, model: Any, sha256: str, source: str) -> _Loaded:
        from rdp_bench.codecs.diffusion.compressor import LatentCoder

        model = model.to("cpu", torch.float32).eval()
        coder = LatentCoder(model.context_fn)  # CPU float32 copies of the hyper path and the prior
        return _Loaded(model.to(self.device), coder, sha256, source)

    def decode_settings(self) -> dict[str, Any]:
        return {"steps": self.steps, "gamma": self.gamma, "eta": 0.0, "amp": self.amp if self.device.type == "cuda" else None}

    def checkpoint_id(self, rate_point: RatePoint) -> str:
        """sha256 of the weights combined with the decode settings (steps, γ), which change the output."""
        settings = json.dumps(self.decode_settings(), sort_keys=True)
        return hashlib.sha256(f"{self.weights_sha256(rate_point)}|{settings}".encode()).hexdigest()

    def provenance(self) -> dict[str, Any]:
        return {
            "decode": {**self.decode_settings(), "noise_seed": "crc32 of the y string", "x0_clamp": [-1, 1],
                       "max_batch_pixels": self.max_batch_pixels},
            "weights": {p.label: {k: v for k, v in p.params.items()} for p in self.rate_points()},
        }

    def _pad_multiple(self, loaded: _Loaded) -> int:
        return loaded.model.config.pad_multiple

    @torch.no_grad()
    def encode_payloads(self, images: Sequence[torch.Tensor], rate_point: RatePoint) -> list[tuple[bytes, dict]]:
        from rdp_bench.codecs.entropy import pack_strings, pad_to_multiple

        loaded = self.model(rate_point)
        comp = loaded.model.context_fn
        out = []
        for img in images:
            h, w = img.shape[-2:]
            x, _ = pad_to_multiple(img.unsqueeze(0).float(), self._pad_multiple(loaded))
            x = x.to(self.device) * 2.0 - 1.0
            y = comp.analysis(x)
            z = comp.hyper_analysis(y)
            z_strings, y_strings, _, bits = loaded.coder.encode(y, z)
            payload = pack_strings([pack_settings(self.steps, self.gamma), z_strings[0], y_strings[0]])
            out.append((payload, {"bpp_estimated": float(bits[0]) / (h * w)}))
        return out

    @torch.no_grad()
    def decode_payloads(self, records: Sequence[Container], seed: int = 0) -> list[torch.Tensor]:
        from rdp_bench.codecs.diffusion.sampler import stream_noise_seed
        from rdp_bench.codecs.entropy import unpack_strings

        results: list[torch.Tensor | None] = [None] * len(records)
        # entropy decoding, per image on CPU
        for rate_id, idxs in bucket(records, lambda rec: rec.rate_id).items():
            rate_point = self.rate_point(rate_id)
            loaded = self.model(rate_point)
            m = self._pad_multiple(loaded)
            factor = loaded.model.config.compressor.pad_multiple
            groups: dict[tuple[int, int, int, float], list[tuple[int, torch.Tensor, int]]] = {}
            for i in idxs:
                rec = records[i]
                settings, z_string, y_string = unpack_strings(rec.payload, expected_count=3)
                steps, gamma = unpack_settings(settings)
                hp, wp = -(-rec.height // m) * m, -(-rec.width // m) * m
                y_hat = loaded.coder.decode([z_string], [y_string], (hp // factor, wp // factor))
                groups.setdefault((hp, wp, steps, gamma), []).append((i, y_hat, stream_noise_seed(y_string, seed)))
            for (hp, wp, steps, gamma), items in groups.items():
                for part in chunks(range(len(items)), hp * wp, self.max_batch_pixels):
                    chunk = [items[k] for k in part]
                    y_hat = torch.cat([c[1] for c in chunk]).to(self.device)
                    x = self.sample(loaded.model, y_hat, [c[2] for c in chunk], (hp, wp), steps, gamma)
                    for (i, _, _), img in zip(chunk, x):
                        rec = records[i]
                        results[i] = ((img[:, : rec.height, : rec.width].float().cpu() + 1.0) / 2.0).clamp(0, 1)
        return [r for r in results if r is not None]

    def sample(self, model: Any, y_hat: torch.Tensor, seeds: Sequence[int], size: tuple[int, int],
               steps: int, gamma: float) -> torch.Tensor:
        """DDIM decode (``steps`` steps from x_T = γ·N(0, I)) of a batch of ŷ of one padded size -> images in
        [-1, 1] (padded)."""
        from rdp_bench.codecs.diffusion.sampler import DDIMSampler

        context = model.context_fn.synthesis(y_hat)
        sampler = DDIMSampler(model.train_alphas_cumprod, steps, eta=0.0)
        b = y_hat.shape[0]
        x = sampler.initial_noise((b, 3, *size), list(seeds), gamma, device=self.device)
        for t, t_prev in sampler.timesteps:
            with self._autocast():
                x0 = model.denoise(x, sampler.time_input(t, b, self.device), context)
            x = sampler.step(x, x0.float().clamp(-1.0, 1.0), t, t_prev)
        return x

    def _autocast(self):
        import contextlib

        if self.amp and self.device.type == "cuda":
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[self.amp]
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()


# --- bundled tiny checkpoints ------------------------------------------------------------------

class CDC(_CDCBase):
    name = "cdc"
    description = ("CDC (NeurIPS 2023) x-param diffusion codec; bundled TINY checkpoints trained here on CPU "
                   "(not the official weights: see cdc-official)")
    default_steps = 8
    #: the rate points (stable ids, files, sha256); a class attribute so a test can run another table
    weights_table: ClassVar[tuple[WeightsEntry, ...]] = TABLE

    def _dir(self) -> Path:
        return self.weights_dir or WEIGHTS_DIR

    @classmethod
    def availability(cls) -> Availability:
        if not any((WEIGHTS_DIR / e.file).is_file() for e in cls.weights_table):
            return Availability(False, f"no tiny CDC checkpoints in {WEIGHTS_DIR}: put "
                                       f"{', '.join(e.file for e in cls.weights_table)} there (or `rdp-bench train cdc`)")
        return Availability(True)

    def rate_table(self) -> list[RatePoint]:
        # params as before the table (file name, not path): rows written earlier keep the same rate_params
        return [RatePoint(e.label, {**e.params, "file": e.file, "sha256": e.sha256}, id=e.id) for e in self.weights_table]

    def rate_points(self) -> list[RatePoint]:
        return [p for p in self.rate_table() if not self.rate_point_problem(p)]

    def rate_point_problem(self, rate_point: RatePoint) -> str:
        if (self._dir() / rate_point.params["file"]).is_file():
            return ""
        entry = next(e for e in self.weights_table if e.id == rate_point.id)
        return entry.missing(self.name, self._dir()) + " (bundled with rdp-bench, or `rdp-bench train cdc`)"

    def weights_sha256(self, rate_point: RatePoint) -> str:
        from rdp_bench.codecs.checkpoints import file_sha256

        if rate_point.params.get("sha256"):
            return rate_point.params["sha256"]
        path = self._dir() / rate_point.params["file"]  # unpinned (a test's table): the file's own sum
        return file_sha256(path) if path.is_file() else "missing"

    def _load(self, rate_point: RatePoint) -> _Loaded:
        from rdp_bench.codecs.checkpoints import load_state_dict, read_manifest
        from rdp_bench.codecs.diffusion.model import CDCConfig, CDCModel, load_cdc_weights

        self._runnable(rate_point)
        path = self._dir() / rate_point.params["file"]
        manifest = read_manifest(path)
        config = CDCConfig.from_dict(manifest.get("config") or manifest["architecture"])
        try:
            state = load_state_dict(path, expected_sha256=rate_point.params.get("sha256"))
        except ValueError as exc:  # not the file the table pins: never run other weights under its id
            raise CodecUnavailable(f"{self.name}: {exc} (the sha256 pinned in rdp_bench/codecs/zoo/cdc.py)") from exc
        model = load_cdc_weights(CDCModel(config), state)
        return self._finish(model, self.weights_sha256(rate_point), str(path))


# --- official checkpoints ----------------------------------------------------------------------

class CDCOfficial(_CDCBase):
    name = "cdc-official"
    description = "CDC (NeurIPS 2023) official x-param weights, ρ=0 (rhyang/CDC_params on the Hugging Face Hub)"
    rho: ClassVar[float] = 0.0
    betas: ClassVar[tuple[float, ...]] = (0.0128, 0.0064, 0.0032)  # low rate first
    _sha_cache: ClassVar[dict[str, str]] = {}

    @classmethod
    def files(cls) -> list[str]:
        return [official_filename(b, cls.rho) for b in cls.betas]

    @classmethod
    def find(cls, filename: str, weights_dir: str | Path | None = None) -> Path | None:
        for d in official_search_dirs(weights_dir):
            if (d / filename).is_file():
                return d / filename
        return None

    @classmethod
    def availability(cls) -> Availability:
        if any(cls.find(f) for f in cls.files()):
            return Availability(True)
        where = official_search_dirs()[-1]
        put = f"put {', '.join(cls.files())} (from {HF_URL.format(name='')}) in {where} or ${CDC_DIR_ENV}"
        if not downloads_allowed():
            return Availability(False, f"official CDC weights not found and {OFF_REASON}; {put}")
        if any(f not in OFFICIAL_SHA256 for f in cls.files()):
            return Availability(False, "official CDC weights not downloaded yet, and rdp-bench pins no sha256 to "
                                       f"verify a download against, so it does not fetch them; {put}")
        from rdp_bench.offline import network_probes_allowed

        if not network_probes_allowed():  # listing: say what is missing without asking the Hub
            return Availability(False, f"official CDC weights not downloaded yet (`rdp-bench run` fetches them from the "
                                       f"Hub when online); or {put}")
        problem = _hub_problem(cls.files()[0])
        if problem:
            return Availability(False, f"official CDC weights not found and the Hub is unreachable ({problem}); {put}")
        return Availability(True)

    def rate_points(self) -> list[RatePoint]:
        return [RatePoint(f"b{b:g}", {"beta": b, "rho": self.rho, "file": official_filename(b, self.rho)})
                for b in self.betas]

    def _path(self, rate_point: RatePoint) -> Path:
        from rdp_bench.datasets.download import DownloadError, download

        name = rate_point.params["file"]
        found = self.find(name, self.weights_dir)
        if found:
            return found
        target = (self.weights_dir or official_search_dirs()[-1]) / name
        url = HF_URL.format(name=name)
        if not downloads_allowed():
            raise CodecUnavailable(offline_miss(self.name, name, target.parent, url))
        if name not in OFFICIAL_SHA256:
            raise CodecUnavailable(f"{self.name}: {name} not found, and no sha256 is pinned for it, so it is not "
                                   f"downloaded; put it in {target.parent} or ${CDC_DIR_ENV} (from {url})")
        try:
            download(url, target, expected_sha256=OFFICIAL_SHA256[name])
        except (DownloadError, OSError) as exc:
            raise CodecUnavailable(
                f"{self.name}: could not download {url} ({exc}); put the file in {target.parent} or ${CDC_DIR_ENV}"
            ) from exc
        return target

    def weights_sha256(self, rate_point: RatePoint) -> str:
        from rdp_bench.codecs.checkpoints import file_sha256

        path = self._path(rate_point)
        key = str(path)
        if key not in self._sha_cache:
            self._sha_cache[key] = file_sha256(path)
        return self._sha_cache[key]

    def _load(self, rate_point: RatePoint) -> _Loaded:
        from rdp_bench.codecs.checkpoints import load_state_dict
        from rdp_bench.codecs.diffusion.model import CDCConfig, CDCModel, load_cdc_weights

        path = self._path(rate_point)
        if path.suffix == ".safetensors":
            raw = load_state_dict(path, dtype=torch.float32)
        else:  # CDC's {"ema": ...} file: tensors only, never arbitrary pickles
            raw = torch.load(path, map_location="cpu", weights_only=True)
        model = load_cdc_weights(CDCModel(CDCConfig.official()), raw)
        return self._finish(model, self.weights_sha256(rate_point), str(path))


class CDCOfficialLPIPS(CDCOfficial):
    name = "cdc-official-lpips"
    description = "CDC (NeurIPS 2023) official x-param weights, ρ=0.9 LPIPS-trained (rhyang/CDC_params)"
    rho = 0.9
    betas = (0.2048, 0.1024, 0.0512)
