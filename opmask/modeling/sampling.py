"""Training targets for the RoI heads: match proposals to GT (``matcher.Matcher``), sample,
encode (``box_regression.Box2BoxTransform``), crop masks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import box_iou

from ..data.masks import InstanceMasks
from .box_regression import Box2BoxTransform
from .matcher import Matcher, subsample_labels


@dataclass
class RoISample:
    """Sampled RoIs of one image; ``gt_index``: the matched GT instance (valid where label > 0)."""

    boxes: torch.Tensor  # (R, 4)
    labels: torch.Tensor  # (R,) 0 = background
    gt_index: torch.Tensor  # (R,)


class RoISampler:
    """Adds GT boxes to the proposals, matches at ``iou_thresh``, samples ``batch_size`` RoIs
    per image with ``positive_fraction`` foreground, positives first (Detectron2's procedure),
    drawing from the image's own generator (``targets[i]["generator"]``) when it has one.

    Unmatched RoIs (below ``iou_thresh``) get label 0 and ``gt_index`` 0."""

    def __init__(self, *, iou_thresh: float, batch_size: int, positive_fraction: float):
        # IoU bands [0, t) -> background (0), [t, inf) -> foreground (1); no low-quality matches
        self.matcher = Matcher([iou_thresh], [0, 1], allow_low_quality_matches=False)
        self.batch_size, self.positive_fraction = batch_size, positive_fraction

    def __call__(self, proposals: list[torch.Tensor], targets: list[dict]) -> list[RoISample]:
        out = []
        for props, t in zip(proposals, targets):
            boxes = torch.cat([props, t["boxes"]])
            if len(t["boxes"]) == 0:
                idx = torch.zeros(len(boxes), dtype=torch.int64, device=boxes.device)
                labels = torch.zeros_like(idx)
            else:
                idx, fg = self.matcher(box_iou(t["boxes"], boxes))  # (R,) GT index, (R,) 0/1
                idx[fg == 0] = 0
                labels = t["labels"][idx]
                labels[fg == 0] = 0
            pos, neg = subsample_labels(
                labels, self.batch_size, self.positive_fraction, 0, t.get("generator")
            )
            keep = torch.cat([pos, neg])
            out.append(RoISample(boxes[keep], labels[keep], idx[keep]))
        return out


def box_targets(
    samples: list[RoISample], targets: list[dict], box2box: Box2BoxTransform
) -> torch.Tensor:
    """(sum R, 4) regression targets of every sampled RoI towards its matched GT box."""
    matched = [
        t["boxes"][s.gt_index] if len(t["boxes"]) else s.boxes for s, t in zip(samples, targets)
    ]
    return box2box.get_deltas(torch.cat([s.boxes for s in samples]), torch.cat(matched))


def mask_targets(samples: list[RoISample], targets: list[dict], size: int):
    """Targets of the foreground RoIs of all images, as Detectron2's ``mask_rcnn_loss`` builds
    them: each RoI's matched GT mask cropped to the RoI and resized to (size, size) — polygons
    rasterised per RoI, bit masks by aligned RoIAlign (``InstanceMasks.crop_and_resize``).

    ``targets[i]["masks"]`` is an ``InstanceMasks`` or a (G, H, W) bit-mask stack.

    Returns:
        (F, size, size) float 0/1 targets, and (F,) whether that GT instance has a mask at all.
    """
    crops, has_mask = [], []
    for s, t in zip(samples, targets):
        fg = s.labels > 0
        masks = t["masks"]
        if isinstance(masks, torch.Tensor):
            masks = InstanceMasks.from_bitmasks(masks)
        crops.append(masks.crop_and_resize(s.gt_index[fg], s.boxes[fg], size))
        has_mask.append(t["has_mask"][s.gt_index[fg]])
    return torch.cat(crops).float(), torch.cat(has_mask)
