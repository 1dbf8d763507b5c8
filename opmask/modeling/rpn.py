"""Region proposal network with Detectron2 v0.6's semantics (``StandardRPNHead`` + ``RPN``).

State-dict names follow Detectron2's head: ``head.conv``, ``head.objectness_logits``,
``head.anchor_deltas`` (Detectron2: ``proposal_generator.rpn_head.*``).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, clip_boxes_to_image

from .anchor_generator import AnchorGenerator
from .box_regression import Box2BoxTransform
from .matcher import Matcher, pairwise_iou, subsample_labels


class StandardRPNHead(nn.Module):
    """Shared 3x3 conv + ReLU, then 1x1 objectness (A channels) and 1x1 deltas (4A channels)."""

    def __init__(self, in_channels: int, num_anchors: int, box_dim: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.objectness_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(in_channels, num_anchors * box_dim, 1)
        for layer in (self.conv, self.objectness_logits, self.anchor_deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0.0)

    def forward(self, features: Sequence[torch.Tensor]):
        """Per level (B, C, H, W) -> logits (B, A, H, W) and deltas (B, 4A, H, W)."""
        logits, deltas = [], []
        for x in features:
            t = F.relu(self.conv(x))
            logits.append(self.objectness_logits(t))
            deltas.append(self.anchor_deltas(t))
        return logits, deltas


def find_top_rpn_proposals(
    proposals: list[torch.Tensor],
    logits: list[torch.Tensor],
    image_sizes: list[tuple[int, int]],
    *,
    nms_thresh: float,
    pre_nms_topk: int,
    post_nms_topk: int,
    min_box_size: float = 0.0,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Detectron2's proposal selection.

    Per level the ``pre_nms_topk`` highest logits; then per image: drop non-finite boxes/scores,
    clip to the image, drop boxes with a side <= ``min_box_size``, NMS per level at
    ``nms_thresh`` (levels do not suppress each other), keep the ``post_nms_topk`` best.

    Args:
        proposals: per level (B, Hi*Wi*A, 4) decoded boxes; logits: per level (B, Hi*Wi*A).

    Returns:
        Per image the boxes (P, 4) and their objectness logits (P,), best first.
    """
    batch = torch.arange(len(image_sizes), device=proposals[0].device)
    boxes, scores, levels = [], [], []
    for level, (props, lg) in enumerate(zip(proposals, logits)):
        k = min(lg.shape[1], pre_nms_topk)
        top, idx = lg.topk(k, dim=1)  # (B, k)
        boxes.append(props[batch[:, None], idx])
        scores.append(top)
        levels.append(torch.full((k,), level, dtype=torch.int64, device=lg.device))
    boxes, scores, levels = torch.cat(boxes, 1), torch.cat(scores, 1), torch.cat(levels)
    out_boxes, out_scores = [], []
    for b, s, (h, w) in zip(boxes, scores, image_sizes):
        keep = torch.isfinite(b).all(dim=1) & torch.isfinite(s)
        b, s, lvl = b[keep], s[keep], levels[keep]
        b = clip_boxes_to_image(b, (h, w))
        keep = ((b[:, 2] - b[:, 0]) > min_box_size) & ((b[:, 3] - b[:, 1]) > min_box_size)
        b, s, lvl = b[keep], s[keep], lvl[keep]
        keep = batched_nms(b.float(), s, lvl, nms_thresh)[:post_nms_topk]
        out_boxes.append(b[keep])
        out_scores.append(s[keep])
    return out_boxes, out_scores


class RPN(nn.Module):
    """Anchors -> head -> (training) sampled-anchor losses; -> top proposals per image.

    Args:
        head: a ``StandardRPNHead``; anchor_generator: an ``AnchorGenerator``.
        iou_thresholds: (low, high): IoU < low negative, >= high positive, else ignored; every
            GT's best anchors are positive too (low-quality matches).
        batch_size_per_image, positive_fraction: anchors sampled per image for the losses.
        bbox_reg_weights: (wx, wy, ww, wh) of the anchor deltas.
        smooth_l1_beta: 0 gives L1 (Detectron2's default).
        loss_weight, bbox_reg_loss_weight: ``loss_rpn_cls`` is scaled by ``loss_weight``,
            ``loss_rpn_loc`` by ``loss_weight * bbox_reg_loss_weight``.
        pre_nms_topk, post_nms_topk: (train, test) proposal counts, per level / per image.
    """

    def __init__(
        self,
        *,
        head: StandardRPNHead,
        anchor_generator: AnchorGenerator,
        iou_thresholds: Sequence[float],
        batch_size_per_image: int,
        positive_fraction: float,
        bbox_reg_weights: Sequence[float],
        smooth_l1_beta: float,
        loss_weight: float,
        bbox_reg_loss_weight: float,
        pre_nms_topk: tuple[int, int],
        post_nms_topk: tuple[int, int],
        nms_thresh: float,
        min_box_size: float = 0.0,
    ):
        super().__init__()
        self.head, self.anchor_generator = head, anchor_generator
        self.matcher = Matcher(iou_thresholds, [0, -1, 1], allow_low_quality_matches=True)
        self.box2box = Box2BoxTransform(bbox_reg_weights)
        self.batch_size_per_image, self.positive_fraction = batch_size_per_image, positive_fraction
        self.smooth_l1_beta = smooth_l1_beta
        self.loss_weights = (loss_weight, loss_weight * bbox_reg_loss_weight)
        self.pre_nms_topk, self.post_nms_topk = pre_nms_topk, post_nms_topk
        self.nms_thresh, self.min_box_size = nms_thresh, min_box_size

    def forward(
        self,
        features: Sequence[torch.Tensor],
        image_sizes: list[tuple[int, int]],
        targets: list[dict] | None = None,
    ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """Feature maps (B, C, Hi, Wi) of the RPN levels, (h, w) per image, and (training) per
        image ``boxes`` (G, 4) -> proposals (P, 4) per image (detached) and the losses."""
        anchors = self.anchor_generator(features)  # per level (Hi*Wi*A, 4)
        logits, deltas = self.head(features)
        logits = [x.permute(0, 2, 3, 1).flatten(1) for x in logits]  # (B, Hi*Wi*A)
        deltas = [
            x.view(x.shape[0], -1, 4, *x.shape[-2:]).permute(0, 3, 4, 1, 2).flatten(1, -2)
            for x in deltas
        ]  # (B, Hi*Wi*A, 4)
        losses = {}
        if self.training:
            labels, matched = self.label_and_sample_anchors(torch.cat(anchors), targets)
            losses = self.losses(torch.cat(anchors), logits, labels, deltas, matched)
        with torch.no_grad():
            proposals = [
                self.box2box.apply_deltas(d.reshape(-1, 4), a.repeat(len(d), 1)).view(*d.shape)
                for a, d in zip(anchors, deltas)
            ]
            boxes, _ = find_top_rpn_proposals(
                proposals,
                [x.detach() for x in logits],
                image_sizes,
                nms_thresh=self.nms_thresh,
                pre_nms_topk=self.pre_nms_topk[0 if self.training else 1],
                post_nms_topk=self.post_nms_topk[0 if self.training else 1],
                min_box_size=self.min_box_size,
            )
        return boxes, losses

    @torch.no_grad()
    def label_and_sample_anchors(self, anchors: torch.Tensor, targets: list[dict]):
        """Per image: labels (N,) of all N anchors (1 sampled positive, 0 sampled negative, -1
        unused) and the matched GT box (N, 4) of each anchor (zeros without GT)."""
        labels, matched = [], []
        for t in targets:
            gt = t["boxes"]
            idx, lab = self.matcher(pairwise_iou(gt, anchors))
            pos, neg = subsample_labels(
                lab, self.batch_size_per_image, self.positive_fraction, 0, t.get("generator")
            )
            lab = torch.full_like(lab, -1)
            lab[pos], lab[neg] = 1, 0
            labels.append(lab)
            matched.append(gt[idx] if len(gt) else torch.zeros_like(anchors))
        return labels, matched

    def losses(self, anchors, logits, labels, deltas, matched) -> dict[str, torch.Tensor]:
        """Objectness BCE over sampled anchors and box L1 (or smooth-L1) over sampled positives,
        both summed and divided by ``batch_size_per_image * images``."""
        labels = torch.stack(labels)  # (B, N)
        pos, valid = labels == 1, labels >= 0
        targets = torch.stack([self.box2box.get_deltas(anchors, m) for m in matched])  # (B, N, 4)
        pred = torch.cat(deltas, 1)[pos]
        if self.smooth_l1_beta >= 1e-5:  # fvcore's smooth_l1_loss: L1 below that
            loc = F.smooth_l1_loss(pred, targets[pos], beta=self.smooth_l1_beta, reduction="sum")
        else:
            loc = F.l1_loss(pred, targets[pos], reduction="sum")
        cls = F.binary_cross_entropy_with_logits(
            torch.cat(logits, 1)[valid], labels[valid].to(torch.float32), reduction="sum"
        )
        norm = self.batch_size_per_image * len(labels)
        return {
            "loss_rpn_cls": cls / norm * self.loss_weights[0],
            "loss_rpn_loc": loc / norm * self.loss_weights[1],
        }
