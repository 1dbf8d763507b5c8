"""Inference bookkeeping: detections that remember the proposal they came from."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import boxes as box_ops

from .tv_adapter import BoxCoder


def detections_with_sources(
    class_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    proposals: list[torch.Tensor],
    image_sizes: list[tuple[int, int]],
    box_coder: BoxCoder,
    *,
    score_thresh: float,
    nms_thresh: float,
    detections_per_img: int,
) -> list[dict[str, torch.Tensor]]:
    """Per image: ``boxes`` (D, 4), ``scores`` (D,), ``labels`` (D,) in 1..K and ``sources`` (D,),
    the index (into the concatenated proposals of all images) of each detection's proposal.

    Same steps and results as torchvision's ``RoIHeads.postprocess_detections`` (softmax, decode,
    clip, drop background, score threshold, drop empty boxes, per-class NMS, top-k); torchvision
    drops the source index, which the OMP needs at inference.
    """
    num_classes = class_logits.shape[-1]
    counts = [len(p) for p in proposals]
    boxes_all = box_coder.decode(box_deltas, proposals).split(counts)  # (n_i, K+1, 4)
    scores_all = F.softmax(class_logits, -1).split(counts)
    offsets = torch.tensor([0] + counts[:-1], device=class_logits.device).cumsum(0)
    results = []
    for boxes, scores, size, offset in zip(boxes_all, scores_all, image_sizes, offsets):
        n = len(boxes)
        boxes = box_ops.clip_boxes_to_image(boxes, size)[:, 1:].reshape(-1, 4)
        labels = torch.arange(1, num_classes, device=boxes.device).repeat(n)
        sources = torch.arange(n, device=boxes.device).repeat_interleave(num_classes - 1) + offset
        scores = scores[:, 1:].reshape(-1)
        keep = torch.where(scores > score_thresh)[0]
        keep = keep[box_ops.remove_small_boxes(boxes[keep], min_size=1e-2)]
        keep = keep[box_ops.batched_nms(boxes[keep], scores[keep], labels[keep], nms_thresh)]
        keep = keep[:detections_per_img]
        results.append(
            {
                "boxes": boxes[keep],
                "scores": scores[keep],
                "labels": labels[keep],
                "sources": sources[keep],
            }
        )
    return results
