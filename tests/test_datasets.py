import io
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
    with pytest.raises(DatasetUnavailable, match="professional_valid"):
        load_dataset("clic2020", data_root=tmp_path, allow_download=False)


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
