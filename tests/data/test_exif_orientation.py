"""Images are read upright by their EXIF Orientation tag, as Detectron2 v0.6's ``read_image``
(``_apply_exif_orientation``), in the training and the test mapper."""

from __future__ import annotations

import numpy as np
from PIL import Image

from opmask.data.images import read_image
from opmask.data.mapper import DatasetMapper


def _jpeg(path, orientation=None):
    """A 24x32 JPEG of distinct pixels; the same compressed pixels with or without the tag."""
    y, x = np.mgrid[0:24, 0:32]
    rgb = np.stack([x * 8, y * 10, (x + y) * 4], -1).astype(np.uint8)
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    Image.fromarray(rgb).save(path, quality=95, exif=exif.tobytes())
    return str(path)


def test_orientation_3_reads_rotated_180(tmp_path):
    plain = read_image(_jpeg(tmp_path / "plain.jpg"), "RGB")
    turned = read_image(_jpeg(tmp_path / "o3.jpg", 3), "RGB")
    assert plain.shape == (24, 32, 3)
    np.testing.assert_array_equal(turned, plain[::-1, ::-1])
    np.testing.assert_array_equal(read_image(_jpeg(tmp_path / "o1.jpg", 1), "RGB"), plain)


def test_orientation_6_reads_rotated_clockwise(tmp_path):
    plain = read_image(_jpeg(tmp_path / "plain.jpg"), "BGR")
    turned = read_image(_jpeg(tmp_path / "o6.jpg", 6), "BGR")
    assert turned.shape == (32, 24, 3)
    np.testing.assert_array_equal(turned, np.rot90(plain, -1))


def test_mappers_read_upright(tmp_path):
    """Train and test mappers: the 180°-turned pixels, at the size the annotations give."""
    plain = read_image(_jpeg(tmp_path / "plain.jpg"), "BGR")
    d = {"file_name": _jpeg(tmp_path / "o3.jpg", 3), "height": 24, "width": 32, "image_id": 1}
    want = np.ascontiguousarray(plain[::-1, ::-1].transpose(2, 0, 1)).astype(np.float32)
    for is_train in (False, True):
        mapper = DatasetMapper(is_train=is_train, min_sizes=[24], max_size=100)
        out = mapper(dict(d, annotations=[]))
        np.testing.assert_array_equal(out["image"].numpy(), want)
