"""Every PIL pixel mode a file can open as is read as the 8-bit RGB/BGR the model takes, or
refused by name; a file that cannot be decoded is one ``DatasetError`` naming it and why."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from opmask.data.coco import DatasetError
from opmask.data.mapper import read_image

VALUES16 = np.array([[0, 257, 5000, 32768], [40000, 65000, 65279, 65535]], dtype=np.uint16)
# round(v / 257): the fixed 16-bit -> 8-bit scale, computed by hand for each value above
EXPECTED8 = np.array([[0, 1, 19, 128], [156, 253, 254, 255]], dtype=np.uint8)


def _grey3(a: np.ndarray) -> np.ndarray:
    return np.repeat(a[..., None], 3, axis=2)


def test_16bit_png_is_scaled_by_1_257_not_clipped_white(tmp_path):
    path = tmp_path / "g16.png"
    Image.fromarray(VALUES16).save(path)
    with Image.open(path) as im:
        assert im.mode == "I;16"  # what a real 16-bit greyscale PNG opens as
    rgb = read_image(str(path), "RGB")
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 4, 3)
    np.testing.assert_array_equal(rgb, _grey3(EXPECTED8))
    np.testing.assert_array_equal(read_image(str(path), "BGR"), _grey3(EXPECTED8))
    assert (rgb == 255).mean() < 0.2  # PIL's own convert("RGB") made 7 of 8 pixels 255


def test_16bit_tiff_big_endian_and_pgm_mode_i(tmp_path):
    Image.fromarray(VALUES16.astype(">u2")).save(tmp_path / "b.tif")
    Image.fromarray(VALUES16).save(tmp_path / "p.pgm")
    with Image.open(tmp_path / "p.pgm") as im:
        assert im.mode == "I"  # 32-bit integers holding 16-bit values
    for name in ("b.tif", "p.pgm"):
        np.testing.assert_array_equal(read_image(str(tmp_path / name), "RGB"), _grey3(EXPECTED8))


def test_32bit_integer_out_of_16bit_range_and_float_are_refused_by_mode(tmp_path):
    Image.fromarray(np.array([[0, 70000]], dtype=np.int32)).save(tmp_path / "i.tif")
    with pytest.raises(DatasetError, match=r"i\.tif: pixel mode I \(32-bit integers\) with "):
        read_image(str(tmp_path / "i.tif"), "RGB")
    Image.fromarray(np.array([[0.0, 0.5]], dtype=np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(DatasetError, match=r"f\.tif: pixel mode F is not supported"):
        read_image(str(tmp_path / "f.tif"), "RGB")


def test_palette_1bit_la_rgba_cmyk_modes(tmp_path):
    rgb = np.array([[[255, 0, 0], [0, 128, 255]], [[10, 20, 30], [200, 200, 0]]], np.uint8)
    Image.fromarray(rgb).quantize(4).save(tmp_path / "p.png")  # palette
    with Image.open(tmp_path / "p.png") as im:
        assert im.mode == "P"
    np.testing.assert_array_equal(read_image(str(tmp_path / "p.png"), "RGB"), rgb)
    Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8)).convert("1").save(tmp_path / "b.png")
    one = read_image(str(tmp_path / "b.png"), "RGB")
    np.testing.assert_array_equal(one, _grey3(np.array([[0, 255], [255, 0]], np.uint8)))
    la = np.array([[[7, 0], [99, 255]]], np.uint8)  # alpha dropped, as Detectron2 drops it
    Image.frombytes("LA", (2, 1), la.tobytes()).save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(str(tmp_path / "la.png"), "RGB"), _grey3(la[..., 0]))
    rgba = np.concatenate([rgb, np.full((2, 2, 1), 3, np.uint8)], axis=2)
    Image.frombytes("RGBA", (2, 2), rgba.tobytes()).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(str(tmp_path / "a.png"), "RGB"), rgb)
    np.testing.assert_array_equal(read_image(str(tmp_path / "a.png"), "BGR"), rgb[..., ::-1])
    cmyk = np.array([[[255, 0, 0, 0], [0, 0, 0, 255]]], np.uint8)  # cyan, black
    Image.frombytes("CMYK", (2, 1), cmyk.tobytes()).save(tmp_path / "c.tif")
    np.testing.assert_array_equal(
        read_image(str(tmp_path / "c.tif"), "RGB"), np.array([[[0, 255, 255], [0, 0, 0]]])
    )


def _png(tmp_path, name="x.png"):
    path = tmp_path / name
    Image.fromarray(np.full((40, 50, 3), 100, np.uint8)).save(path)
    return path


def test_truncated_not_an_image_and_a_folder_name_the_file_and_reason(tmp_path):
    good = _png(tmp_path).read_bytes()
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetError) as e:
        read_image(str(tmp_path / "cut.png"), "BGR")
    assert str(e.value).startswith(f"cannot read image {tmp_path / 'cut.png'}: ")
    assert "truncated" in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "t.png").write_text("hello")
    with pytest.raises(DatasetError, match=r"t\.png: not an image file PIL can identify$"):
        read_image(str(tmp_path / "t.png"), "BGR")
    (tmp_path / "d.png").mkdir()
    with pytest.raises(DatasetError, match=r"d\.png: Is a directory$"):
        read_image(str(tmp_path / "d.png"), "BGR")


def test_control_characters_in_a_name_are_escaped(tmp_path):
    with pytest.raises(DatasetError) as e:
        read_image(str(tmp_path / "a\x1b[31mb\nc.png"), "BGR")
    msg = str(e.value)
    assert "\x1b" not in msg and "\n" not in msg and "\\x1b[31mb\\nc.png" in msg
    assert msg.endswith("No such file or directory")
    with pytest.raises(DatasetError) as e:
        read_image(str(tmp_path / "nul\x00.png"), "BGR")
    assert "\x00" not in str(e.value) and "nul\\x00.png" in str(e.value)
