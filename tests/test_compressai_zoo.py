"""CompressAI zoo baselines on HyperpriorCoder: randomly initialised models of the real architectures
(smallest quality, 40x56 images padded to one 64x64 tile), saved where the zoo's files go, then through
our codec interface: encode -> bytes -> decode. Our strings are CompressAI's ``compress()`` strings and our
decoded image is CompressAI's ``decompress()`` of them. No network: the hub cache is a temporary folder."""

import dataclasses
import hashlib
import io
import random

import pytest
import torch
from typer.testing import CliRunner

import rdp_bench.datasets.download as download_module
from rdp_bench.cli import app
from rdp_bench.codecs import CODEC_IDS, REGISTRY, CodecUnavailable, codec_class, get_codec
from rdp_bench.codecs.compressai_zoo import upstream_key
from rdp_bench.codecs.entropy import pack_strings, pad_to_multiple, unpack_strings
from rdp_bench.codecs.zoo import compressai as zoo
from rdp_bench.container import BitstreamError, Container
from rdp_bench.offline import OFF_REASON, OFFLINE_ENV

ZOO = ["bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean", "mbt2018", "cheng2020-anchor", "cheng2020-attn"]


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.delenv(OFFLINE_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    return tmp_path / "hub" / "checkpoints"


def _random_model(name, quality=1, seed=0):
    cls = codec_class(name)
    entry = cls.table()[quality - 1]
    torch.manual_seed(seed)
    model = cls(device="cpu").build(entry).eval()
    model.update()  # CDF tables, as before CompressAI's compress()/decompress()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return model, entry, buf.getvalue()


def _install(name, hub, monkeypatch, quality=1):
    """A random model saved under the zoo's file name; the table pins that file's own sha256 prefix."""
    model, entry, data = _random_model(name, quality)
    (hub / entry.file).write_bytes(data)
    cls = codec_class(name)
    key = (cls.architecture, cls.metric)
    table = list(zoo.TABLES[key])
    table[entry.id] = dataclasses.replace(entry, sha256=hashlib.sha256(data).hexdigest()[:8])
    monkeypatch.setitem(zoo.TABLES, key, tuple(table))
    return model


def test_registered_with_stable_ids_and_rate_ids():
    names = [n for a in ZOO for n in (a, f"{a}-msssim")]
    assert all(n in REGISTRY for n in names)
    assert [CODEC_IDS[n] for n in names] == list(range(18, 30))
    for name in names:
        cls = codec_class(name)
        table = cls.table()
        qualities = 6 if name.startswith("cheng") else 8
        assert [(e.id, e.label, e.params["quality"]) for e in table] == [(q - 1, f"q{q}", q) for q in range(1, qualities + 1)]
        assert all(e.url == f"{zoo.ROOT_URL}/{e.file}" and e.file.endswith(f"-{e.sha256}.pth.tar") for e in table)
        assert ("ms-ssim" in table[0].file) == name.endswith("-msssim")


@pytest.mark.parametrize("name", ZOO)
def test_round_trip_equals_compressai(name, hub, monkeypatch, photo):
    model = _install(name, hub, monkeypatch)
    monkeypatch.setenv(OFFLINE_ENV, "1")  # nothing else can be fetched
    codec = get_codec(name, device="cpu")
    assert [p.label for p in codec.rate_points()] == ["q1"]  # the one file there
    img = photo(40, 56, seed=3)
    stream = codec.encode([img], "q1")[0]
    rec = Container.unpack(stream, expected_codec=name)
    assert rec.rate_id == 0 and (rec.height, rec.width) == (40, 56)
    ours = codec.decode([bytes(stream)])[0]
    assert ours.shape == (3, 40, 56)

    strings = unpack_strings(codec.own_payload(stream))
    padded, _ = pad_to_multiple(img[None], 64)
    with torch.no_grad():
        reference = model.compress(padded)
        # CompressAI's order: [y strings, z strings]; ours: [z, y] (or [y] without a hyperprior)
        theirs = [s[0] for s in reversed(reference["strings"])]
        assert strings == theirs
        x_hat = model.decompress([[s] for s in reversed(strings)], reference["shape"])["x_hat"]
    assert torch.equal(ours, x_hat[0, :, :40, :56])
    assert len(codec.checkpoint_id(codec.rate_point("q1"))) == 64


@pytest.mark.parametrize("name", ["bmshj2018-factorized", "mbt2018"])
def test_corrupt_streams_are_refused_or_decode_to_the_header_size(name, hub, monkeypatch, photo):
    _install(name, hub, monkeypatch)
    monkeypatch.setenv(OFFLINE_ENV, "1")
    codec = get_codec(name, device="cpu")
    stream = codec.encode([photo(40, 56)], "q1")[0]
    rec, fingerprint = Container.unpack(stream), codec.weights_fingerprint(codec.rate_point("q1"))
    strings = unpack_strings(codec.own_payload(stream))
    rng = random.Random(0)
    for trial in range(6):  # CRC-valid payloads with one flipped bit in one string
        parts = [bytearray(x) for x in strings]
        part = parts[trial % len(parts)]
        part[rng.randrange(len(part))] ^= 1 << rng.randrange(8)
        payload = pack_strings([bytes(x) for x in parts])
        try:
            out = codec.decode([Container(rec.codec, 0, 40, 56, fingerprint + payload).pack()])[0]
        except BitstreamError:
            continue
        assert out.shape == (3, 40, 56) and torch.isfinite(out).all()
    with pytest.raises(BitstreamError):  # a header claiming far more pixels than the strings can hold
        codec.decode([Container(rec.codec, 0, 4096, 4096, rec.payload).pack()])


def test_msssim_variant_and_batches(hub, monkeypatch, photo):
    _install("mbt2018-mean-msssim", hub, monkeypatch)
    codec = get_codec("mbt2018-mean-msssim", device="cpu")
    imgs = [photo(40, 56, seed=s) for s in range(2)] + [photo(64, 64, seed=5)]
    together = codec.encode(imgs, "q1")
    assert together == [codec.encode([i], "q1")[0] for i in imgs]  # batch-size invariant
    assert all(torch.equal(a, b) for a, b in zip(codec.decode(together), [codec.decode([s])[0] for s in together]))


def test_offline_unavailable_names_the_file_and_the_folder(hub, monkeypatch):
    monkeypatch.setenv(OFFLINE_ENV, "1")
    status = codec_class("cheng2020-attn").availability()
    assert not status and OFF_REASON in status.reason
    assert "cheng2020_attn-mse-1-465f2b64.pth.tar" in status.reason and str(hub) in status.reason
    with pytest.raises(CodecUnavailable, match="cheng2020_attn-mse-1-465f2b64.pth.tar"):
        get_codec("cheng2020-attn", device="cpu")
    res = CliRunner().invoke(app, ["run", "--codec", "mbt2018", "--out", str(hub.parent / "run"), "--quiet"])
    line = " ".join(res.output.split())
    assert res.exit_code == 2 and line.startswith("error:") and "mbt2018-1-3f36cd77.pth.tar" in line, res.output


def test_offline_with_one_file_keeps_ids_and_names_the_missing_ones(hub, monkeypatch, photo):
    _install("bmshj2018-hyperprior", hub, monkeypatch, quality=3)
    with monkeypatch.context() as m:
        m.setenv(OFFLINE_ENV, "1")
        codec = get_codec("bmshj2018-hyperprior", device="cpu")
        assert [p.label for p in codec.rate_points()] == ["q3"]
        stream = codec.encode([photo(40, 56)], "q3")[0]
        rec = Container.unpack(stream)
        assert rec.rate_id == 2
        other = Container(rec.codec, 0, rec.height, rec.width, rec.payload).pack()  # q1's id, file missing
        with pytest.raises(CodecUnavailable, match=rf"q1 \(id 0\): bmshj2018-hyperprior-1-7eb97409.pth.tar not found "
                                                   rf"and .* put it in {hub}"):
            codec.decode([other])


def test_a_file_failing_its_sha256_prefix_is_refused(hub, photo):
    (hub / "mbt2018-mean-1-e522738d.pth.tar").write_bytes(b"not the published file")
    codec = get_codec("mbt2018-mean", device="cpu")
    with pytest.raises(CodecUnavailable, match=r"mbt2018-mean-1-e522738d.pth.tar fails its sha256 check .*expected "
                                               r"e522738d"):
        codec.encode([photo(40, 56)], "q1")


def test_missing_file_is_downloaded_into_the_hub_cache_and_verified(hub, monkeypatch, photo):
    _, entry, data = _random_model("bmshj2018-factorized")
    digest = hashlib.sha256(data).hexdigest()
    key = ("bmshj2018-factorized", "mse")
    monkeypatch.setitem(zoo.TABLES, key, (dataclasses.replace(entry, sha256=digest[:8]), *zoo.TABLES[key][1:]))
    calls = []

    def fake_download(url, dest, expected_sha256, expected_size=None, timeout=30.0):
        calls.append((url, dest, expected_sha256))
        dest.write_bytes(data)
        return digest

    monkeypatch.setattr(download_module, "download", fake_download)
    codec = get_codec("bmshj2018-factorized", device="cpu")
    assert len(codec.rate_points()) == 8  # downloads are allowed: every point can run
    codec.encode([photo(40, 56)], "q1")
    assert calls == [(entry.url, hub / entry.file, digest[:8])]
    assert codec.checkpoint_id(codec.rate_point("q1")) == digest


def test_old_checkpoint_key_names():
    assert upstream_key("module.g_a.0.weight") == "g_a.0.weight"
    assert upstream_key("g_a.0.downsample.weight") == "g_a.0.skip.weight"
    assert upstream_key("entropy_bottleneck._matrices.2") == "entropy_bottleneck._matrix2"
    assert upstream_key("entropy_bottleneck._biases.0") == "entropy_bottleneck._bias0"
    assert upstream_key("entropy_bottleneck._factors.1") == "entropy_bottleneck._factor1"
    assert upstream_key("entropy_bottleneck.quantiles") == "entropy_bottleneck.quantiles"
