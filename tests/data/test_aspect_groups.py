"""Aspect-ratio groups as Detectron2's ``AspectRatioGroupedDataset``: ``w > h`` is landscape,
everything else (squares included) portrait; a global batch holds one group."""

from __future__ import annotations

import json

from opmask.data.build import _aspect_flags
from opmask.data.coco import load_coco_json
from opmask.data.index import open_index
from opmask.data.samplers import TrainingBatchSampler

SIZES = [(64, 64), (80, 64), (64, 80), (65, 64), (64, 65), (100, 100)]  # (width, height)
LANDSCAPE = [False, True, False, True, False, False]


def _coco(tmp_path):
    images = [
        {"id": i + 1, "file_name": f"{i}.png", "width": w, "height": h}
        for i, (w, h) in enumerate(SIZES)
    ]
    annotations = [
        {"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [2, 2, 20, 20], "area": 400,
         "iscrowd": 0}
        for i in range(len(SIZES))
    ]  # fmt: skip
    for i in range(len(SIZES)):  # the loader checks that each file exists
        (tmp_path / f"{i}.png").write_bytes(b"")
    path = tmp_path / "ann.json"
    path.write_text(
        json.dumps(
            {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "a"}]}
        )
    )
    return str(path), str(tmp_path)


def test_square_images_are_portrait(tmp_path):
    json_file, root = _coco(tmp_path)
    dicts, _ = load_coco_json(json_file, root, "x")
    assert [(d["width"], d["height"]) for d in dicts] == SIZES
    assert _aspect_flags(dicts) == LANDSCAPE  # the JSON path
    idx, _ = open_index(json_file, root, "x", str(tmp_path / "cache"))
    assert _aspect_flags(idx) == LANDSCAPE  # the memory-mapped index


def test_batches_put_squares_with_portraits():
    sampler = TrainingBatchSampler(LANDSCAPE, 2, seed=0)
    batches = iter(sampler)
    for _ in range(30):
        batch = [i for i, _ in next(batches)]
        assert len({LANDSCAPE[i] for i in batch}) == 1, batch
        assert {SIZES[i][0] > SIZES[i][1] for i in batch} == {LANDSCAPE[batch[0]]}
