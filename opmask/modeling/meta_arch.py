"""The detector: Mask R-CNN with an optional object mask prior (OPMask) between box and mask."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .box_heads import CAMBoxHead
from .box_regression import Box2BoxTransform
from .losses import fast_rcnn_losses, partially_supervised_mask_loss
from .mask_heads import CAMMaskHead
from .mask_paste import paste_masks_in_image
from .omp import object_mask_prior
from .postprocess import detections_with_sources, rescale_detections
from .sampling import RoISampler, box_targets, mask_targets
from .tv_adapter import ImageList


class OPMask(nn.Module):
    """Backbone -> RPN -> box head (-> OMP) -> mask head, as in Fig. 2 of the paper.

    With ``use_prior`` (a ``CAMBoxHead`` and a ``CAMMaskHead``) this is OPMask; without, with the
    default heads, it is the class-agnostic Mask R-CNN baseline trained with the same partially
    supervised mask loss.

    Input: a list of dicts from ``DatasetMapper`` (``image`` (3, H, W) 0-255; ``instances`` when
    training). Training returns ``(losses, extras)``: the dict of losses, and the tensors the loop
    visualises (OMP, predicted and GT masks of the foreground RoIs). Inference returns a list of
    dicts per image with ``boxes`` (D, 4) in original image coordinates, ``scores``, ``labels``
    (1..K) and ``masks`` (D, 1, height, width) bool (probability >= 0.5, pasted as Detectron2 does).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        rpn: nn.Module,
        box_pooler: nn.Module,
        box_head: nn.Module,
        box_predictor: nn.Module,
        mask_pooler: nn.Module | None,
        mask_head: nn.Module | None,
        roi_sampler: RoISampler,
        box2box: Box2BoxTransform,
        strong_classes: Sequence[int],
        num_classes: int,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        rpn_features: Sequence[str],
        roi_features: Sequence[str],
        smooth_l1_beta: float,
        score_thresh: float,
        nms_thresh: float,
        detections_per_img: int,
        use_prior: bool,
    ):
        super().__init__()
        self.backbone, self.rpn = backbone, rpn
        self.box_pooler, self.box_head, self.box_predictor = box_pooler, box_head, box_predictor
        self.mask_pooler, self.mask_head = mask_pooler, mask_head
        cam_heads = isinstance(box_head, CAMBoxHead) and isinstance(mask_head, CAMMaskHead)
        if use_prior and not cam_heads:
            raise TypeError("use_prior needs a CAMBoxHead (the OMP source) and a CAMMaskHead")
        self.use_prior = use_prior
        self.roi_sampler, self.box2box = roi_sampler, box2box
        self.rpn_features, self.roi_features = list(rpn_features), list(roi_features)
        self.smooth_l1_beta = smooth_l1_beta
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.detections_per_img = detections_per_img
        strong = torch.zeros(num_classes + 1, dtype=torch.bool)
        strong[list(strong_classes)] = True
        self.register_buffer("strong", strong, persistent=False)  # (K+1,) by label
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    # ------------------------------------------------------------------ the figure
    def forward(self, batched_inputs: list[dict]):
        images = self.preprocess(batched_inputs)
        features = self.backbone(images.tensors)  # p2..p6, each (B, C, H/s, W/s)
        targets = [self._targets(x) for x in batched_inputs] if self.training else None
        proposals, rpn_losses = self.rpn(
            [features[f] for f in self.rpn_features], images.image_sizes, targets
        )
        roi_feats = [features[f] for f in self.roi_features]
        if not self.training:
            return self.inference(roi_feats, proposals, images.image_sizes, batched_inputs)
        losses, extras = self._forward_train(roi_feats, proposals, targets)
        losses.update(rpn_losses)  # loss_rpn_cls, loss_rpn_loc
        return losses, extras

    def _forward_train(self, roi_feats, proposals, targets) -> tuple[dict, dict]:
        """Box and partially supervised mask losses on sampled RoIs; extras for visualisation."""
        samples = self.roi_sampler(proposals, targets)
        box_maps, class_logits, box_deltas = self._forward_box(
            roi_feats, [s.boxes for s in samples]
        )
        labels = torch.cat([s.labels for s in samples])  # (R,)
        losses = fast_rcnn_losses(
            class_logits,
            box_deltas,
            labels,
            box_targets(samples, targets, self.box2box),
            self.smooth_l1_beta,
        )
        if self.mask_head is None:
            return losses, {}
        fg = labels > 0
        prior = self._prior(box_maps, fg, labels[fg])  # (F, 1, M, M) or None
        mask_logits = self._forward_mask(roi_feats, [s.boxes[s.labels > 0] for s in samples], prior)
        gt, has_mask = mask_targets(samples, targets, mask_logits.shape[-1])
        supervised = self.strong[labels[fg]] & has_mask
        losses["loss_mask"] = partially_supervised_mask_loss(mask_logits, gt, supervised)
        extras = {
            "prior": prior,
            "mask": mask_logits.detach().sigmoid(),
            "gt": gt,
            "labels": labels[fg],
            "supervised": supervised,
            "strong": self.strong[labels[fg]],  # (F,) class has mask labels
            "samples": [(s.boxes, s.labels) for s in samples],  # per image (R_i, 4), (R_i,)
        }
        return losses, extras

    # ------------------------------------------------------------------ stages
    def preprocess(self, batched_inputs: list[dict]) -> ImageList:
        """Normalise and pad to a multiple of the backbone's stride: (B, 3, H', W')."""
        div = self.backbone.size_divisibility
        imgs = [
            (x["image"].to(self.pixel_mean.device, non_blocking=True) - self.pixel_mean)
            / self.pixel_std
            for x in batched_inputs
        ]
        h = max(i.shape[1] for i in imgs)
        w = max(i.shape[2] for i in imgs)
        h, w = -(-h // div) * div, -(-w // div) * div
        batch = imgs[0].new_zeros((len(imgs), 3, h, w))
        for b, img in zip(batch, imgs):
            b[:, : img.shape[1], : img.shape[2]].copy_(img)
        return ImageList(batch, [tuple(i.shape[1:]) for i in imgs])

    def _forward_box(self, roi_feats, boxes: list[torch.Tensor]):
        """Box-head maps (N, C', 7, 7) or None, class logits (N, K+1), deltas (N, 4(K+1))."""
        maps, pooled = self.box_head(self.box_pooler(roi_feats, boxes))
        class_logits, box_deltas = self.box_predictor(pooled)
        return maps, class_logits, box_deltas

    def _prior(self, box_maps, rows: torch.Tensor, classes: torch.Tensor):
        """The OMP (N, 1, M, M) of the selected RoIs (mask or index ``rows``), or None."""
        if not self.use_prior:
            return None
        return object_mask_prior(
            box_maps[rows],
            self.box_predictor.cls_score.weight,
            classes,
            self.mask_pooler.output_size,
        )

    def _forward_mask(self, roi_feats, boxes: list[torch.Tensor], prior) -> torch.Tensor:
        x = self.mask_pooler(roi_feats, boxes)  # (N, 256, 14, 14)
        return self.mask_head(x, prior) if self.use_prior else self.mask_head(x)

    # ------------------------------------------------------------------ inference
    def inference(self, roi_feats, proposals, image_sizes, batched_inputs) -> list[dict]:
        box_maps, class_logits, box_deltas = self._forward_box(roi_feats, proposals)
        dets = detections_with_sources(
            class_logits,
            box_deltas,
            proposals,
            image_sizes,
            self.box2box,
            score_thresh=self.score_thresh,
            nms_thresh=self.nms_thresh,
            detections_per_img=self.detections_per_img,
        )
        if self.mask_head is not None:
            sources = torch.cat([d["sources"] for d in dets])
            labels = torch.cat([d["labels"] for d in dets])
            prior = self._prior(box_maps, sources, labels)
            probs = self._forward_mask(roi_feats, [d["boxes"] for d in dets], prior).sigmoid()
            for d, p in zip(dets, probs.split([len(d["boxes"]) for d in dets])):
                d["mask_probs"] = p
        return [
            self._to_original(d, size, x) for d, size, x in zip(dets, image_sizes, batched_inputs)
        ]

    @torch.no_grad()
    def segment_given_boxes(
        self, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor
    ) -> dict:
        """Segment known objects, skipping the RPN and box post-processing: the GT-box diagnostic
        that separates mask quality from detection quality.

        Args:
            image: (3, H, W), 0-255, as ``DatasetMapper`` gives it.
            boxes: (N, 4) xyxy in that image's coordinates.
            labels: (N,) classes 1..K whose OMP to use.

        Returns:
            ``masks`` (N, H, W) probabilities pasted into the image; ``prior`` (N, H, W), the OMP
            pasted likewise (None without a prior); ``class_logits`` (N, K+1) of the box head.
        """
        dev = self.pixel_mean.device
        boxes, labels = boxes.to(dev).float(), labels.to(dev)
        features = self.backbone(self.preprocess([{"image": image}]).tensors)
        roi_feats = [features[f] for f in self.roi_features]
        box_maps, class_logits, _ = self._forward_box(roi_feats, [boxes])
        prior = self._prior(box_maps, torch.arange(len(boxes), device=dev), labels)
        probs = self._forward_mask(roi_feats, [boxes], prior).sigmoid()  # (N, 1, M', M')
        size = tuple(image.shape[1:])
        paste = lambda m: paste_masks_in_image(m, boxes, size, threshold=None)  # noqa: E731
        return {
            "masks": paste(probs),
            "prior": None if prior is None else paste(prior),
            "class_logits": class_logits,
        }

    @staticmethod
    def _to_original(det: dict, size, x: dict) -> dict:
        """Rescale boxes to the original image (dropping those that become empty, as Detectron2
        does) and paste masks at its resolution: (D, 1, height, width) bool, >= 0.5."""
        h, w = x.get("height", size[0]), x.get("width", size[1])
        out = rescale_detections(det, size, (h, w))
        if "mask_probs" in out:
            probs = out.pop("mask_probs")  # (D, 1, M, M)
            out["masks"] = paste_masks_in_image(probs, out["boxes"], (h, w))[:, None]
        return out

    def _targets(self, x: dict) -> dict:
        """The image's instances on the model's device, and ``generator``: what its anchor and
        RoI sampling draw from, seeded by ``x["sample_seed"]`` (the loader derives it from the
        image's position in the global training stream, so a sample does not depend on the
        number of processes), or None (the global RNG) for inputs without one."""
        dev = self.pixel_mean.device
        t = {k: v.to(dev, non_blocking=True) for k, v in x["instances"].items()}
        seed = x.get("sample_seed")
        t["generator"] = None if seed is None else torch.Generator().manual_seed(seed)
        return t
