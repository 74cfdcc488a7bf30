"""Seeded bitstream fuzzer, run by ``test_fuzz.py`` in a subprocess (a crash there cannot take pytest down).

``python tests/fuzz_bitstreams.py`` prints one JSON object: per codec the number of cases, how many were
refused with ``BitstreamError`` and how many decoded to an image of exactly the header's size, every
other outcome (any other exception, a wrong shape) under ``failures``, the slowest case, and the peak
resident memory of the process above its level before fuzzing.

Cases:
* classical codecs: single-byte changes and truncations of the payload (biased to the first bytes,
  where the headers are) inside a CRC-valid container;
* learned codecs: CRC-valid containers with payload byte changes and truncations, plus mutations of
  the inner framing, the hyper-latent string and (CorrDiff) the step/γ header repacked with a valid
  inner CRC, and one latent-string change that decodes all the way. ``msillm`` runs on a randomly
  initialised model of its real architecture (NeuralCompression's full-size ``HiFiCAutoencoder``,
  181 M parameters) under one release file name (``quality_3``, rate id 2): the official weights are
  not here, and weights decide no check a stream goes through (string counts, grid sizes, latent
  range are the architecture's). It is fuzzed last, since its 0.7 GB of weights raise the process's
  peak memory, which the other codecs' memory check is measured against. CompressAI's zoo codecs
  (``ZOO``: one per architecture) run the same way on randomly initialised modules of their
  architectures as qualities 1 and 2;
* crafted sizes: every codec's stream under headers from 4K x 4K to 64K x 64K and a few pixels off,
  and classical streams that declare a larger picture than their container (a 60000 x 60000 JPEG);
* framing (format v2, CRC-valid): every other codec's id and ids no codec has (refused), other rate ids
  (refused, or an image of the header's size), unknown versions (refused), and the same stream in the
  v1 layout (decodes).
"""

from __future__ import annotations

import faulthandler
import hashlib
import io
import json
import os
import resource
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import photo_tensor, raw_v2_stream, v1_stream  # noqa: E402
from rdp_bench.codecs import CODEC_IDS, codec_availability, get_codec  # noqa: E402
from rdp_bench.codecs.entropy import pack_strings, unpack_strings  # noqa: E402
from rdp_bench.container import BitstreamError, Container  # noqa: E402

CLASSICAL = ("jpeg", "webp", "avif", "avif420", "jxl", "jpeg2000", "bpg", "bpg444")
LEARNED = ("hific", "cdc", "hyperprior", "corrdiff", "corrdiff-e2e", "msillm")
CLASSICAL_MUTATIONS = int(os.environ.get("RDP_FUZZ_CLASSICAL", 2000))
#: CompressAI's zoo, one codec per architecture, on randomly initialised models (see ``random_zoo``); the
#: ``-msssim`` codecs are the same classes with other weights files, so they add no decoding path
ZOO = ("bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean", "mbt2018", "cheng2020-anchor",
       "cheng2020-attn")
LEARNED_MUTATIONS = int(os.environ.get("RDP_FUZZ_LEARNED", 200))
CRAFTED_SIZES = ((4096, 4096), (8192, 8192), (16384, 16384), (32768, 32768), (65536, 65536))
SEED = 20240612
#: a case still running after this many seconds is a hang: the process prints where it is stuck
#: (faulthandler, which also sees inside C extensions such as the rANS coder) and exits with status 1
CASE_TIMEOUT = float(os.environ.get("RDP_FUZZ_CASE_TIMEOUT", 120))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


class Tally:
    def __init__(self) -> None:
        self.cases = self.refused = self.decoded = 0
        self.failures: list[str] = []
        self.slowest = 0.0

    def run(self, codec, bitstream: bytes, label: str, max_seconds: float | None = None) -> str:
        """Decode one case; returns 'refused', 'image' or 'failure'."""
        try:
            rec = Container.unpack(bitstream)
            want = (3, rec.height, rec.width)
        except BitstreamError:
            want = None
        self.cases += 1
        t0 = time.perf_counter()
        outcome = "failure"
        faulthandler.dump_traceback_later(CASE_TIMEOUT, exit=True)  # a hang ends the run, saying where
        try:
            images = codec.decode([bitstream])
        except BitstreamError:
            outcome = "refused"
            self.refused += 1
        except Exception as exc:  # the point of the fuzzer: anything else is a bug
            self.failures.append(f"{label}: {type(exc).__name__}: {exc}"[:300])
        else:
            if want is not None and len(images) == 1 and tuple(images[0].shape) == want:
                outcome = "image"
                self.decoded += 1
            else:
                self.failures.append(f"{label}: decoded {[tuple(i.shape) for i in images]}, header {want}")
        finally:
            faulthandler.cancel_dump_traceback_later()
        took = time.perf_counter() - t0
        self.slowest = max(self.slowest, took)
        if max_seconds is not None and took > max_seconds:
            self.failures.append(f"{label}: {outcome} after {took:.3f}s (limit {max_seconds}s)")
        return outcome

    def summary(self) -> dict:
        return {"cases": self.cases, "refused": self.refused, "decoded": self.decoded,
                "failures": self.failures[:20], "failure_count": len(self.failures),
                "slowest_s": round(self.slowest, 4)}


def _byte_mutations(payload: bytes, rng: np.random.Generator, n: int):
    """n single-byte changes and truncations; half of the positions fall in the first 64 bytes."""
    for k in range(n):
        if k % 5 == 4:  # a truncation
            yield f"truncate@{(cut := int(rng.integers(0, len(payload))))}", payload[:cut]
            continue
        head = min(64, len(payload))
        pos = int(rng.integers(0, head)) if k % 2 == 0 else int(rng.integers(0, len(payload)))
        value = (payload[pos] + int(rng.integers(1, 256))) % 256
        yield f"byte{pos}={value}", payload[:pos] + bytes([value]) + payload[pos + 1:]


def _with_payload(rec: Container, payload: bytes, height: int | None = None, width: int | None = None) -> bytes:
    return Container(rec.codec, rec.rate_id, height or rec.height, width or rec.width, payload).pack()


def _crafted_sizes(codec, tally: Tally, rec: Container) -> None:
    """The same stream under headers that claim other sizes: refused, fast."""
    sizes = list(CRAFTED_SIZES) + [(rec.height + 64, rec.width), (rec.height, rec.width + 64),
                                   (rec.height + 64, rec.width + 64), (2 * rec.height, 2 * rec.width)]
    for h, w in sizes:
        outcome = tally.run(codec, _with_payload(rec, rec.payload, h, w), f"header {h}x{w}", max_seconds=2.0)
        if outcome != "refused":
            tally.failures.append(f"header {h}x{w} was not refused ({outcome})")


def _framing(codec, tally: Tally, rec: Container) -> None:
    """CRC-valid containers whose framing lies about the codec, the rate point or the format version."""
    own = CODEC_IDS[codec.name]
    shape = (rec.height, rec.width)
    for cid in [*(i for i in CODEC_IDS.values() if i != own), 0, max(CODEC_IDS.values()) + 1, 0xFFFF]:
        if tally.run(codec, raw_v2_stream(cid, rec.rate_id, *shape, rec.payload), f"codec id {cid}") != "refused":
            tally.failures.append(f"a stream with codec id {cid} was not refused by {codec.name} (id {own})")
    for rid in (0, 1, rec.rate_id + 1, 999, 0xFFFF):  # refused, or decoded as that rate point: both fine
        tally.run(codec, raw_v2_stream(own, rid, *shape, rec.payload), f"rate id {rid}", max_seconds=30.0)
    for version in (0, 3, 255):
        if tally.run(codec, raw_v2_stream(own, rec.rate_id, *shape, rec.payload, version), f"v{version}") != "refused":
            tally.failures.append(f"a container of version {version} was not refused")
    if tally.run(codec, v1_stream(codec.name, rec.rate_id, *shape, rec.payload), "v1 layout") != "image":
        tally.failures.append("the same stream in the v1 layout did not decode")


def _jpeg_declaring(height: int, width: int) -> bytes:
    """A small real JPEG whose SOF0 is patched to declare ``height`` x ``width``."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(buf, format="JPEG", quality=50)
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 7] = height.to_bytes(2, "big")
    data[sof + 7 : sof + 9] = width.to_bytes(2, "big")
    return bytes(data)


def fuzz_classical(name: str, rng: np.random.Generator, image: torch.Tensor) -> dict:
    codec = get_codec(name, device="cpu")
    point = codec.rate_points()[len(codec.rate_points()) // 2]
    clean = codec.encode([image], point)[0]
    rec = Container.unpack(clean)
    tally = Tally()
    assert tally.run(codec, clean, "clean") == "image"
    rss0 = _rss_mb()
    for label, payload in _byte_mutations(rec.payload, rng, CLASSICAL_MUTATIONS):
        tally.run(codec, _with_payload(rec, payload), label, max_seconds=10.0)
    _crafted_sizes(codec, tally, rec)
    _framing(codec, tally, rec)
    # a real stream of a larger picture inside this container: refused before it is decoded
    big = codec.encode([torch.full((3, 256, 384), 0.5)], point)[0]
    outcome = tally.run(codec, _with_payload(rec, Container.unpack(big).payload), "256x384 stream", max_seconds=0.5)
    if outcome != "refused":
        tally.failures.append(f"a 256x384 stream in a {rec.height}x{rec.width} container: {outcome}")
    if name == "jpeg":
        for h, w in ((60000, 60000), (rec.height, rec.width + 8)):
            outcome = tally.run(codec, _with_payload(rec, _jpeg_declaring(h, w)), f"SOF {h}x{w}", max_seconds=0.5)
            if outcome != "refused":
                tally.failures.append(f"a JPEG declaring {h}x{w}: {outcome}")
    return {**tally.summary(), "rss_growth_mb": round(_rss_mb() - rss0, 1)}


def _inner_mutations(parts: list[bytes], rng: np.random.Generator, n: int, hyper_index: int):
    """Payloads with a valid inner CRC: framing, hyper-latent string and (CorrDiff) header changes."""
    for k in range(n):
        new = list(parts)
        kind = k % 4
        if kind == 0:  # one byte of the hyper-latent string
            s = bytearray(new[hyper_index])
            pos = int(rng.integers(0, len(s)))
            s[pos] = (s[pos] + int(rng.integers(1, 256))) % 256
            new[hyper_index] = bytes(s)
        elif kind == 1:  # the hyper-latent string shortened or extended
            s = new[hyper_index]
            new[hyper_index] = s[: int(rng.integers(0, len(s)))] if k % 8 == 1 else s + bytes(rng.integers(0, 256, 8, dtype=np.uint8))
        elif kind == 2 and hyper_index == 2:  # CorrDiff header: version, steps, granularity, precision, tile
            h = bytearray(new[0])
            pos = int(rng.integers(0, len(h)))
            h[pos] = (h[pos] + int(rng.integers(1, 256))) % 256
            new[0] = bytes(h)
        else:  # string count / order
            new = new[::-1] if k % 8 < 4 else new + [b"\x00"]
        yield f"inner{kind}.{k}", new


def random_msillm(folder: Path):
    """``msillm`` with a randomly initialised full-size HiFiC model (MS-ILLM's architecture) as its
    ``quality_3`` model. The file under the release name only gives the rate point (id 2) and the
    checkpoint id; the model is put in the codec's model cache, so the file is never loaded."""
    from rdp_bench.codecs.hific_arch import HiFiCAutoencoder, HiFiCConfig
    from rdp_bench.codecs.msillm import MSILLM
    from rdp_bench.codecs.zoo.msillm import TABLE

    entry = next(e for e in TABLE if e.label == "quality_3")
    path = Path(folder) / entry.file
    path.write_bytes(b"stands in for the release file; the model is injected by fuzz_bitstreams.random_msillm\n")
    codec = MSILLM(device="cpu", checkpoint=path)
    point = codec.rate_point(entry.label)
    assert codec.rate_id(point) == entry.id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        codec._models[point.label] = HiFiCAutoencoder(HiFiCConfig()).eval()  # the default = NeuralCompression's
    return codec


def random_zoo(name: str, folder: Path):
    """A CompressAI zoo codec whose quality-1 and quality-2 models (rate ids 0 and 1: the stream's own and
    the one a framing case switches to) are randomly initialised modules of its architecture (``build``),
    put in the codec's coder cache; torch's hub folder is pointed at ``folder``, where empty files stand
    in for their weights, so nothing is downloaded or loaded."""
    from rdp_bench.codecs import codec_class
    from rdp_bench.codecs.hyperprior_coder import HyperpriorCoder

    torch.hub.set_dir(str(folder / "hub"))
    cls = codec_class(name)
    codec = cls(device="cpu")
    for entry in cls.table()[:2]:
        path = Path(torch.hub.get_dir()) / "checkpoints" / entry.file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED + entry.id)
            model = codec.build(entry).eval().requires_grad_(False)
        codec._coders[entry.id] = HyperpriorCoder(codec.parts(model))
    # the random models' fingerprints (the empty stand-in files fail the zoo's sha256 check, rightly)
    codec.weights_sha256 = lambda point: hashlib.sha256(f"random-init {point.id}".encode()).hexdigest()
    return codec


def fuzz_learned(name: str, rng: np.random.Generator, image: torch.Tensor, codec=None) -> dict:
    opts = {"steps": 1} if name in ("cdc", "corrdiff") else {}
    codec = codec or get_codec(name, device="cpu", **opts)
    clean = codec.encode([image], codec.rate_points()[0])[0]
    rec = Container.unpack(clean)
    tally = Tally()
    assert tally.run(codec, clean, "clean") == "image"
    rss0 = _rss_mb()
    # the payload: the weights fingerprint, then the codec's strings (CDC: [settings, z, y])
    fingerprint = codec.weights_fingerprint(codec.rate_point(rec.rate_id))
    parts = unpack_strings(rec.payload[len(fingerprint):])
    pack = lambda new: fingerprint + pack_strings(new)  # noqa: E731
    if name.startswith("corrdiff"):  # [header, γ, hyperprior payload [z, y]]: mutate inside the ŷ stream too
        parts = parts[:2] + unpack_strings(parts[2])
        pack = lambda new: fingerprint + pack_strings(new[:2] + [pack_strings(new[2:])])  # noqa: E731
    hyper_index = len(parts) - 2  # [..., z, y]
    n_inner = LEARNED_MUTATIONS // 4
    for label, payload in _byte_mutations(rec.payload, rng, LEARNED_MUTATIONS - n_inner - 1):
        tally.run(codec, _with_payload(rec, payload), label, max_seconds=30.0)
    for label, new in _inner_mutations(parts, rng, n_inner, hyper_index):
        tally.run(codec, _with_payload(rec, pack(new)), label, max_seconds=30.0)
    # one latent-string change with every checksum valid: decodes to some image of the header's size
    y = bytearray(parts[-1])
    y[len(y) // 2] ^= 0x5A
    tally.run(codec, _with_payload(rec, pack(parts[:-1] + [bytes(y)])), "latent byte", max_seconds=60.0)
    _crafted_sizes(codec, tally, rec)
    _framing(codec, tally, rec)
    return {**tally.summary(), "rss_growth_mb": round(_rss_mb() - rss0, 1)}


def main() -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    rng = np.random.default_rng(SEED)
    small = photo_tensor(48, 64, seed=1)  # classical: tiny, so thousands of decodes stay cheap
    tile = photo_tensor(64, 64, seed=2)  # learned: one 64x64 tile (their padding unit)
    report: dict = {"seed": SEED, "codecs": {}, "skipped": {}}
    t0 = time.perf_counter()
    scratch = tempfile.TemporaryDirectory(prefix="rdp-fuzz-")
    os.environ["RDP_BENCH_OFFLINE"] = "1"  # nothing here may download
    learned = tuple(n for n in LEARNED if n != "msillm")
    for name in CLASSICAL + learned + ZOO + ("msillm",):  # msillm last (its peak memory; see the docstring)
        status = codec_availability(name)
        if not status and name != "msillm" and name not in ZOO:  # those run on random models
            report["skipped"][name] = status.reason
            continue
        t = time.perf_counter()
        print(f"fuzzing {name}", file=sys.stderr, flush=True)  # a hang's traceback follows the codec's name
        try:
            if name in CLASSICAL:
                result = fuzz_classical(name, rng, small)
            elif name == "msillm":
                result = fuzz_learned(name, rng, tile, codec=random_msillm(Path(scratch.name)))
                result["model"] = "random init, full-size HiFiCAutoencoder (MS-ILLM's architecture), as quality_3"
            elif name in ZOO:
                result = fuzz_learned(name, rng, tile, codec=random_zoo(name, Path(scratch.name)))
                result["model"] = "random init, CompressAI's module of this architecture, as quality 1"
            else:
                result = fuzz_learned(name, rng, tile)
        except Exception:
            result = {"failure_count": 1, "failures": [traceback.format_exc()[-1500:]]}
        result["seconds"] = round(time.perf_counter() - t, 2)
        report["codecs"][name] = result
    scratch.cleanup()
    report["seconds"] = round(time.perf_counter() - t0, 2)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 2)
    return report


if __name__ == "__main__":
    print(json.dumps(main()))
