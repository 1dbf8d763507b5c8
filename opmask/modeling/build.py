"""Config -> model. The only place in ``opmask.modeling`` that reads cfg.

The builders trust the checked config: every rule about a value (choices, head/NUM_CONV pairs,
anchors per level, FPN levels, GroupNorm widths) is a row of ``opmask.config.checks``, applied by
``load_config`` before any run folder exists (tests/config/test_builder_raises.py)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .anchor_generator import AnchorGenerator
from .backbone import ResNetFPN
from .box_heads import CAMBoxHead, FastRCNNConvFCHead, FastRCNNPredictor
from .box_regression import Box2BoxTransform
from .mask_heads import CAMMaskHead, MaskRCNNConvUpsampleHead
from .meta_arch import OPMask
from .poolers import ROIPooler
from .rpn import RPN, StandardRPNHead
from .sampling import RoISampler


def _strides(names: Sequence[str]) -> list[int]:
    return [2 ** int(n[1:]) for n in names]


def _pooler(head_cfg, in_features) -> ROIPooler:
    return ROIPooler(
        output_size=head_cfg.POOLER_RESOLUTION,
        strides=_strides(in_features),
        sampling_ratio=head_cfg.POOLER_SAMPLING_RATIO,
        aligned=head_cfg.POOLER_TYPE == "ROIAlignV2",
    )


def build_rpn(cfg, channels: int) -> RPN:
    r, a = cfg.MODEL.RPN, cfg.MODEL.ANCHOR_GENERATOR
    anchors = AnchorGenerator(
        sizes=a.SIZES,
        aspect_ratios=a.ASPECT_RATIOS,
        strides=_strides(r.IN_FEATURES),
        offset=a.OFFSET,
    )
    (num_anchors,) = set(anchors.num_anchors)  # the same at every level (checks)
    return RPN(
        head=StandardRPNHead(channels, num_anchors),
        anchor_generator=anchors,
        iou_thresholds=r.IOU_THRESHOLDS,
        batch_size_per_image=r.BATCH_SIZE_PER_IMAGE,
        positive_fraction=r.POSITIVE_FRACTION,
        bbox_reg_weights=r.BBOX_REG_WEIGHTS,
        smooth_l1_beta=r.SMOOTH_L1_BETA,
        loss_weight=r.LOSS_WEIGHT,
        bbox_reg_loss_weight=r.BBOX_REG_LOSS_WEIGHT,
        pre_nms_topk=(r.PRE_NMS_TOPK_TRAIN, r.PRE_NMS_TOPK_TEST),
        post_nms_topk=(r.POST_NMS_TOPK_TRAIN, r.POST_NMS_TOPK_TEST),
        nms_thresh=r.NMS_THRESH,
        min_box_size=cfg.MODEL.PROPOSAL_GENERATOR.MIN_SIZE,
    )


def build_box_head(cfg, channels: int) -> nn.Module:
    b = cfg.MODEL.ROI_BOX_HEAD
    if b.NAME == "CAMBoxHead":
        return CAMBoxHead(
            in_channels=channels, num_conv=b.NUM_CONV, conv_dim=b.CONV_DIM, norm=b.NORM
        )
    return FastRCNNConvFCHead(  # NUM_CONV is 0 (checks)
        in_channels=channels, resolution=b.POOLER_RESOLUTION, num_fc=b.NUM_FC, fc_dim=b.FC_DIM
    )


def build_mask_head(cfg, channels: int) -> nn.Module:
    m = cfg.MODEL.ROI_MASK_HEAD
    classes = {"CAMMaskHead": CAMMaskHead, "MaskRCNNConvUpsampleHead": MaskRCNNConvUpsampleHead}
    return classes[m.NAME](
        in_channels=channels,
        num_conv=m.NUM_CONV,
        conv_dim=m.CONV_DIM,
        num_conv_up=m.NUM_CONV_UP,
        norm=m.NORM,
    )


def resolve_device(name: str) -> torch.device:
    """``MODEL.DEVICE`` -> the device of this process: "auto" is cuda when available, else cpu;
    a cuda device without an index is this process's current one (``launch`` sets it per rank)."""
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def build_model(cfg, strong_classes: Sequence[int] | None = None) -> OPMask:
    """The detector described by cfg, on cfg's device (MODEL.WEIGHTS is loaded by the caller).

    Args:
        strong_classes: model labels (1..K) with mask supervision; default all classes.
    """
    m = cfg.MODEL
    backbone = ResNetFPN(
        depth=m.RESNETS.DEPTH,
        norm=m.RESNETS.NORM,
        freeze_at=m.BACKBONE.FREEZE_AT,
        out_channels=m.FPN.OUT_CHANNELS,
        fpn_norm=m.FPN.NORM,
        in_features=m.FPN.IN_FEATURES,
        stride_in_1x1=m.RESNETS.STRIDE_IN_1X1,
    )
    ch, k = m.FPN.OUT_CHANNELS, m.ROI_HEADS.NUM_CLASSES
    box_head = build_box_head(cfg, ch)
    model = OPMask(
        backbone=backbone,
        rpn=build_rpn(cfg, ch),
        box_pooler=_pooler(m.ROI_BOX_HEAD, m.ROI_HEADS.IN_FEATURES),
        box_head=box_head,
        box_predictor=FastRCNNPredictor(in_dim=box_head.out_dim, num_classes=k),
        mask_pooler=_pooler(m.ROI_MASK_HEAD, m.ROI_HEADS.IN_FEATURES) if m.MASK_ON else None,
        mask_head=build_mask_head(cfg, ch) if m.MASK_ON else None,
        roi_sampler=RoISampler(
            iou_thresh=m.ROI_HEADS.IOU_THRESHOLDS[0],
            batch_size=m.ROI_HEADS.BATCH_SIZE_PER_IMAGE,
            positive_fraction=m.ROI_HEADS.POSITIVE_FRACTION,
        ),
        box2box=Box2BoxTransform(m.ROI_BOX_HEAD.BBOX_REG_WEIGHTS),
        strong_classes=range(1, k + 1) if strong_classes is None else strong_classes,
        num_classes=k,
        pixel_mean=m.PIXEL_MEAN,
        pixel_std=m.PIXEL_STD,
        rpn_features=m.RPN.IN_FEATURES,
        roi_features=m.ROI_HEADS.IN_FEATURES,
        smooth_l1_beta=m.ROI_BOX_HEAD.SMOOTH_L1_BETA,
        score_thresh=m.ROI_HEADS.SCORE_THRESH_TEST,
        nms_thresh=m.ROI_HEADS.NMS_THRESH_TEST,
        detections_per_img=cfg.TEST.DETECTIONS_PER_IMAGE,
        use_prior=m.MASK_ON and m.ROI_MASK_HEAD.NAME == "CAMMaskHead",
    )
    model = model.to(resolve_device(m.DEVICE))
    return optimize_for_device(model, channels_last=m.CHANNELS_LAST, compile=m.COMPILE)


def optimize_for_device(model: OPMask, *, channels_last: bool, compile: bool) -> OPMask:
    """Channels-last weights (convolutions then run in NHWC, as tensor cores prefer) and, opt-in,
    ``torch.compile`` of the parts with static shapes: the backbone (one graph per input size) and
    the conv heads (RoI tensors (R, C, 7, 7) / (F, C, 14, 14); the RoI count is marked dynamic).
    Compiling in place (``Module.compile``) keeps the state-dict names, so checkpoints do not
    change."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model.backbone.compile()
        model.box_head.compile(dynamic=True)
        if model.mask_head is not None:
            model.mask_head.compile(dynamic=True)
    return model
