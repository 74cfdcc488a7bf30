"""Stable rate ids: each learned codec's rate points come from a fixed weights table
(``rdp_bench/codecs/zoo``), so a stream's rate id means the same rate point whatever files are present."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from rdp_bench.bench.runner import select_rate_points
from rdp_bench.codecs import CodecUnavailable
from rdp_bench.codecs.cdc import CDC
from rdp_bench.codecs.cdc import WEIGHTS_DIR as CDC_DIR
from rdp_bench.codecs.checkpoints import file_sha256, load_state_dict
from rdp_bench.codecs.hific import WEIGHTS_DIR as HIFIC_DIR
from rdp_bench.codecs.hific import HiFiC
from rdp_bench.codecs.zoo import CUSTOM_RATE_ID, WeightsEntry, check_table
from rdp_bench.codecs.zoo import cdc as cdc_table
from rdp_bench.codecs.zoo import hific as hific_table
from rdp_bench.codecs.zoo import msillm as msillm_table
from rdp_bench.container import BitstreamError, Container


def _image(h: int = 48, w: int = 72, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.linspace(0, 1, w).repeat(h, 1)
    return (0.6 * base + 0.4 * torch.rand(3, h, w, generator=g)).clamp(0, 1)


def _copy(src_dir: Path, file: str, dst_dir: Path) -> None:
    for suffix in (".safetensors", ".json"):
        shutil.copy(src_dir / Path(file).with_suffix(suffix).name, dst_dir)


@pytest.mark.parametrize("table, folder", [(hific_table.TABLE, HIFIC_DIR), (cdc_table.TABLE, CDC_DIR)])
def test_bundled_tables_pin_the_bundled_files(table, folder):
    assert sorted(e.id for e in table) == list(range(len(table)))  # ids streams were written with; cdc lists by rate
    for entry in table:
        path = folder / entry.file
        assert entry.sha256 == file_sha256(path) == json.loads(path.with_suffix(".json").read_text())["sha256"]


def test_tables_refuse_clashes():
    with pytest.raises(ValueError, match="duplicate id"):
        check_table("x", [WeightsEntry(0, "a", "a.pt"), WeightsEntry(0, "b", "b.pt")])
    with pytest.raises(ValueError, match="ids must be"):
        check_table("x", [WeightsEntry(CUSTOM_RATE_ID, "a", "a.pt")])
    assert [e.id for e in msillm_table.TABLE] == [0, 1, 2, 3, 4, 5]


def test_hific_with_one_checkpoint_keeps_its_rate_id(tmp_path):
    _copy(HIFIC_DIR, "hific_tiny_0p40bpp.safetensors", tmp_path)
    one = HiFiC(device="cpu", weights_dir=tmp_path)
    full = HiFiC(device="cpu")
    assert [p.label for p in one.rate_points()] == ["0.4bpp"]
    assert [p.label for p in full.rate_points()] == ["0.1bpp", "0.2bpp", "0.4bpp", "0.8bpp"]
    img = _image()
    stream = one.encode([img], "0.4bpp")[0]
    assert Container.unpack(stream).rate_id == 2 == full.rate_id(full.rate_point("0.4bpp"))
    # the stream means 0.4bpp to a codec with every checkpoint, too
    assert torch.equal(one.decode([stream])[0], full.decode([stream])[0])
    assert full.encode([img], "0.4bpp")[0] == stream
    assert one.rate_point(2).label == "0.4bpp"
    assert [p.label for p in select_rate_points(one, ["2"])] == ["0.4bpp"]
    # a stream of a rate point whose file is missing is refused naming the file and the folder
    low = full.encode([img], "0.1bpp")[0]
    with pytest.raises(CodecUnavailable, match=r"0\.1bpp \(id 0\) needs hific_tiny_0p10bpp\.safetensors; put it in "
                                              + str(tmp_path)):
        one.decode([low])
    with pytest.raises(CodecUnavailable, match="hific_tiny_0p10bpp.safetensors"):
        one.rate_point("0.1bpp")


def test_hific_refuses_a_file_that_is_not_the_pinned_one(tmp_path):
    shutil.copy(HIFIC_DIR / "hific_tiny_0p10bpp.safetensors", tmp_path / "hific_tiny_0p40bpp.safetensors")
    shutil.copy(HIFIC_DIR / "hific_tiny_0p10bpp.json", tmp_path / "hific_tiny_0p40bpp.json")
    with pytest.raises(CodecUnavailable, match="pinned in rdp_bench/codecs/zoo/hific.py"):
        HiFiC(device="cpu", weights_dir=tmp_path).encode([_image()], "0.4bpp")


def test_unknown_and_custom_rate_ids_are_refused(tmp_path):
    full = HiFiC(device="cpu")
    stream = full.encode([_image(32, 32)], "0.2bpp")[0]
    rec = Container.unpack(stream)
    with pytest.raises(BitstreamError, match="rate point id 9 does not exist"):
        full.decode([Container(rec.codec, 9, rec.height, rec.width, rec.payload).pack()])
    custom = HiFiC(device="cpu", checkpoint=HIFIC_DIR / "hific_tiny_0p20bpp.safetensors")
    own = custom.encode([_image(32, 32)], custom.rate_points()[0])[0]
    assert Container.unpack(own).rate_id == CUSTOM_RATE_ID
    assert torch.equal(custom.decode([own])[0], full.decode([stream])[0])
    with pytest.raises(BitstreamError, match=f"rate point id {CUSTOM_RATE_ID} does not exist"):
        full.decode([own])  # a checkpoint=FILE stream never decodes through a table model


def test_msillm_with_one_release_file_keeps_its_rate_id(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv("RDP_BENCH_MSILLM_DOWNLOAD", raising=False)
    from rdp_bench.codecs.msillm import MSILLM

    ckpt = tmp_path / "hub" / "checkpoints" / "msillm_target_0.14bpp.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save(load_state_dict(HIFIC_DIR / "hific_tiny_0p10bpp.safetensors"), ckpt)
    codec = MSILLM(device="cpu")
    assert [p.label for p in codec.rate_points()] == ["quality_3"]
    stream = codec.encode([_image(32, 40)], "quality_3")[0]
    assert Container.unpack(stream).rate_id == 2
    assert codec.decode([stream])[0].shape == (3, 32, 40)
    rec = Container.unpack(stream)
    other = Container(rec.codec, 0, rec.height, rec.width, rec.payload).pack()  # quality_1's id
    with pytest.raises(CodecUnavailable, match=r"quality_1 \(id 0\) needs msillm_target_0\.035bpp\.ckpt; put it in "
                                              + str(ckpt.parent)):
        codec.decode([other])
    # the same release file given as checkpoint=FILE keeps quality_3's id
    moved = tmp_path / "elsewhere" / ckpt.name
    moved.parent.mkdir()
    shutil.copy(ckpt, moved)
    assert MSILLM(device="cpu", checkpoint=moved).rate_points()[0].id == 2


def test_cdc_with_one_checkpoint_keeps_its_rate_id(tmp_path):
    _copy(CDC_DIR, "cdc-tiny-l0p0015.safetensors", tmp_path)
    one = CDC(device="cpu", weights_dir=tmp_path, steps=1)
    full = CDC(device="cpu", steps=1)
    assert [p.label for p in one.rate_points()] == ["lambda0.0015"]
    assert len(full.rate_points()) == 4
    img = _image(32, 32)
    stream = one.encode([img], "lambda0.0015")[0]
    assert Container.unpack(stream).rate_id == 2 == full.rate_id(full.rate_point("lambda0.0015"))
    assert one.checkpoint_id(one.rate_point(2)) == full.checkpoint_id(full.rate_point(2))
    assert torch.equal(one.decode([stream])[0], full.decode([stream])[0])
    with pytest.raises(CodecUnavailable, match=r"lambda0\.032 \(id 0\) needs cdc-tiny-l0p032\.safetensors"):
        one.decode([full.encode([img], 0)[0]])
