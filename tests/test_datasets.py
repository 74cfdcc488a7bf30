import io
import shutil
import tarfile
import zipfile

import pytest
from PIL import Image

from rdp_bench.datasets import DatasetUnavailable, load_dataset
from rdp_bench.datasets import remote
from rdp_bench.datasets.download import DownloadError, safe_extract


def test_samples_bundled_with_licences():
    ds = load_dataset("samples")
    assert 8 <= len(ds) <= 12
    root = ds.root
    assert (root / "LICENSES.md").exists() and (root / "ATTRIBUTION.csv").exists()
    attribution = (root / "ATTRIBUTION.csv").read_text()
    assert sum(p.stat().st_size for p in root.iterdir()) < 6_000_000
    for item in ds.items:
        assert item.image_id in attribution
        img = item.load()
        assert img.shape[0] == 3 and 0 <= float(img.min()) and float(img.max()) <= 1


def test_folder_dataset(tmp_path):
    Image.new("RGB", (5, 4)).save(tmp_path / "b.png")
    (tmp_path / "sub").mkdir()
    Image.new("L", (3, 3)).save(tmp_path / "sub" / "a.png")
    ds = load_dataset(f"folder:{tmp_path}")
    assert [i.image_id for i in ds.items] == ["b.png", "sub/a.png"]


def test_offline_remote_dataset_says_where_to_put_files(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise DownloadError("no network")

    monkeypatch.setattr(remote, "download", offline)
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("kodak", data_root=tmp_path)
    assert str(tmp_path / "kodak") in str(err.value) and "24 images" in str(err.value)
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("clic2020-valid", data_root=tmp_path, allow_download=False)
    message = str(err.value)
    assert "\n" not in message  # one line: which file goes where
    assert f"professional_valid_2020.zip (134,834,429 bytes) in {tmp_path / '.archives'}/" in message
    assert str(tmp_path / "clic2020" / "professional_valid") in message


def test_manually_placed_kodak_is_accepted(tmp_path):
    folder = tmp_path / "kodak"
    folder.mkdir()
    for i in range(24):
        Image.new("RGB", (768, 512) if i % 2 else (512, 768)).save(folder / f"kodim{i + 1:02d}.png")
    ds = load_dataset("kodak", data_root=tmp_path, allow_download=False)
    assert len(ds) == 24


def test_unknown_dataset():
    with pytest.raises(KeyError):
        load_dataset("imagenet")


def test_zip_slip_rejected(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", "fine")
        zf.writestr("../escape.txt", "bad")
    with pytest.raises(DownloadError, match="outside"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_tar_absolute_and_symlink_rejected(tmp_path):
    for name, kind in (("/etc/evil", tarfile.REGTYPE), ("link", tarfile.SYMTYPE)):
        archive = tmp_path / "evil.tar"
        with tarfile.open(archive, "w") as tf:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else ""
            tf.addfile(info, io.BytesIO(b""))
        with pytest.raises(DownloadError):
            safe_extract(archive, tmp_path / "out")


# --- pinned datasets ---------------------------------------------------------------------------------
def _png(color, size=(300, 260), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def _zip(path, entries: dict[str, bytes]) -> tuple[str, str, int]:
    """Write a zip; return (file:// URL, sha256, size) for a pinned Archive."""
    import hashlib

    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    data = path.read_bytes()
    return path.as_uri(), hashlib.sha256(data).hexdigest(), len(data)


def _toy(tmp_path, count=3, pro_images=None, mobile_images=None, name="toy"):
    """A two-archive set built like clic2020-test (professional + mobile, one folder each)."""
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    pro = {f"professional/p{i}.png": _png((i, 10, 20)) for i in range(2)}
    # grayscale: converted and counted; the macOS resource fork is debris, neither an image nor counted
    mobile = {"mobile/m0.png": _png(90, mode="L"), "__MACOSX/mobile/._m0.png": b"\x00\x05\x16\x07",
              "mobile/._m0.png": b"\x00\x05\x16\x07"}
    url_p, sha_p, size_p = _zip(src / "pro.zip", pro)
    url_m, sha_m, size_m = _zip(src / "mobile.zip", mobile)
    return remote.RemoteDataset(
        name, f"{name}/test", count, "a toy test set",
        archives=(remote.Archive(url_p, "pro.zip", sha_p, size_p, "made by the test", pro_images),
                  remote.Archive(url_m, "mobile.zip", sha_m, size_m, "made by the test", mobile_images)),
        min_side=256)


def test_pinned_two_archive_set_is_extracted_counted_and_manifested(tmp_path):
    root = tmp_path / "data"
    toy = _toy(tmp_path, pro_images=2, mobile_images=1)
    assert toy.pinned and toy.download_bytes == sum(a.size for a in toy.archives)
    assert not toy.status(root).present
    ds = toy.load(root)
    assert len(ds) == 3
    assert [i.image_id for i in ds.items] == ["mobile/mobile/m0.png", "pro/professional/p0.png", "pro/professional/p1.png"]
    assert any("1 of 3 images are grayscale" in n for n in ds.notes)
    assert ds.items[0].load().shape == (3, 260, 300)  # grayscale comes out as RGB
    rows = remote.read_manifest(root / "toy/test" / remote.MANIFEST)
    assert [r["image_id"] for r in rows] == [i.image_id for i in ds.items]
    assert rows[0]["mode"] == "L" and rows[1]["pixel_sha256"] == ds.items[1].sha256()
    assert toy.status(root).present
    assert not list(root.glob(".*.download"))


def test_archive_placed_by_hand_is_used_offline_and_a_wrong_one_is_named(tmp_path, monkeypatch):
    root = tmp_path / "data"
    toy = _toy(tmp_path)
    monkeypatch.setattr(remote, "download", lambda *a, **k: pytest.fail("went to the network offline"))
    with pytest.raises(DatasetUnavailable) as err:
        toy.load(root, allow_download=False)
    assert f"pro.zip ({toy.archives[0].size:,} bytes) and mobile.zip" in str(err.value)
    assert str(root / ".archives") in str(err.value) and "\n" not in str(err.value)
    (root / ".archives").mkdir(parents=True)
    shutil.copy(tmp_path / "src" / "pro.zip", root / ".archives" / "pro.zip")
    (root / ".archives" / "mobile.zip").write_bytes(b"not the pinned archive")
    with pytest.raises(DatasetUnavailable, match="found 0 images"):
        toy.load(root, allow_download=False)
    shutil.copy(tmp_path / "src" / "mobile.zip", root / ".archives" / "mobile.zip")
    assert len(toy.load(root, allow_download=False)) == 3


def test_wrong_image_count_after_extraction_is_refused_and_leaves_nothing(tmp_path):
    root = tmp_path / "data"
    with pytest.raises(DatasetUnavailable, match="gave 3 images, expected 4"):
        _toy(tmp_path, count=4).load(root)
    with pytest.raises(DatasetUnavailable, match="pro.zip holds 2 images, expected 5"):
        _toy(tmp_path, pro_images=5).load(root)
    assert not (root / "toy").exists() and not list(root.glob(".*.download"))


def test_manifest_names_a_changed_or_missing_image(tmp_path):
    root = tmp_path / "data"
    toy = _toy(tmp_path)
    toy.load(root)
    image = root / "toy/test/pro/professional/p1.png"
    image.write_bytes(_png((200, 0, 0), size=(301, 260)))
    with pytest.raises(DatasetUnavailable, match=r"p1.png is \d+ bytes, .*MANIFEST.csv recorded"):
        toy.load(root, allow_download=False)
    image.unlink()
    (root / "toy/test/extra.png").write_bytes(_png(1))
    with pytest.raises(DatasetUnavailable, match="p1.png is listed in .* but missing"):
        toy.load(root, allow_download=False)


def test_hand_placed_images_get_a_manifest(tmp_path):
    folder = tmp_path / "kodak"
    folder.mkdir()
    for i in range(24):
        Image.new("RGB", (768, 512)).save(folder / f"kodim{i + 1:02d}.png")
    load_dataset("kodak", data_root=tmp_path, allow_download=False)
    rows = remote.read_manifest(folder / remote.MANIFEST)
    assert len(rows) == 24 and {r["width"] for r in rows} == {"768"}


def test_unpinned_set_is_refused_without_touching_the_network(tmp_path, monkeypatch):
    monkeypatch.setattr(remote, "download", lambda *a, **k: pytest.fail("an unpinned file was requested"))
    unpinned = remote.RemoteDataset(
        "toy", "toy", 3, "a toy set",
        files=tuple(remote.Archive(f"https://example.invalid/{i}.png", f"{i}.png") for i in range(3)))
    assert not unpinned.pinned
    with pytest.raises(DatasetUnavailable, match=r"pins no sha256 for 0.png \(and 2 more\).*put the 3 images"):
        unpinned.load(tmp_path)
    half = remote.RemoteDataset(  # one unpinned file is enough to refuse the set
        "toy", "toy", 2, "a toy set",
        files=(remote.Archive("https://example.invalid/a.png", "a.png", "ab" * 32, 10, "test"),
               remote.Archive("https://example.invalid/b.png", "b.png")))
    with pytest.raises(DatasetUnavailable, match=r"pins no sha256 for b.png, so it is not downloaded"):
        half.load(tmp_path)


def test_pinned_single_files_are_verified_and_a_mismatch_leaves_nothing(tmp_path):
    """Sets of single files (Kodak's layout): each download is checked against its pinned sum and size."""
    import hashlib

    src = tmp_path / "src"
    src.mkdir()
    parts = []
    for i in range(2):
        data = _png((i, 50, 60), size=(768, 512))
        (src / f"kodim{i + 1:02d}.png").write_bytes(data)
        parts.append(remote.Archive((src / f"kodim{i + 1:02d}.png").as_uri(), f"kodim{i + 1:02d}.png",
                                    hashlib.sha256(data).hexdigest(), len(data), "made by the test", 1))
    sizes = frozenset({(768, 512), (512, 768)})
    toy = remote.RemoteDataset("toyk", "toyk", 2, "a toy Kodak", files=tuple(parts), sizes=sizes)
    root = tmp_path / "data"
    assert toy.pinned and len(toy.load(root)) == 2
    assert sorted(p.name for p in (root / "toyk").iterdir()) == ["MANIFEST.csv", "SOURCE.json", "kodim01.png",
                                                                  "kodim02.png"]
    tampered = (parts[0], remote.Archive(parts[1].url, parts[1].name, "0" * 64, parts[1].size, "wrong pin", 1))
    bad = remote.RemoteDataset("toyk2", "toyk2", 2, "a toy Kodak", files=tampered, sizes=sizes)
    with pytest.raises(DatasetUnavailable, match="sha256 mismatch for .*kodim02.png"):
        bad.load(root)
    assert not (root / "toyk2").exists() and not list(root.glob(".*.download"))
    assert not [p for p in root.rglob("*") if ".part" in p.name]
    with pytest.raises(DatasetUnavailable, match=r"toyk2: .*\(downloads are off"):  # offline: says why, no request
        bad.load(root, allow_download=False)


def test_kodak_is_pinned_file_by_file():
    k = remote.KODAK
    assert k.pinned and [p.name for p in k.files] == [f"kodim{i:02d}.png" for i in range(1, 25)]
    assert all(len(p.sha256) == 64 and int(p.sha256, 16) >= 0 and p.size and "checksums.tsv" in p.source
               for p in k.files)
    assert len({p.sha256 for p in k.files}) == 24 and k.download_bytes == 15_394_305
    assert k.files[0].sha256.startswith("a56e27cb") and k.files[0].size == 736_501


def test_registry_pins_and_names():
    from rdp_bench.datasets import REMOTE, canonical_name, list_datasets

    assert canonical_name("clic") == canonical_name("clic2020") == "clic2020-test"
    assert canonical_name("div2k") == "div2k-valid"
    test = REMOTE["clic2020-test"]
    assert test.count == 428 == sum(a.images for a in test.archives)
    assert {a.name: a.sha256[:8] for a in test.archives} == {"CLIC2020Professional_test.zip": "857df244",
                                                            "CLIC2020Mobile_test.zip": "2025f07a"}
    assert REMOTE["clic2020-valid"].count == 41 and REMOTE["clic2020-valid"].archives[0].size == 134_834_429
    assert REMOTE["div2k-valid"].count == 100
    for d in REMOTE.values():
        for part in d.archives:  # every pinned sum is a full sha256 with its byte size and source
            assert len(part.sha256) == 64 and part.size and "url_checksums" in part.source
    assert REMOTE["kodak"].pinned  # file by file (test_kodak_is_pinned_file_by_file)
    listed = {d.name: d for d in list_datasets("/nonexistent")}
    assert listed["clic2020-test"].download == "1.61 GB, sha256 pinned" and not listed["clic2020-test"].present
    assert listed["clic2020-test"].aliases == ("clic", "clic2020")
    assert listed["kodak"].download.endswith("sha256 pinned")
