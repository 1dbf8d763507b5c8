"""Inference bookkeeping with Detectron2 v0.6's filters: detections that remember the proposal
they came from, and their rescaling to the original image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import boxes as box_ops

from .box_regression import Box2BoxTransform


def detections_with_sources(
    class_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    proposals: list[torch.Tensor],
    image_sizes: list[tuple[int, int]],
    box2box: Box2BoxTransform,
    *,
    score_thresh: float,
    nms_thresh: float,
    detections_per_img: int,
) -> list[dict[str, torch.Tensor]]:
    """Per image: ``boxes`` (D, 4), ``scores`` (D,), ``labels`` (D,) in 1..K and ``sources`` (D,),
    the index (into the concatenated proposals of all images) of each detection's proposal.

    Detectron2's ``fast_rcnn_inference``: softmax, decode in float32; drop proposals whose boxes
    or scores are not finite; clip; drop background; score > ``score_thresh``; per-class NMS;
    top-k. No small-box filter (Detectron2 drops empty boxes only after rescaling, see
    ``rescale_detections``).
    ``sources`` index the proposals before the finite filter (Detectron2's indices skip them).
    """
    num_classes = class_logits.shape[-1]
    counts = [len(p) for p in proposals]
    flat = box2box.apply_deltas(box_deltas.float(), torch.cat(proposals))  # (R, 4(K+1))
    boxes_all = flat.view(len(flat), flat.shape[1] // 4, 4).split(counts)  # (n_i, K+1, 4)
    scores_all = F.softmax(class_logits, -1).split(counts)
    offsets = torch.tensor([0] + counts[:-1], device=class_logits.device).cumsum(0)
    results = []
    for boxes, scores, size, offset in zip(boxes_all, scores_all, image_sizes, offsets):
        n = len(boxes)
        finite = torch.isfinite(boxes).flatten(1).all(1) & torch.isfinite(scores).all(1)  # (n,)
        boxes = box_ops.clip_boxes_to_image(boxes, size)[:, 1:].reshape(-1, 4)
        labels = torch.arange(1, num_classes, device=boxes.device).repeat(n)
        sources = torch.arange(n, device=boxes.device).repeat_interleave(num_classes - 1)
        scores = scores[:, 1:].reshape(-1)
        keep = torch.where((scores > score_thresh) & finite[sources])[0]
        keep = keep[box_ops.batched_nms(boxes[keep], scores[keep], labels[keep], nms_thresh)]
        keep = keep[:detections_per_img]
        results.append(
            {
                "boxes": boxes[keep],
                "scores": scores[keep],
                "labels": labels[keep],
                "sources": sources[keep] + offset,
            }
        )
    return results


def rescale_detections(det: dict, size: tuple[int, int], out_size: tuple[int, int]) -> dict:
    """Detectron2's ``detector_postprocess`` for boxes: scale ``boxes`` (D, 4) from the network
    input ``size`` (h, w) to ``out_size`` (H, W), clip to it, and drop the detections whose box
    is then empty (width or height 0); every (D, ...) entry of ``det`` is filtered alike."""
    (h, w), (oh, ow) = size, out_size
    boxes = det["boxes"] * det["boxes"].new_tensor([ow / w, oh / h, ow / w, oh / h])
    boxes = box_ops.clip_boxes_to_image(boxes, (oh, ow))
    keep = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
    out = {k: v[keep] for k, v in det.items() if k != "boxes"}
    out["boxes"] = boxes[keep]
    return out
