import numpy as np
import pytest
from PIL import Image

from rdp_bench.imageio import ImageReadError, load_image, load_image_uint8


def test_grayscale_expanded(tmp_path):
    arr = (np.arange(12 * 7) % 256).astype(np.uint8).reshape(7, 12)
    Image.fromarray(arr, "L").save(tmp_path / "g.png")
    out = load_image_uint8(tmp_path / "g.png")
    assert out.shape == (7, 12, 3) and out.dtype == np.uint8
    assert (out[..., 0] == arr).all() and (out[..., 2] == arr).all()


def test_rgba_alpha_dropped(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (9, 5, 4), dtype=np.uint8)
    arr[..., 3] = 0  # fully transparent: colours must survive, not turn black
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png")
    out = load_image_uint8(tmp_path / "a.png")
    assert out.shape == (9, 5, 3)
    assert (out == arr[..., :3]).all()


def test_16bit_grayscale_rescaled(tmp_path):
    arr = np.array([[0, 257, 65535, 32896]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "d.png")  # uint16 -> mode I;16
    assert Image.open(tmp_path / "d.png").mode.startswith("I")
    out = load_image_uint8(tmp_path / "d.png")
    assert out[0, :, 0].tolist() == [0, 1, 255, 128]


def test_palette_image(tmp_path):
    img = Image.new("P", (4, 3))
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.putpixel((1, 1), 1)
    img.save(tmp_path / "p.png")
    out = load_image_uint8(tmp_path / "p.png")
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[1, 1]) == (0, 255, 0)


def test_float_tensor_range(tmp_path):
    Image.fromarray(np.full((2, 3, 3), 255, np.uint8)).save(tmp_path / "w.png")
    t = load_image(tmp_path / "w.png")
    assert t.shape == (3, 2, 3) and float(t.max()) == 1.0


def test_unreadable_file_named(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageReadError, match="broken.png"):
        load_image(bad)
    with pytest.raises(ImageReadError, match="missing.png"):
        load_image(tmp_path / "missing.png")
