"""Box heads on pooled RoI features, and the class/box predictor."""

from __future__ import annotations

import torch
from torch import nn

from .norm import conv_norm_relu


class FastRCNNConvFCHead(nn.Module):
    """Detectron2's default box head (baseline): flatten, NUM_FC x (FC + ReLU).

    Input (N, C, 7, 7); returns ``(None, (N, fc_dim))`` — no spatial maps, so no OMP.
    """

    def __init__(self, *, in_channels: int, resolution: int, num_fc: int = 2, fc_dim: int = 1024):
        super().__init__()
        dims = [in_channels * resolution * resolution] + [fc_dim] * num_fc
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(dims[:-1], dims[1:]):
            fc = nn.Linear(a, b)
            nn.init.kaiming_uniform_(fc.weight, a=1)
            nn.init.zeros_(fc.bias)
            layers += [fc, nn.ReLU(inplace=True)]
        self.layers = nn.Sequential(*layers)
        self.out_dim = dims[-1]

    def forward(self, x: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, self.layers(x)


class CAMBoxHead(nn.Module):
    """OPMask's box head: NUM_CONV 3x3 convs with widths doubling from the input width up to
    ``conv_dim`` (256 -> 512 -> 1024 -> 1024), each conv + norm + ReLU; then global average pooling.

    Input (N, C, 7, 7); returns ``(maps (N, conv_dim, 7, 7), pooled (N, conv_dim))``. The maps are
    what the class activation map (the OMP) is computed from.
    """

    def __init__(
        self, *, in_channels: int, num_conv: int = 4, conv_dim: int = 1024, norm: str = ""
    ):
        super().__init__()
        if num_conv < 1:
            raise ValueError("CAMBoxHead needs MODEL.ROI_BOX_HEAD.NUM_CONV >= 1")
        widths = [in_channels] + [
            min(in_channels * 2 ** (i + 1), conv_dim) for i in range(num_conv)
        ]
        widths[-1] = conv_dim
        self.convs = nn.Sequential(
            *[conv_norm_relu(a, b, norm) for a, b in zip(widths[:-1], widths[1:])]
        )
        self.out_dim = conv_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.convs(x)  # (N, conv_dim, 7, 7)
        return maps, maps.mean(dim=(2, 3))  # (N, conv_dim)


class FastRCNNPredictor(nn.Module):
    """``cls_score``: K+1 logits (0 = background); ``bbox_pred``: 4(K+1) class-specific deltas."""

    def __init__(self, *, in_dim: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_dim, num_classes + 1)
        self.bbox_pred = nn.Linear(in_dim, (num_classes + 1) * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cls_score(x), self.bbox_pred(x)  # (N, K+1), (N, 4(K+1))
