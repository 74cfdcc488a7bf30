"""``rdp-bench install bpg`` builds the real bpgenc 0.9.8; with it, the bpg codec reproduces the shared
reference table exactly (bytes and PSNR)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from rdp_bench.codecs.bpg_install import missing_prerequisites, only_8bit_makefile, prerequisite_message

SHARED_BPG = Path(__file__).resolve().parents[1].parent / "shared" / "bpg"
TARBALL = SHARED_BPG / "libbpg-0.9.8-src.tar.gz"
REFERENCE = SHARED_BPG / "bpgenc-0.9.8-reference.csv"
PHOTOS = SHARED_BPG.parent / "photos"


def test_makefile_keeps_only_the_8bit_x265():
    text = ("X265_LIBS:=./x265.out/8bit/libx265.a ./x265.out/10bit/libx265.a ./x265.out/12bit/libx265.a\n"
            "x265.out:\n\tmkdir -p x265.out/8bit x265.out/10bit x265.out/12bit\n"
            "\tcd x265.out/12bit && cmake ../../x265/source $(CMAKE_OPTS) -DMAIN12=ON\n"
            "\tcd x265.out/10bit && cmake ../../x265/source $(CMAKE_OPTS) -DMAIN10=ON\n"
            "\tcd x265.out/8bit && cmake ../../x265/source $(CMAKE_OPTS) -DLINKED_10BIT=ON -DLINKED_12BIT=ON -DENABLE_CLI=OFF\n"
            "x265_make: | x265.out\n\t$(MAKE) -C x265.out/12bit\n\t$(MAKE) -C x265.out/10bit\n\t$(MAKE) -C x265.out/8bit\n")
    out = only_8bit_makefile(text)
    assert "10bit" not in out and "12bit" not in out and "LINKED" not in out
    assert "X265_LIBS:=./x265.out/8bit/libx265.a\n" in out and "$(MAKE) -C x265.out/8bit" in out


def test_missing_prerequisites_name_the_packages():
    msg = prerequisite_message(["yasm", "png.h"])
    assert "apt-get install yasm libpng-dev" in msg and "brew install yasm libpng" in msg


def test_cli_names_missing_tools_in_one_line(monkeypatch):
    from typer.testing import CliRunner

    from rdp_bench import cli
    from rdp_bench.codecs import bpg_install

    monkeypatch.setattr(bpg_install, "missing_prerequisites", lambda: ["yasm"])
    result = CliRunner().invoke(cli.app, ["install", "bpg", "--from", str(TARBALL)])
    assert result.exit_code == 2
    assert "apt-get install yasm" in result.output and "Traceback" not in result.output


@pytest.fixture(scope="module")
def built_bpg(tmp_path_factory) -> Path:
    if not TARBALL.is_file():
        pytest.skip(f"needs the libbpg source at {TARBALL}")
    if missing := missing_prerequisites():
        pytest.skip(prerequisite_message(missing))
    from rdp_bench.codecs.bpg_install import install_bpg

    cache = tmp_path_factory.mktemp("cache")
    install_bpg(TARBALL, cache / "bin", log=lambda m: None)
    return cache


@pytest.mark.slow
def test_install_from_tarball_builds_binaries_the_codec_finds(built_bpg, monkeypatch):
    from rdp_bench.codecs.bpg import BPG

    monkeypatch.setenv("RDP_BENCH_CACHE", str(built_bpg))
    enc, dec = BPG.binaries()
    assert enc == str(built_bpg / "bin" / "bpgenc") and dec == str(built_bpg / "bin" / "bpgdec")
    assert BPG(device="cpu").uses_binary()


def _reference_rows() -> list[dict[str, str]]:
    if not REFERENCE.is_file():
        pytest.skip(f"needs the reference table {REFERENCE}")
    with REFERENCE.open() as f:
        return list(csv.DictReader(f))


def _reference_images() -> list[str]:
    """The table's images in file order (empty without the table: the test then skips with a reason)."""
    if not REFERENCE.is_file():
        return []
    with REFERENCE.open() as f:
        return list(dict.fromkeys(row["image"] for row in csv.DictReader(f)))


def _check_reference_rows(image: str) -> None:
    """Every (q, chroma) row of ``image``: the codec's payload is the same .bpg file (byte count) and
    its decoded RGB has the same PSNR to 1e-3 dB."""
    from rdp_bench.codecs.bpg import BPG, BPG444
    from rdp_bench.container import Container
    from rdp_bench.imageio import load_image_uint8, uint8_to_tensor

    rows = [r for r in _reference_rows() if r["image"] == image]
    assert len(rows) == 12, f"{image}: expected 6 q x 2 chroma rows, got {len(rows)}"
    codecs = {"420": BPG(device="cpu", backend="binary"), "444": BPG444(device="cpu", backend="binary")}
    rgb = load_image_uint8(PHOTOS / image)
    for row in rows:
        codec = codecs[row["chroma"]]
        stream = codec.encode([uint8_to_tensor(rgb)], f"q{row['q']}")[0]
        payload = Container.unpack(stream).payload
        assert payload.startswith(b"BPG\xfb"), "the binary backend must write the .bpg file itself"
        assert len(payload) == int(row["bytes"]), row
        decoded = codec.decode([stream])[0]
        out = np.clip(np.round(decoded.numpy().transpose(1, 2, 0) * 255), 0, 255)
        mse = np.mean((out - rgb.astype(np.float64)) ** 2)
        assert abs(10 * np.log10(255 ** 2 / mse) - float(row["psnr"])) < 1e-3, row


#: photos checked by default (the two smallest, 24 bpgenc/bpgdec runs); RDP_BENCH_BPG_REFERENCE=1 runs all 12
DEFAULT_REFERENCE_IMAGES = ("kivy_kiwi.png", "skimage_chelsea.png")


@pytest.mark.parametrize("image", _reference_images() or ["(no reference table)"])
def test_shared_binaries_reproduce_the_reference_table(image, monkeypatch, tmp_path):
    """With ../shared/bpg/bin as the backend, the codec gives the shared table's bytes and PSNR exactly."""
    if not REFERENCE.is_file():
        pytest.skip(f"needs the reference table {REFERENCE}")
    if not all((SHARED_BPG / "bin" / n).is_file() for n in ("bpgenc", "bpgdec")):
        pytest.skip(f"needs bpgenc and bpgdec in {SHARED_BPG / 'bin'}")
    if not PHOTOS.is_dir():
        pytest.skip(f"needs the photos in {PHOTOS}")
    if image not in DEFAULT_REFERENCE_IMAGES and not os.environ.get("RDP_BENCH_BPG_REFERENCE"):
        pytest.skip("the other 10 photos (120 bpgenc runs): set RDP_BENCH_BPG_REFERENCE=1")
    monkeypatch.setenv("RDP_BENCH_CACHE", str(tmp_path))  # no built binaries: PATH is used
    monkeypatch.setenv("PATH", f"{SHARED_BPG / 'bin'}{os.pathsep}{os.environ['PATH']}")
    _check_reference_rows(image)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("RDP_BENCH_BPG_REFERENCE"),
                    reason="builds bpgenc, then 144 bpgenc runs: set RDP_BENCH_BPG_REFERENCE=1")
def test_built_binaries_reproduce_the_reference_table(built_bpg, monkeypatch):
    """``rdp-bench install bpg --from`` the shared source gives the same binaries' output, every row."""
    monkeypatch.setenv("RDP_BENCH_CACHE", str(built_bpg))
    for image in _reference_images():
        _check_reference_rows(image)


def test_offline_the_source_is_not_downloaded_and_the_message_says_where_it_goes(monkeypatch, tmp_path):
    from rdp_bench.codecs import bpg_install
    from rdp_bench.offline import OFF_REASON, OFFLINE_ENV

    monkeypatch.setenv("RDP_BENCH_CACHE", str(tmp_path))
    monkeypatch.setenv(OFFLINE_ENV, "1")
    fetched = []
    monkeypatch.setattr("rdp_bench.datasets.download.download", lambda *a, **k: fetched.append(a))
    with pytest.raises(bpg_install.BuildError) as err:
        bpg_install._source_tree(None, tmp_path / "work", log=lambda m: None)
    message = str(err.value)
    assert not fetched and OFF_REASON in message and str(tmp_path / "downloads") in message
    assert "libbpg-0.9.8.tar.gz" in message and "--from" in message
