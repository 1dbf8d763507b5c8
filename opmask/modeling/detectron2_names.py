"""Our parameter names <-> Detectron2's (v0.6 ``GeneralizedRCNN``) and the official OPMask code's.

The one place that knows both naming schemes. Names are derived from the model's structure, so
the mapping is exact for any depth, FPN level set, head width or number of convs:

=====================================  =====================================================
ours                                   Detectron2
=====================================  =====================================================
``backbone.fpn.body.conv1`` / ``bn1``  ``backbone.bottom_up.stem.conv1`` / ``….conv1.norm``
``….layer{s}.{b}.conv{i}`` / ``bn{i}`` ``backbone.bottom_up.res{s+1}.{b}.conv{i}`` / ``….norm``
``….layer{s}.{b}.downsample.{0,1}``    ``backbone.bottom_up.res{s+1}.{b}.shortcut`` / ``….norm``
``backbone.fpn.fpn.inner_blocks.{i}``  ``backbone.fpn_lateral{level}`` (``.0`` conv, ``.1`` norm)
``backbone.fpn.fpn.layer_blocks.{i}``  ``backbone.fpn_output{level}``
``rpn.head.*``                         ``proposal_generator.rpn_head.*``
``box_head.layers`` (Linear n)         ``roi_heads.box_head.fc{n}`` (baseline)
``box_head.convs.{k}``                 ``roi_heads.box_head.conv{k+1}`` (OPMask's CAMBoxHeadConv)
``box_predictor.*``                    ``roi_heads.box_predictor.*`` (OPMask: ``….box_head.*``)
``mask_head.layers`` (conv k, deconv)  ``roi_heads.mask_head.mask_fcn{k}``, ``deconv``;
                                       OPMask's CamMaskHead: ``mask_down{k}``, ``mask_up{j}``
``mask_head.predictor``                ``roi_heads.mask_head.predictor``
=====================================  =====================================================

Values: Detectron2 puts the background class LAST in ``cls_score`` (K+1 rows) and has no
background rows in ``bbox_pred`` (4K rows); we put background at index 0 (K+1 and 4(K+1) rows).
Our background box deltas never enter a loss or a prediction; importing sets them to zero.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from .box_heads import CAMBoxHead
from .mask_heads import CAMMaskHead

_STEM = {"conv1": "stem.conv1", "bn1": "stem.conv1.norm"}
_BLOCK = {"downsample.0": "shortcut", "downsample.1": "shortcut.norm"}


def _body_name(name: str) -> str | None:
    """torchvision ResNet module -> Detectron2 ResNet module (``layer1`` is ``res2``)."""
    if name in _STEM:
        return _STEM[name]
    m = re.fullmatch(r"layer(\d)\.(\d+)\.(conv\d|bn\d|downsample\.[01])", name)
    if m is None:
        return None
    stage, block, mod = m.groups()
    d2 = _BLOCK.get(mod) or (mod if mod.startswith("conv") else f"conv{mod[-1]}.norm")
    return f"res{int(stage) + 1}.{block}.{d2}"


def _backbone_modules(model: nn.Module) -> dict[str, str]:
    out = {}
    for name, _ in model.backbone.fpn.body.named_modules():
        d2 = _body_name(name)
        if d2 is not None:
            out[f"backbone.fpn.body.{name}"] = f"backbone.bottom_up.{d2}"
    levels = [int(n[1:]) for n in model.backbone.level_names]
    for i, level in enumerate(levels[:-1]):  # the last level is the parameter-free max pool
        for ours, d2 in (("inner_blocks", "fpn_lateral"), ("layer_blocks", "fpn_output")):
            out[f"backbone.fpn.fpn.{ours}.{i}.0"] = f"backbone.{d2}{level}"
            out[f"backbone.fpn.fpn.{ours}.{i}.1"] = f"backbone.{d2}{level}.norm"
    return out


def _conv_norm(ours: str, d2: str) -> dict[str, str]:
    """A ``conv_norm_relu`` block: ``.0`` the conv, ``.1`` its norm (Detectron2: ``conv.norm``)."""
    return {f"{ours}.0": d2, f"{ours}.1": f"{d2}.norm"}


def _box_modules(model: nn.Module) -> dict[str, str]:
    head, out = model.box_head, {}
    if isinstance(head, CAMBoxHead):
        for k in range(len(head.convs)):
            out.update(_conv_norm(f"box_head.convs.{k}", f"roi_heads.box_head.conv{k + 1}"))
        predictor = "roi_heads.box_head"  # the official OPMask code keeps them in the box head
    else:
        fcs = [n for n, m in head.layers.named_children() if isinstance(m, nn.Linear)]
        out.update(
            {f"box_head.layers.{n}": f"roi_heads.box_head.fc{k + 1}" for k, n in enumerate(fcs)}
        )
        predictor = "roi_heads.box_predictor"
    for leaf in ("cls_score", "bbox_pred"):
        out[f"box_predictor.{leaf}"] = f"{predictor}.{leaf}"
    return out


def _mask_modules(model: nn.Module) -> dict[str, str]:
    head = model.mask_head
    if head is None:
        return {}
    conv, up = ("mask_down", "mask_up") if isinstance(head, CAMMaskHead) else ("mask_fcn", "deconv")
    out, n_conv, n_up = {}, 0, 0
    for name, m in head.layers.named_children():
        if isinstance(m, nn.Sequential):
            n_conv += 1
            out.update(
                _conv_norm(f"mask_head.layers.{name}", f"roi_heads.mask_head.{conv}{n_conv}")
            )
        elif isinstance(m, nn.ConvTranspose2d):
            n_up += 1
            suffix = "" if up == "deconv" and n_up == 1 else str(n_up)
            out[f"mask_head.layers.{name}"] = f"roi_heads.mask_head.{up}{suffix}"
    out["mask_head.predictor"] = "roi_heads.mask_head.predictor"
    return out


def detectron2_names(model: nn.Module) -> dict[str, str]:
    """Our state-dict key -> Detectron2's, for every key of ``model.state_dict()`` it names.

    OPMask models (``CAMBoxHead``) get the official OPMask code's head names, the baseline
    Detectron2's ``StandardROIHeads`` names.
    """
    modules = {**_backbone_modules(model), **_box_modules(model), **_mask_modules(model)}
    out = {}
    for key in model.state_dict():
        module, leaf = key.rsplit(".", 1)
        if module in modules:
            out[key] = f"{modules[module]}.{leaf}"
        elif key.startswith("rpn.head."):
            out[key] = "proposal_generator.rpn_head." + key[len("rpn.head.") :]
    return out


def detectron2_aliases(model: nn.Module) -> dict[str, str]:
    """Detectron2 key -> ours: the inverse of :func:`detectron2_names`, plus the other scheme's
    predictor location (``roi_heads.box_predictor.*`` and ``roi_heads.box_head.cls_score``…) and
    backbone names without the ``backbone.bottom_up.`` prefix (ImageNet ``.pkl`` files)."""
    box, pred = "roi_heads.box_head.", "roi_heads.box_predictor."
    swap = {box: pred, pred: box}
    out = {}
    for ours, d2 in detectron2_names(model).items():
        out[d2] = ours
        if ours.startswith("box_predictor."):
            prefix = next(p for p in swap if d2.startswith(p))
            out[swap[prefix] + d2[len(prefix) :]] = ours
        if d2.startswith("backbone.bottom_up."):
            out[d2[len("backbone.bottom_up.") :]] = ours
    return out


def _is_predictor(key: str, leaf: str) -> bool:
    return key.startswith(f"box_predictor.{leaf}.")


def to_detectron2_value(key: str, value: torch.Tensor) -> torch.Tensor:
    """Our tensor ``key`` in Detectron2's class order: background moved last in ``cls_score``,
    dropped from ``bbox_pred``."""
    if _is_predictor(key, "cls_score"):
        return torch.cat([value[1:], value[:1]])
    if _is_predictor(key, "bbox_pred"):
        return value[4:]
    return value


def from_detectron2_value(key: str, value: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_detectron2_value` (background box deltas become zeros); ``key`` is
    ours."""
    if _is_predictor(key, "cls_score"):
        return torch.cat([value[-1:], value[:-1]])
    if _is_predictor(key, "bbox_pred"):
        return torch.cat([value.new_zeros((4, *value.shape[1:])), value])
    return value


def to_detectron2(model: nn.Module, state: dict | None = None) -> tuple[dict, list[str]]:
    """``state`` (default ``model.state_dict()``) in Detectron2's names and class order, and the
    keys that have no Detectron2 name (left out)."""
    state = model.state_dict() if state is None else state
    names = detectron2_names(model)
    out = {names[k]: to_detectron2_value(k, v) for k, v in state.items() if k in names}
    return out, sorted(k for k in state if k not in names)
