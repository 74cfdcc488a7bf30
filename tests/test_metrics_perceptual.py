"""LPIPS / DISTS / FID / KID / piq metrics: reference equality, patch protocol, offline weight handling.

Backbone equality tests use randomly initialised AlexNet/VGG16 files written into a temporary hub cache
under torchvision's file names, with the sha256 check switched off for that test only: they check that
our construction equals the reference packages given the same weights, never produce reported numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from PIL import Image

from rdp_bench.bench.runner import RunConfig, run_benchmark
from rdp_bench.metrics import fid as fid_module
from rdp_bench.metrics import get_metric, metric_availability, metric_class, weights
from rdp_bench.metrics.fid import (
    FID, KID, FIDStatistics, extract_patches, kid_subset_size, patch_origins,
)
from rdp_bench.metrics.inception import (
    FID_HELPER, TORCH_FIDELITY, build_inception, inception_features, load_fid_helper_state, resolve_inception,
)
from rdp_bench.metrics.weights import ALEXNET, INCEPTION_FID, VGG16, WeightsMissing


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """TORCH_HOME pointing at an empty folder, downloads off: the 'weights absent, offline' machine."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    monkeypatch.setenv("RDP_BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def _save_random_backbone(arch: str, path) -> None:
    # conv layers random (He scale); the (unused) classifier as 0-stride views so the file stays tiny
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in getattr(torchvision.models, arch)(weights=None).state_dict().items()}
    state = {}
    for key, shape in shapes.items():
        if key.startswith("features.") and key.endswith("weight"):
            state[key] = torch.randn(shape) * math.sqrt(2 / math.prod(shape[1:]))
        elif key.startswith("features."):
            state[key] = 0.01 * torch.randn(shape)
        else:
            state[key] = torch.zeros(()).expand(shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)


@pytest.fixture
def random_backbones(empty_hub, monkeypatch):
    """Random AlexNet/VGG16 files under torchvision's names; the sha256 check is off for this test only."""
    torch.manual_seed(1)
    _save_random_backbone("alexnet", empty_hub / ALEXNET.filename)
    _save_random_backbone("vgg16", empty_hub / VGG16.filename)
    monkeypatch.setattr(weights, "VERIFY_SHA256", False)
    return empty_hub


# --- patch protocol --------------------------------------------------------------------------------

@pytest.mark.parametrize("h, w, expected", [
    (768, 512, 6 + 2),        # 3x2 grid + shifted 2x1
    (512, 768, 6 + 2),
    (1365, 2048, 40 + 28),    # 5x8 + shifted 4x7
    (2048, 1365, 40 + 28),
    (255, 1000, 0),           # too short for any patch
    (100, 100, 0),
    (256, 256, 1),
    (383, 1000, 3),           # a side under 384: no shifted grid
    (384, 384, 1 + 1),
])
def test_patch_counts(h, w, expected):
    assert len(patch_origins(h, w)) == expected


def test_patches_are_uint8_crops_on_both_grids(photo):
    img = photo(512, 640, seed=3)
    patches = extract_patches(img)
    assert patches.dtype == torch.uint8 and patches.shape == (2 * 2 + 1 * 2, 3, 256, 256)
    pixels = img.mul(255).round().to(torch.uint8)
    assert torch.equal(patches[0], pixels[:, :256, :256])
    assert torch.equal(patches[3], pixels[:, 256:512, 256:512])
    assert torch.equal(patches[4], pixels[:, 128:384, 128:384])  # the shifted grid
    assert torch.equal(patches[5], pixels[:, 128:384, 384:640])
    assert extract_patches(photo(200, 300)).shape == (0, 3, 256, 256)


# --- FID / KID against torch-fidelity -----------------------------------------------------------------

def _features(rng, n, shift=0.0, dim=2048):
    mixing = rng.normal(size=(64, dim)) / 8
    return np.abs(rng.normal(size=(n, 64)) @ mixing + shift).astype(np.float32)


def test_fid_streams_and_equals_torch_fidelity():
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    # 256-d features keep torch-fidelity's eigvals fast on CPU; the code path is dimension-agnostic
    rng = np.random.default_rng(0)
    ref, rec = _features(rng, 400, dim=256), _features(rng, 400, shift=0.05, dim=256)
    splits = [0, 150, 150, 320, 400]  # includes an image with no patches
    partials = [{"ref": ref[a:b], "rec": rec[a:b]} for a, b in zip(splits, splits[1:])]
    ours = FID(device="cpu").finalize(iter(partials))
    theirs = fid_statistics_to_metric(fid_features_to_statistics(torch.from_numpy(rec)),
                                      fid_features_to_statistics(torch.from_numpy(ref)), verbose=False)
    assert ours["fid_patches"] == 400
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-7)
    assert ours["fid"] > 0.01
    # running statistics equal numpy's mean/cov, also at the real 2048 width
    wide = _features(rng, 300)
    stats = FIDStatistics()
    for a, b in ((0, 100), (100, 100), (100, 300)):
        stats.update(wide[a:b])
    np.testing.assert_allclose(stats.mu_sigma()["mu"], wide.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.mu_sigma()["sigma"], np.cov(wide.astype(np.float64), rowvar=False), atol=1e-12)


def test_fid_of_identical_sets_is_zero_and_empty_is_nan():
    rng = np.random.default_rng(1)
    feats = _features(rng, 300, dim=128)
    # torch-fidelity's eigvals-based trace sqrt leaves ~1e-5 of numerical noise on identical sets
    assert FID(device="cpu").finalize([{"ref": feats, "rec": feats}])["fid"] == pytest.approx(0, abs=1e-3)
    empty = np.empty((0, 2048), np.float32)
    out = FID(device="cpu").finalize([{"ref": empty, "rec": empty}])
    assert math.isnan(out["fid"]) and out["fid_patches"] == 0 and "256" in out["reason"]
    assert math.isnan(KID(device="cpu").finalize([{"ref": empty, "rec": empty}])["kid"])


def test_kid_equals_torch_fidelity_and_the_unbiased_mmd():
    from torch_fidelity.metric_kid import kid_features_to_metric

    rng = np.random.default_rng(2)
    ref, rec = _features(rng, 60), _features(rng, 60, shift=0.1)
    partials = [{"ref": ref[:25], "rec": rec[:25]}, {"ref": ref[25:], "rec": rec[25:]}]
    ours = KID(device="cpu").finalize(partials)
    theirs = kid_features_to_metric(torch.from_numpy(rec), torch.from_numpy(ref), kid_subsets=100,
                                    kid_subset_size=60, rng_seed=2020, verbose=False)
    assert ours["kid_patches"] == 60 and ours["kid_subset_size"] == 60 and ours["kid_subsets"] == 100
    # ours is float64 (as NeuralCompression); torch-fidelity computes in float32 on these features
    assert ours["kid"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-5)
    # independent check: with subset = whole set, KID is the unbiased MMD^2 with k(x,y) = (x.y/d + 1)^3
    x, y = rec.astype(np.float64), ref.astype(np.float64)
    k = lambda a, b: (a @ b.T / 2048 + 1) ** 3  # noqa: E731
    m = len(x)
    kxx, kyy = k(x, x), k(y, y)
    mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * k(x, y).mean()
    assert ours["kid"] == pytest.approx(mmd, rel=1e-5)
    assert ours["kid"] > 0
    assert kid_subset_size(60) == 60 and kid_subset_size(5000) == 1000


# --- the Inception network -----------------------------------------------------------------------

def test_mapped_fid_helper_equals_torchscript_and_torch_fidelity_file_path(empty_hub, tmp_path, monkeypatch):
    source = resolve_inception()  # offline, no torch-fidelity file: the fid-helper fallback
    assert source.kind == FID_HELPER
    mapped = build_inception(source)
    scripted = torch.jit.load(str(source.path), map_location="cpu").eval()
    patches = torch.randint(0, 256, (2, 3, 299, 299), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ours = inception_features(mapped, patches)
    with torch.no_grad():
        original = scripted((patches.float() - 128) / 128).numpy()  # fid-helper's TF input range
    assert ours.shape == (2, 2048)
    np.testing.assert_allclose(ours, original, atol=1e-5, rtol=0)
    assert np.abs(ours).mean() > 0.05

    # the torch-fidelity-file path: same tensors saved as a plain state dict, loaded with weights_only=True
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    torch.save(mapped.state_dict(), weights_dir / INCEPTION_FID.filename)
    monkeypatch.setattr(weights, "VERIFY_SHA256", False)
    file_source = resolve_inception(weights_dir)
    assert file_source.kind == TORCH_FIDELITY
    np.testing.assert_array_equal(inception_features(build_inception(file_source), patches[:1]), ours[:1])


def test_fid_and_kid_share_features_and_cache_references(empty_hub, photo, monkeypatch):
    calls = []

    def fake_features(model, patches, batch_size=16):
        calls.append(len(patches))
        return patches.float().mean(dim=(2, 3)).repeat(1, 683)[:, :2048].numpy()

    monkeypatch.setattr(fid_module, "inception_model", lambda source, device: None)
    monkeypatch.setattr(fid_module, "inception_features", fake_features)
    fid_module._FEATURE_MEMO.clear()
    ref = photo(300, 520, seed=5)
    rec = photo(300, 520, seed=6)
    fid, kid = get_metric("fid", device="cpu"), get_metric("kid", device="cpu")
    a = fid.extract(ref, rec, "samples:abc")
    b = kid.extract(ref, rec, "samples:abc")
    assert calls == [2, 2]  # one reference + one reconstruction pass, shared
    assert all(np.array_equal(a[k], b[k]) for k in ("ref", "rec"))
    fid_module._FEATURE_MEMO.clear()
    fid.extract(ref, photo(300, 520, seed=7), "samples:abc")
    assert calls == [2, 2, 2]  # the reference features came from the disk cache
    assert list((empty_hub.parents[2] / "cache" / "features").rglob("*.npy"))


# --- LPIPS / DISTS ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name, filename", [("lpips", ALEXNET.filename), ("lpips-vgg", VGG16.filename),
                                            ("dists", VGG16.filename)])
def test_learned_metrics_unavailable_without_weights(empty_hub, name, filename, photo):
    status = metric_availability(name)
    assert not status
    assert filename in status.reason and str(empty_hub) in status.reason and "--weights-dir" in status.reason
    with pytest.raises(WeightsMissing):
        get_metric(name, device="cpu").compute(photo(64, 64), photo(64, 64, seed=1))


def test_weights_failing_their_sha256_are_rejected(empty_hub, tmp_path):
    bad = tmp_path / "w"
    bad.mkdir()
    (bad / ALEXNET.filename).write_bytes(b"not alexnet")
    status = metric_availability("lpips", weights_dir=bad)
    assert not status and "fails its sha256 check" in status.reason


def test_lpips_and_dists_equal_reference_packages(random_backbones, photo):
    import DISTS_pytorch
    import lpips

    from rdp_bench.metrics.dists_metric import dists_alpha_beta_path

    ref, rec = photo(48, 56, seed=1), photo(48, 56, seed=2)
    for name, net in (("lpips", "alex"), ("lpips-vgg", "vgg")):
        assert metric_availability(name)
        ours = get_metric(name, device="cpu").compute(ref, rec)
        reference = lpips.LPIPS(net=net, verbose=False)(ref[None], rec[None], normalize=True).item()
        assert ours == pytest.approx(reference, rel=1e-6, abs=1e-7)
        assert ours > 0
    if dists_alpha_beta_path() is None:
        pytest.skip("DISTS_pytorch without weights.pt")
    ours = get_metric("dists", device="cpu").compute(ref, rec)
    reference = DISTS_pytorch.DISTS()(ref[None], rec[None]).item()
    assert ours == pytest.approx(reference, rel=1e-6, abs=1e-7)


def test_gpu_is_used_when_present(empty_hub, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name in ("lpips", "dists", "fid", "kid", "gmsd"):
        assert get_metric(name).device.type == "cuda"
    metric = get_metric("fid")
    seen = {}

    def fake_model(source, device):
        seen["device"] = device
        return None

    def fake_features(model, patches, batch_size):
        seen["batch"] = batch_size
        return np.zeros((len(patches), 2048), np.float32)

    monkeypatch.setattr(fid_module, "inception_model", fake_model)
    monkeypatch.setattr(fid_module, "inception_features", fake_features)
    metric.features(torch.zeros((1, 3, 256, 256), dtype=torch.uint8))
    assert seen == {"device": torch.device("cuda"), "batch": 64}


# --- piq -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["gmsd", "haarpsi", "vif"])
def test_piq_metrics_orientation(name, photo):
    ref = photo(96, 96, seed=4)
    slightly = (ref + 0.02 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    badly = (ref + 0.2 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    metric = get_metric(name, device="cpu")
    perfect, good, bad = (metric.compute(ref, x) for x in (ref, slightly, badly))
    ordered = [perfect, good, bad] if not metric.higher_is_better else [bad, good, perfect]
    assert ordered == sorted(ordered) and good != bad
    assert perfect == pytest.approx(0.0 if name == "gmsd" else 1.0, abs=1e-4)


def test_vif_is_nan_on_tiny_images(photo):
    assert math.isnan(get_metric("vif", device="cpu").compute(photo(30, 30), photo(30, 30, seed=1)))


# --- harness, end to end ------------------------------------------------------------------------

def test_run_records_unavailable_metrics_and_patchless_fid(empty_hub, tmp_path, photo, monkeypatch):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(photo(96, 128, seed=i).mul(255).round().byte().permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    cfg = RunConfig(codecs=["jpeg"], dataset=f"folder:{folder}", out=tmp_path / "run", rates=["q20"],
                    metrics=["psnr", "lpips", "dists", "fid", "kid", "haarpsi"], progress=False)
    store = run_benchmark(cfg)
    table = pd.read_csv(tmp_path / "run" / "results.csv")
    assert len(table) == 2 and table["psnr"].gt(20).all() and table["haarpsi"].between(0, 1).all()
    assert table["lpips"].isna().all() and table["dists"].isna().all()
    assert all(ALEXNET.filename in u and VGG16.filename in u for u in table["unavailable"])
    rows = {r["metric"]: r for r in store.dataset_rows()}
    assert math.isnan(rows["fid"]["value"]) and rows["fid"]["fid_patches"] == 0 and "256" in rows["fid"]["reason"]
    assert math.isnan(rows["kid"]["value"])
    assert metric_class("fid").higher_is_better is False

    # the weights arrive: a re-run measures LPIPS for the rows that had NaN, and clears the reasons
    _save_random_backbone("alexnet", empty_hub / ALEXNET.filename)
    monkeypatch.setattr(weights, "VERIFY_SHA256", False)
    cfg.metrics = ["psnr", "lpips"]
    run_benchmark(cfg)
    table = pd.read_csv(tmp_path / "run" / "results.csv")
    assert len(table) == 2 and table["lpips"].gt(0).all() and (table["unavailable"] == "{}").all()
