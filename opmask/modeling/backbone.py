"""ResNet + FPN (P2-P6) from torchvision's building blocks."""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
import torchvision
from torch import nn

from .norm import get_norm
from .tv_adapter import BackboneWithFPN, LastLevelMaxPool

_STAGES = ["layer1", "layer2", "layer3", "layer4"]  # res2..res5


class ResNetFPN(nn.Module):
    """ResNet-{18,34,50,101} + FPN. Input (B, 3, H, W); output OrderedDict p2..p6, each
    (B, out_channels, H/2^k, W/2^k) with k = 2..6. H and W must be multiples of 32.

    ``norm`` is the ResNet's norm; ``fpn_norm`` ("" for none, Detectron2's default) follows each
    lateral and output conv of the FPN, which keeps the pyramid's features at unit scale."""

    size_divisibility = 32

    def __init__(
        self,
        *,
        depth: int,
        norm: str = "FrozenBN",
        freeze_at: int = 2,
        out_channels: int = 256,
        fpn_norm: str = "",
        in_features=("res2", "res3", "res4", "res5"),
        stride_in_1x1: bool = True,
    ):
        super().__init__()
        ctor = {
            18: torchvision.models.resnet18,
            34: torchvision.models.resnet34,
            50: torchvision.models.resnet50,
            101: torchvision.models.resnet101,
        }
        if depth not in ctor:
            raise ValueError(f"MODEL.RESNETS.DEPTH must be one of {sorted(ctor)}, got {depth}")
        body = ctor[depth](weights=None, norm_layer=partial(_norm_layer, norm))
        if stride_in_1x1 and depth >= 50:
            _move_stride_to_1x1(body)
        _freeze(body, freeze_at)
        stage_ids = [int(f[-1]) - 2 for f in in_features]  # res2 -> 0
        width = 64 if depth < 50 else 256
        self.fpn = BackboneWithFPN(
            body,
            return_layers={_STAGES[i]: str(k) for k, i in enumerate(stage_ids)},
            in_channels_list=[width * 2**i for i in stage_ids],
            out_channels=out_channels,
            extra_blocks=LastLevelMaxPool(),
            norm_layer=partial(_norm_layer, fpn_norm) if fpn_norm else None,
        )
        self.out_channels = out_channels
        first = stage_ids[0] + 2
        self.level_names = [f"p{first + k}" for k in range(len(stage_ids) + 1)]

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        feats = self.fpn(x)
        return OrderedDict(zip(self.level_names, feats.values()))


def _norm_layer(norm: str, channels: int) -> nn.Module:
    return get_norm(norm, channels)


def _move_stride_to_1x1(body: nn.Module) -> None:
    """MSRA/Caffe2 ResNets downsample in the first 1x1 conv of a stage, torchvision's in the 3x3."""
    for name in _STAGES[1:]:
        block = getattr(body, name)[0]
        block.conv1.stride, block.conv2.stride = (2, 2), (1, 1)


def _freeze(body: nn.Module, freeze_at: int) -> None:
    """freeze_at 1: stem; k >= 2: stem and res2..res{k} (Detectron2's FREEZE_AT)."""
    frozen = ([body.conv1, body.bn1] if freeze_at >= 1 else []) + [
        getattr(body, _STAGES[i]) for i in range(max(0, freeze_at - 1))
    ]
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
