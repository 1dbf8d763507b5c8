"""The RoI sampler and its box targets, bit for bit the same as when they were built on
torchvision's private ``_utils.Matcher`` / ``_utils.BoxCoder`` (the reference below is that code,
kept here in the test only)."""

import torch
from torchvision.models.detection import _utils as tv_utils
from torchvision.ops import box_iou

from opmask.modeling.box_regression import Box2BoxTransform
from opmask.modeling.matcher import subsample_labels
from opmask.modeling.sampling import RoISampler, box_targets

WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def _reference(proposals, targets, iou_thresh, batch_size, positive_fraction):
    """The sampler and ``box_targets`` as they were on torchvision's matcher and coder."""
    matcher, coder = tv_utils.Matcher(iou_thresh, iou_thresh, False), tv_utils.BoxCoder(WEIGHTS)
    samples = []
    for props, t in zip(proposals, targets):
        boxes = torch.cat([props, t["boxes"]])
        if len(t["boxes"]) == 0:
            idx = torch.zeros(len(boxes), dtype=torch.int64)
            labels = torch.zeros_like(idx)
        else:
            idx = matcher(box_iou(t["boxes"], boxes))
            labels = t["labels"][idx.clamp(min=0)]
            labels[idx == tv_utils.Matcher.BELOW_LOW_THRESHOLD] = 0
            labels[idx == tv_utils.Matcher.BETWEEN_THRESHOLDS] = -1
            idx = idx.clamp(min=0)
        pos, neg = subsample_labels(labels, batch_size, positive_fraction, 0, t["generator"])
        keep = torch.cat([pos, neg])
        samples.append((boxes[keep], labels[keep].clamp(min=0), idx[keep]))
    matched = [t["boxes"][i] if len(t["boxes"]) else b for (b, _, i), t in zip(samples, targets)]
    deltas = torch.cat(coder.encode(matched, [b for b, _, _ in samples]))
    return samples, deltas


def _image(g: torch.Generator, num_gt: int, num_props: int, seed: int):
    gt = torch.rand(num_gt, 2, generator=g) * 200
    gt = torch.cat([gt, gt + torch.rand(num_gt, 2, generator=g) * 80 + 2], 1)
    if num_gt > 2:
        gt[1, 2:] = gt[1, :2]  # a degenerate GT box (zero area)
    if num_gt:  # jittered copies of the GT (high IoU)
        near = gt[torch.randint(num_gt, (num_props,), generator=g)]
        near = near + torch.randn(num_props, 4, generator=g) * 6
    else:
        near = gt
    rand = torch.rand(num_props, 2, generator=g) * 250
    rand = torch.cat([rand, rand + torch.rand(num_props, 2, generator=g) * 60 + 1], 1)
    props = torch.cat([near, rand])[: 2 * num_props]
    labels = torch.randint(1, 6, (num_gt,), generator=g)
    return props, {"boxes": gt, "labels": labels, "seed": seed}


def _with_generators(targets):
    return [{**t, "generator": torch.Generator().manual_seed(t["seed"])} for t in targets]


def test_sampler_and_box_targets_same_as_on_torchvision_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    images = [
        _image(g, ng, nr, s) for s, (ng, nr) in enumerate([(4, 300), (0, 50), (1, 1), (12, 800)])
    ]
    images.append((torch.zeros(0, 4), {**images[0][1], "seed": 9}))  # GT but no proposals
    proposals = [p for p, _ in images]
    targets = [t for _, t in images]
    for thresh, batch, frac in [(0.5, 64, 0.25), (0.5, 512, 0.25), (0.7, 16, 0.5), (0.0, 32, 1.0)]:
        sampler = RoISampler(iou_thresh=thresh, batch_size=batch, positive_fraction=frac)
        got = sampler(proposals, _with_generators(targets))
        deltas = box_targets(got, targets, Box2BoxTransform(WEIGHTS))
        expected, expected_deltas = _reference(
            proposals, _with_generators(targets), thresh, batch, frac
        )
        for s, (boxes, labels, idx) in zip(got, expected):
            assert torch.equal(s.boxes, boxes)
            assert torch.equal(s.labels, labels) and s.labels.dtype == labels.dtype
            assert torch.equal(s.gt_index, idx) and s.gt_index.dtype == idx.dtype
        assert deltas.shape == expected_deltas.shape
        assert torch.equal(deltas.view(torch.int32), expected_deltas.view(torch.int32))
        assert (torch.cat([s.labels for s in got]) > 0).any()
