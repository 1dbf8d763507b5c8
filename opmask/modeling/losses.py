"""Losses of the RoI heads. Returned, never logged here."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fast_rcnn_losses(
    class_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    labels: torch.Tensor,
    target_deltas: torch.Tensor,
    beta: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Softmax CE over K+1 classes and class-specific box regression on foreground RoIs.

    Args:
        class_logits: (N, K+1); box_deltas: (N, 4(K+1)); labels: (N,) 0 = background;
        target_deltas: (N, 4); beta: smooth-L1 beta (0: L1, Detectron2's default).
    Both are normalised by N, the number of sampled RoIs.
    """
    loss_cls = F.cross_entropy(class_logits, labels)
    fg = torch.nonzero(labels > 0).squeeze(1)
    deltas = box_deltas.reshape(len(labels), -1, 4)[fg, labels[fg]]  # (F, 4)
    if beta > 0:
        reg = F.smooth_l1_loss(deltas, target_deltas[fg], beta=beta, reduction="sum")
    else:
        reg = F.l1_loss(deltas, target_deltas[fg], reduction="sum")
    return {"loss_cls": loss_cls, "loss_box_reg": reg / max(1, labels.numel())}


def partially_supervised_mask_loss(
    mask_logits: torch.Tensor, gt_masks: torch.Tensor, supervised: torch.Tensor
) -> torch.Tensor:
    """Per-pixel BCE averaged over the RoIs whose class has mask supervision.

    Args:
        mask_logits: (N, 1, M, M) class-agnostic logits of all foreground RoIs.
        gt_masks: (N, M, M) float targets in [0, 1].
        supervised: (N,) bool; weak-class RoIs (False) contribute nothing.

    Returns:
        A scalar; exactly 0 (still connected to the graph) when no RoI is supervised.
    """
    if not bool(supervised.any()):
        return mask_logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(
        mask_logits[supervised, 0], gt_masks[supervised].to(mask_logits.dtype), reduction="mean"
    )
