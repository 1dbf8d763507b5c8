"""Class-agnostic mask heads: convs, 2x upsampling, one output channel."""

from __future__ import annotations

import torch
from torch import nn

from .norm import conv_norm_relu


class MaskRCNNConvUpsampleHead(nn.Module):
    """NUM_CONV x (3x3 conv + norm + ReLU), NUM_CONV_UP x (2x2 stride-2 deconv + ReLU), 1x1 conv.

    Input (N, C, 14, 14); output mask logits (N, 1, 28, 28) for one deconv.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_conv: int = 4,
        conv_dim: int = 256,
        num_conv_up: int = 1,
        norm: str = "",
    ):
        super().__init__()
        widths = [in_channels] + [conv_dim] * num_conv
        layers = [conv_norm_relu(a, b, norm) for a, b in zip(widths[:-1], widths[1:])]
        dim = widths[-1]
        for _ in range(num_conv_up):
            deconv = nn.ConvTranspose2d(dim, conv_dim, 2, stride=2)
            nn.init.kaiming_normal_(deconv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(deconv.bias)
            layers += [deconv, nn.ReLU(inplace=True)]
            dim = conv_dim
        self.layers = nn.Sequential(*layers)
        self.predictor = nn.Conv2d(dim, 1, 1)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.layers(x))


class CAMMaskHead(MaskRCNNConvUpsampleHead):
    """OPMask's mask head: the object mask prior (N, 1, 14, 14) is added to every channel of the
    mask RoI features (N, 256, 14, 14) before the conv stack."""

    def forward(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x + prior)
