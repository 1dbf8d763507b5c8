"""What trains but deserves a word is said, at load (one warning per dataset) and by
``opmask-data check`` (how many, which files): polygons outside their image, zero-size boxes,
file names outside the image folder, 16-bit images; a folder or a symlink loop where an image
should be is named as such; a name with control characters is printed escaped."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from opmask.cli.data import main
from opmask.data import catalog, coco
from opmask.data.catalog import load_dataset

H, W = 40, 50


def _dataset(tmp_path, names=("a.png", "b.png", "c.png"), anns=None) -> str:
    """A COCO file of 40x50 images (written where the name points inside ``images/``) with one
    square annotation each, or ``anns``; returns the ANNOTATIONS.json:IMAGE_DIR spec."""
    root = tmp_path / "images"
    root.mkdir(exist_ok=True)
    for name in names:
        path = root / name
        if not os.path.isabs(name) and ".." not in name and name.isprintable():
            Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(path)
    square = [10, 10, 20, 10, 20, 20, 10, 20]
    if anns is None:
        anns = [{"image_id": i + 1, "bbox": [10, 10, 10, 10], "segmentation": [square]}
                for i in range(len(names))]  # fmt: skip
    for i, a in enumerate(anns):
        a.update(id=i + 1, category_id=1, iscrowd=0, area=100)
    data = {
        "images": [
            {"id": i + 1, "file_name": n, "height": H, "width": W} for i, n in enumerate(names)
        ],
        "annotations": anns,
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "a.json").write_text(json.dumps(data))
    return f"{tmp_path}/a.json:{root}"


def _check(spec: str, tmp_path, capsys) -> tuple[int, str]:
    rc = main(["check", spec, "--workers", "1"])
    return rc, capsys.readouterr().out


def _far(dx: float) -> list[float]:
    return [v + dx if i % 2 == 0 else v for i, v in enumerate([10, 10, 20, 10, 20, 20, 10, 20])]


def test_polygons_outside_warned_once_at_load_and_by_check(tmp_path, caplog, capsys):
    anns = [
        {"image_id": 1, "bbox": [40, 10, 10, 10], "segmentation": [_far(35)]},  # crosses the edge
        {"image_id": 2, "bbox": [10, 10, 10, 10], "segmentation": [_far(1000)]},
        {"image_id": 3, "bbox": [10, 10, 10, 10], "segmentation": [_far(-1000)]},
        {"image_id": 3, "bbox": [10, 10, 0, 10], "segmentation": [_far(0)]},  # zero width
    ]
    spec = _dataset(tmp_path, anns=anns)
    with caplog.at_level(logging.WARNING, logger="opmask.data"):
        load_dataset(spec, index=True, cache_dir=str(tmp_path / "cache"))
        load_dataset(spec, index=True, cache_dir=str(tmp_path / "cache"))  # once per process
        load_dataset(spec, index=False)
    warned = [r.getMessage() for r in caplog.records if "mostly outside" in r.getMessage()]
    assert warned == [
        "dataset a: 2 annotations with polygons mostly outside their image (under half their "
        "extent inside); they train clipped to the image (first: image id 2, annotation 2, "
        f"{tmp_path}/images/b.png)"
    ]
    coco._WARNED.clear()  # a new process: the cached index warns as its JSON did
    catalog._OPENED.clear()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="opmask.data"):
        load_dataset(spec, index=True, cache_dir=str(tmp_path / "cache"))
    assert [r.getMessage() for r in caplog.records] == warned
    rc, out = _check(spec, tmp_path, capsys)
    assert rc == 0 and out.strip().endswith("OK (3 warnings)"), out
    assert "  warning: zero-width or zero-height boxes (dropped by training): 1 (first image " \
        "ids: 3)\n    image id 3: annotation 4: bbox [10, 10, 0, 10]" in out  # fmt: skip
    assert "  warning: polygons mostly outside their image (under half their extent inside); " \
        "they train clipped to the image: 2 (first image ids: 2, 3)" in out  # fmt: skip
    assert "    image id 2: annotation 2: outside the 50x40 image b.png" in out
    assert "    image id 3: annotation 3: outside the 50x40 image c.png" in out


def test_names_outside_the_folder_warned_and_control_characters_escaped(tmp_path, caplog, capsys):
    outside = tmp_path / "elsewhere.png"
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(outside)
    names = ("a.png", "../elsewhere.png", str(outside), "x\x1b[2Jy\n.png")
    spec = _dataset(tmp_path, names=names)
    with caplog.at_level(logging.WARNING, logger="opmask.data"):
        load_dataset(spec, index=True, cache_dir=str(tmp_path / "cache"))
    assert [r.getMessage() for r in caplog.records] == [
        "dataset a: 2 images with file_name absolute or leading out of the image folder with "
        "'..'; read as given (first: image id 2: ../elsewhere.png)"
    ]
    rc, out = _check(spec, tmp_path, capsys)
    assert rc == 1 and "\x1b" not in out, out
    assert "  warning: file_name absolute or leading out of the image folder with '..'; read as " \
        "given: 2 (first image ids: 2, 3)" in out  # fmt: skip
    assert "  missing image file: 1 (first image ids: 4)\n    image id 4: not found: " \
        f"'{tmp_path}/images/x\\x1b[2Jy\\n.png'" in out  # fmt: skip


def test_folder_symlink_loop_dangling_link_and_pixel_modes_named(tmp_path, capsys):
    names = ("dir.png", "loop.png", "gone.png", "g16.png", "f.tif", "ok.png")
    spec = _dataset(tmp_path, names=names)
    images = tmp_path / "images"
    for name in names[:3]:
        os.remove(images / name)
    (images / "dir.png").mkdir()
    os.symlink("loop.png", images / "loop.png")
    os.symlink("nowhere.png", images / "gone.png")
    Image.fromarray(np.full((H, W), 40000, np.uint16)).save(images / "g16.png")
    Image.fromarray(np.zeros((H, W), np.float32)).save(images / "f.tif")
    rc, out = _check(spec, tmp_path, capsys)
    assert rc == 1, out
    assert "  not an image file: 2 (first image ids: 1, 2)" in out
    assert f"    image id 1: is a directory: {images}/dir.png" in out
    assert f"    image id 2: symlink loop: {images}/loop.png" in out
    assert f"    image id 3: symlink to a missing file: {images}/gone.png" in out
    assert (
        "  warning: 16-bit images (read scaled by 1/257 to 8 bits): 1 (first image ids: 4)" in out
    )
    assert f"    image id 4: {images}/g16.png: mode I;16" in out
    assert f"    image id 5: {images}/f.tif: mode F" in out
    assert "FAILED: 4 problems" in out
    rc, decoded = main(["check", spec, "--workers", "1", "--decode"]), capsys.readouterr().out
    assert rc == 1 and "image id 5: " in decoded and "pixel mode F is not supported" in decoded


@pytest.mark.parametrize("bad", ["truncated", "text"])
def test_check_names_the_decoder_reason(tmp_path, capsys, bad):
    spec = _dataset(tmp_path, names=("a.png",))
    path = tmp_path / "images" / "a.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if bad == "truncated" else b"hello")
    rc, out = main(["check", spec, "--workers", "1", "--decode"]), capsys.readouterr().out
    reason = "truncated" if bad == "truncated" else "not an image file PIL can identify"
    assert rc == 1 and f"image id 1: {path}: " in out and reason in out, out


@pytest.mark.parametrize("name", ["a\x00b.png", "a\udc80b.png"])
def test_a_name_no_file_can_have_is_refused_at_load_escaped(tmp_path, name):
    spec = _dataset(tmp_path, names=(name,))
    with pytest.raises(coco.DatasetError) as e:
        load_dataset(spec, index=True, cache_dir=str(tmp_path / "cache"))
    assert str(e.value).endswith(
        f"image id 1: 'file_name' {ascii(name)} cannot name a file (a NUL byte or a lone surrogate)"
    )
    assert str(e.value).isprintable()
