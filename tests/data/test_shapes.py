import json

import numpy as np
from PIL import Image
from pycocotools.coco import COCO

from opmask.data.coco import load_coco_json
from opmask.data.shapes import CLASSES, STRONG, generate


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    generate(str(tmp_path / "a"), seed=5, num_train=6, num_val=2, image_size=64)
    generate(str(tmp_path / "b"), seed=5, num_train=6, num_val=2, image_size=64)
    generate(str(tmp_path / "c"), seed=6, num_train=6, num_val=2, image_size=64)
    a = (tmp_path / "a" / "train" / "annotations.json").read_bytes()
    assert a == (tmp_path / "b" / "train" / "annotations.json").read_bytes()
    assert a != (tmp_path / "c" / "train" / "annotations.json").read_bytes()
    png = "train/images/000003.png"
    assert (tmp_path / "a" / png).read_bytes() == (tmp_path / "b" / png).read_bytes()


def test_pycocotools_loads_and_split_metadata(tmp_path):
    generate(str(tmp_path / "s"), seed=1, num_train=20, num_val=2, image_size=96)
    path = str(tmp_path / "s" / "train" / "annotations.json")
    coco = COCO(path)
    assert len(coco.getCatIds()) == len(CLASSES) and len(coco.getImgIds()) == 20
    meta = json.load(open(path))["opmask"]
    assert meta["strong_category_ids"] == [CLASSES.index(c) + 1 for c in STRONG]
    kinds = {type(a["segmentation"]).__name__ for a in coco.anns.values()}
    assert kinds == {"list", "dict"}  # both polygons and RLE are exercised
    for a in coco.anns.values():  # annotation boxes are the tight boxes of the masks
        m = coco.annToMask(a)
        ys, xs = np.nonzero(m)
        assert a["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
        assert a["area"] == m.sum() > 0
    dicts, info = load_coco_json(path, str(tmp_path / "s" / "train" / "images"), "s")
    assert info.dataset_strong_ids == meta["strong_category_ids"] and len(dicts) == 20


def test_refuses_to_overwrite(tmp_path):
    generate(str(tmp_path / "s"), seed=1, num_train=2, num_val=1, image_size=64)
    import pytest

    with pytest.raises(FileExistsError):
        generate(str(tmp_path / "s"), seed=1, num_train=2, num_val=1, image_size=64)


def test_each_class_has_its_own_hue_family(tmp_path):
    """Objects are coloured from their class's hue family (what the box head's CAM can find), in
    two tones with a random pattern, so no single colour threshold segments them."""
    import colorsys

    generate(str(tmp_path / "s"), seed=2, num_train=12, num_val=1, image_size=96)
    coco = COCO(str(tmp_path / "s" / "train" / "annotations.json"))
    checked = 0
    for a in coco.anns.values():
        m = coco.annToMask(a).astype(bool)
        if m.sum() < 60:
            continue
        info = coco.imgs[a["image_id"]]
        img = np.asarray(Image.open(tmp_path / "s" / "train" / "images" / info["file_name"]))
        hues = np.array([colorsys.rgb_to_hsv(*(px / 255.0))[0] for px in img[m][::3]])
        want = (a["category_id"] - 1) / len(CLASSES)
        off = np.abs((hues - want + 0.5) % 1.0 - 0.5)  # circular distance on the hue circle
        assert np.median(off) < 0.5 / len(CLASSES), (a["id"], CLASSES[a["category_id"] - 1])
        checked += 1
    assert checked >= 20
