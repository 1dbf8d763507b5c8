"""An image whose only annotation has a zero-size box stays in the training set and trains as
background, as in Detectron2 v0.6: its ``load_coco_json`` keeps the annotation,
``filter_images_with_only_crowd_annotations`` keeps every image with a non-crowd annotation, and
the mapper's ``filter_empty_instances`` drops the empty box. Images without annotations, or whose
annotations all lose their polygons (< 3 points), are removed as before."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from opmask.data.catalog import with_instances
from opmask.data.coco import load_coco_json
from opmask.data.index import open_index
from opmask.data.mapper import DatasetMapper

SQUARE = [[2.0, 2.0, 20.0, 2.0, 20.0, 20.0, 2.0, 20.0]]


def _dataset(tmp_path):
    def ann(i, image_id, bbox, segm):
        return {"id": i, "image_id": image_id, "category_id": 1, "bbox": bbox,
                "segmentation": segm, "area": 1.0, "iscrowd": 0}  # fmt: skip

    annotations = [
        ann(1, 1, [4.0, 4.0, 0.0, 10.0], SQUARE),  # image 1: only a zero-width box
        ann(2, 2, [2.0, 2.0, 18.0, 18.0], SQUARE),  # image 2: a normal instance
        ann(3, 3, [2.0, 2.0, 18.0, 18.0], [[1.0, 1.0, 5.0, 5.0]]),  # image 3: no valid polygon
    ]  # image 4: no annotation
    images = []
    for i in range(1, 5):
        Image.fromarray(np.zeros((32, 40, 3), np.uint8)).save(tmp_path / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": 40, "height": 32})
    path = tmp_path / "ann.json"
    data = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "a"}]}
    path.write_text(json.dumps(data))
    return str(path), str(tmp_path)


def test_image_with_only_a_zero_size_box_is_kept(tmp_path):
    json_file, root = _dataset(tmp_path)
    dicts, info = load_coco_json(json_file, root, "x")
    assert info.dropped == {
        "degenerate box": 1,
        "degenerate polygon": 1,
        "annotation without valid polygon": 1,
    }
    assert [len(d["annotations"]) for d in dicts] == [1, 1, 0, 0]
    assert dicts[0]["annotations"][0]["bbox"] == [4.0, 4.0, 4.0, 14.0]
    idx, _ = open_index(json_file, root, "x", str(tmp_path / "cache"))
    for kept in (with_instances(dicts), with_instances(idx)):  # FILTER_EMPTY_ANNOTATIONS
        assert [d["image_id"] for d in kept] == [1, 2]
    mapper = DatasetMapper(is_train=True, min_sizes=[64], max_size=200)
    background = mapper(idx[0])["instances"]
    assert background["boxes"].shape == (0, 4) and background["labels"].tolist() == []
    assert mapper(idx[1])["instances"]["boxes"].tolist() == [[4.0, 4.0, 40.0, 40.0]]
