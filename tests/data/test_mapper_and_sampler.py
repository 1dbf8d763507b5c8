import itertools

import numpy as np
import torch
from PIL import Image

from opmask.data.catalog import load_dataset
from opmask.data.coco import mask_to_rle
from opmask.data.mapper import DatasetMapper, shortest_edge_size
from opmask.data.masks import InstanceMasks
from opmask.data.samplers import TrainingBatchSampler


def test_shortest_edge_size():
    assert shortest_edge_size(480, 640, 800, 1333) == (800, 1067)
    assert shortest_edge_size(100, 1000, 800, 1333) == (133, 1333)


def test_flip_keeps_boxes_and_masks_consistent(shapes_env):
    dicts, _ = load_dataset("shapes_train")
    mapper = DatasetMapper(is_train=True, min_sizes=[120], max_size=400, flip=True)
    d = next(x for x in dicts if x["annotations"])
    flips = 0
    for seed in range(6):
        out = mapper(d, np.random.default_rng(seed))
        inst = out["instances"]
        full = inst["masks"].to_bitmasks()
        assert out["image"].shape[1:] == full.shape[1:]
        for box, m in zip(inst["boxes"], full):
            ys, xs = torch.nonzero(m, as_tuple=True)
            # the rasterised mask lies inside its (rescaled) box, up to a pixel of rounding
            assert xs.min() >= box[0] - 1.5 and xs.max() + 1 <= box[2] + 1.5
            assert ys.min() >= box[1] - 1.5 and ys.max() + 1 <= box[3] + 1.5
        plain = mapper(d)  # no rng: no flip, first size
        flips += not torch.equal(out["image"], plain["image"])
    assert flips > 0
    assert inst["labels"].min() >= 1


def _one_image_dataset(tmp_path):
    """A 40x20 image with a polygon instance, an RLE instance and a box-only one (boxes xyxy)."""
    Image.new("RGB", (40, 20)).save(tmp_path / "a.png")
    rle = np.zeros((20, 40), np.uint8)
    rle[0:10, 20:40] = 1
    annos = [
        {"bbox": [4, 2, 12, 8], "category_id": 0, "segmentation": [[4, 2, 12, 2, 12, 8, 4, 8]]},
        {"bbox": [20, 0, 40, 10], "category_id": 1, "segmentation": mask_to_rle(rle)},
        {"bbox": [0, 0, 5, 5], "category_id": 2},
    ]
    return {
        "file_name": str(tmp_path / "a.png"),
        "height": 20,
        "width": 40,
        "image_id": 1,
        "annotations": annos,
    }


def test_polygon_dataset_ships_polygons_not_image_masks(tmp_path):
    d = _one_image_dataset(tmp_path)
    mapper = DatasetMapper(is_train=True, min_sizes=[40], max_size=200)
    inst = mapper(d)["instances"]  # no rng: short side 40 (scale 2), no flip
    masks = inst["masks"]
    assert isinstance(masks, InstanceMasks) and not isinstance(masks, torch.Tensor)
    assert masks.image_size == (40, 80) and len(masks) == 3
    (poly,) = masks.masks[0]  # still a polygon, scaled by 2
    np.testing.assert_allclose(poly, [8, 4, 24, 4, 24, 16, 8, 16])
    assert masks.masks[1].shape == (40, 80) and masks.masks[1].sum() == 20 * 40  # RLE: bit mask
    assert masks.masks[2] is None and inst["has_mask"].tolist() == [True, True, False]
    bit = DatasetMapper(is_train=True, min_sizes=[40], max_size=200, mask_format="bitmask")
    full = bit(d)["instances"]["masks"]
    assert isinstance(full, torch.Tensor) and full.shape == (3, 40, 80)
    assert torch.equal(full, masks.to_bitmasks())


def test_flipped_polygon_and_rle_stay_aligned(tmp_path):
    d = _one_image_dataset(tmp_path)
    mapper = DatasetMapper(is_train=True, min_sizes=[20], max_size=200, flip=True)
    for seed in range(20):
        out = mapper(d, np.random.default_rng(seed))
        if out["instances"]["boxes"][0, 0] != 4:  # flipped
            break
    inst = out["instances"]
    assert inst["boxes"][0].tolist() == [28, 2, 36, 8]
    np.testing.assert_allclose(inst["masks"].masks[0][0], [36, 2, 28, 2, 28, 8, 36, 8])
    assert inst["masks"].masks[1][:10, :20].all() and inst["masks"].masks[1].sum() == 200


def test_shapes_dataset_gives_both_forms(shapes_env):
    dicts, _ = load_dataset("shapes_train")
    mapper = DatasetMapper(is_train=True, min_sizes=[96], max_size=400)
    forms = set()
    for d in dicts:
        for m in mapper(d)["instances"]["masks"].masks:
            forms.add(type(m).__name__)
    assert {"list", "Tensor"} <= forms


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_sampler_is_deterministic_and_resumable():
    flags = [i % 3 == 0 for i in range(17)]
    full = _take(TrainingBatchSampler(flags, 2, seed=4), 30)
    assert full == _take(TrainingBatchSampler(flags, 2, seed=4), 30)
    assert full[12:30] == _take(TrainingBatchSampler(flags, 2, seed=4, start_iter=12), 18)
    assert full != _take(TrainingBatchSampler(flags, 2, seed=5), 30)
    for batch in full:  # aspect groups are never mixed
        assert len({flags[i] for i, _ in batch}) == 1


def test_sampler_ranks_partition_the_stream():
    flags = [True] * 10
    r0 = _take(TrainingBatchSampler(flags, 2, seed=1, rank=0, world_size=2), 10)
    r1 = _take(TrainingBatchSampler(flags, 2, seed=1, rank=1, world_size=2), 10)
    p0 = {p for b in r0 for _, p in b}
    p1 = {p for b in r1 for _, p in b}
    assert not p0 & p1 and p0 | p1 == set(range(40))
    single = _take(TrainingBatchSampler(flags, 4, seed=1, group=False), 10)
    assert {p for b in single for _, p in b} == set(range(40))
