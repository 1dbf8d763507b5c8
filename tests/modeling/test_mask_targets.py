"""Mask targets per RoI: polygons rasterised inside each RoI (Detectron2's PolygonMasks), bit masks
(RLE annotations) by aligned RoIAlign (Detectron2's BitMasks)."""

import numpy as np
import torch

from opmask.data.masks import InstanceMasks, crop_bitmasks, rasterize_polygons_within_box
from opmask.modeling.sampling import RoISample, mask_targets


def _square(x0, y0, x1, y1):
    return np.array([x0, y0, x1, y0, x1, y1, x0, y1], dtype=np.float64)


def test_square_polygon_in_box_golden():
    # box 40x40 at the origin, 8x8 target: scale 0.2, the square 10..30 becomes 2..6; a pixel is
    # set when its centre lies inside, so rows and columns 2..5.
    got = rasterize_polygons_within_box([_square(10, 10, 30, 30)], np.float32([0, 0, 40, 40]), 8)
    want = np.zeros((8, 8), np.uint8)
    want[2:6, 2:6] = 1
    np.testing.assert_array_equal(got, want)


def test_polygon_translated_and_scaled_per_axis_golden():
    # box (10, 10)-(30, 20), 4x4: x scale 0.2, y scale 0.4; the square x 15..25, y 12..16
    # becomes x 1..3, y 0.8..2.4: centres 1.5, 2.5 in x and only 1.5 in y are inside.
    got = rasterize_polygons_within_box([_square(15, 12, 25, 16)], np.float32([10, 10, 30, 20]), 4)
    want = np.zeros((4, 4), np.uint8)
    want[1, 1:3] = 1
    np.testing.assert_array_equal(got, want)


def test_polygons_merge_as_union_and_degenerate_box():
    ring = [_square(0, 0, 8, 8), _square(2, 2, 6, 6)]  # pycocotools merges: union, not a hole
    got = rasterize_polygons_within_box(ring, np.float32([0, 0, 8, 8]), 8)
    assert got.sum() == 64
    flat = rasterize_polygons_within_box([_square(0, 0, 8, 8)], np.float32([3, 3, 3, 3]), 4)
    assert flat.shape == (4, 4)  # a zero-size box is treated as 0.1 wide; no division by zero


def test_bitmask_crop_golden():
    m = torch.zeros(1, 32, 32, dtype=torch.uint8)
    m[0, 4:12, 8:24] = 1
    boxes = torch.tensor([[8.0, 4.0, 24.0, 12.0], [24.0, 12.0, 32.0, 20.0], [0.0, 0.0, 16.0, 8.0]])
    got = crop_bitmasks(m.expand(3, -1, -1), boxes, 4)
    assert got[0].all() and not got[1].any()
    # third box: mask covers x >= 8 (right half) and y >= 4 (bottom half) of the box
    want = torch.zeros(4, 4, dtype=torch.bool)
    want[2:, 2:] = True
    assert torch.equal(got[2], want)


def test_mixed_forms_and_missing_masks():
    bit = torch.zeros(40, 40, dtype=torch.uint8)
    bit[0:20, 0:20] = 1
    inst = InstanceMasks([[_square(10, 10, 30, 30)], bit, None], (40, 40))
    boxes = torch.tensor([[0.0, 0.0, 40.0, 40.0], [0.0, 0.0, 20.0, 20.0], [0.0, 0.0, 40.0, 40.0]])
    got = inst.crop_and_resize(torch.tensor([0, 1, 2]), boxes, 8)
    assert got.dtype == torch.bool and got.shape == (3, 8, 8)
    assert got[0, 2:6, 2:6].all() and got[0].sum() == 16
    assert got[1].all() and not got[2].any()
    full = inst.to_bitmasks()
    assert full.shape == (3, 40, 40) and full[0].sum() == 400 and full[1].sum() == 400


def test_mask_targets_takes_instance_masks_and_plain_bitmask_stacks():
    poly = InstanceMasks([[_square(10, 10, 30, 30)], None], (40, 40))
    stack = torch.zeros(1, 40, 40, dtype=torch.uint8)
    stack[0, 10:30, 10:30] = 1
    box = torch.tensor([[0.0, 0.0, 40.0, 40.0], [5.0, 5.0, 9.0, 9.0]])
    samples = [
        RoISample(box, torch.tensor([1, 2]), torch.tensor([0, 1])),
        RoISample(box, torch.tensor([1, 0]), torch.tensor([0, 0])),  # second RoI is background
    ]
    targets = [
        {"masks": poly, "has_mask": torch.tensor([True, False])},
        {"masks": stack, "has_mask": torch.tensor([True])},
    ]
    gt, has_mask = mask_targets(samples, targets, 8)
    assert gt.shape == (3, 8, 8) and gt.dtype == torch.float32
    assert has_mask.tolist() == [True, False, True]
    assert torch.equal(gt[0], gt[2])  # polygon and bit mask of the same square agree here
    assert gt[0].sum() == 16 and gt[1].sum() == 0


def test_mask_targets_without_foreground():
    samples = [
        RoISample(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), torch.zeros(2).long())
    ]
    targets = [{"masks": InstanceMasks([], (8, 8)), "has_mask": torch.zeros(0, dtype=torch.bool)}]
    gt, has_mask = mask_targets(samples, targets, 28)
    assert gt.shape == (0, 28, 28) and has_mask.shape == (0,)
