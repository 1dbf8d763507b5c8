"""Training gt boxes after the resize (and flip) are clipped to the image and empty ones dropped,
as Detectron2 v0.6's ``transform_instance_annotations`` (``apply_box``, ``clip(min=0)``,
``np.minimum(box, [w, h, w, h])``) and ``filter_empty_instances`` (box sides > 1e-5)."""

from __future__ import annotations

import numpy as np
import torch

from opmask.data.mapper import DatasetMapper

SQUARE = [[20.0, 20.0, 60.0, 20.0, 60.0, 60.0, 20.0, 60.0]]


def _image(boxes):
    """A 400x300 image; the mapper resizes it to 800x600 (scale 2)."""
    annos = [{"bbox": b, "category_id": 0, "segmentation": SQUARE, "iscrowd": 0} for b in boxes]
    return {
        "pixels": np.zeros((300, 400, 3), np.uint8),
        "file_name": "x.png",
        "height": 300,
        "width": 400,
        "image_id": 1,
        "annotations": annos,
    }


def test_boxes_clipped_to_the_resized_image():
    d = _image([[-0.935, 10.0, 401.875, 100.0], [5.0, -0.5, 20.0, 300.75]])
    out = DatasetMapper(is_train=True, min_sizes=[600], max_size=2000)(d)
    assert out["image"].shape[1:] == (600, 800)
    # scaled: [-1.87, 20, 803.75, 200] and [10, -1, 40, 601.5]
    assert out["instances"]["boxes"].tolist() == [
        [0.0, 20.0, 800.0, 200.0],
        [10.0, 0.0, 40.0, 600.0],
    ]


def test_flipped_boxes_clipped_too():
    d = _image([[-0.935, 10.0, 401.875, 100.0]])
    mapper = DatasetMapper(is_train=True, min_sizes=[600], max_size=2000, flip=True)
    for seed in range(4):  # flipped: [-3.75, 20, 801.87, 200] -> the same clipped box
        out = mapper(d, np.random.default_rng(seed))
        assert out["instances"]["boxes"].tolist() == [[0.0, 20.0, 800.0, 200.0]]


def test_empty_boxes_dropped_with_their_label_and_mask():
    """A zero-width box, and one wholly beyond the right edge (empty once clipped), go; the
    instance between them keeps its label and mask."""
    d = _image([[10.0, 10.0, 10.0, 50.0], [30.0, 10.0, 50.0, 50.0], [400.2, 10.0, 401.5, 50.0]])
    d["annotations"][1]["category_id"] = 2
    inst = DatasetMapper(is_train=True, min_sizes=[600], max_size=2000)(d)["instances"]
    assert inst["boxes"].tolist() == [[60.0, 20.0, 100.0, 100.0]]
    assert inst["labels"].tolist() == [3] and inst["has_mask"].tolist() == [True]
    assert len(inst["masks"]) == 1


def test_image_with_only_empty_boxes_trains_as_background():
    d = _image([[10.0, 10.0, 10.0, 50.0]])
    inst = DatasetMapper(is_train=True, min_sizes=[600], max_size=2000)(d)["instances"]
    assert inst["boxes"].shape == (0, 4) and inst["labels"].tolist() == []
    assert inst["boxes"].dtype == torch.float32 and len(inst["masks"]) == 0
