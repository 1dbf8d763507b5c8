import json

import numpy as np
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
