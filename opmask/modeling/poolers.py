"""Multi-level RoIAlign, equal to Detectron2's ROIPooler with ROIAlignV2 (``aligned=True``).

torchvision's MultiScaleRoIAlign hard-codes ``aligned=False``; this pooler takes the choice.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.ops import roi_align


def assign_levels(
    boxes: torch.Tensor,
    min_level: int,
    max_level: int,
    canonical_size: float = 224.0,
    canonical_level: int = 4,
) -> torch.Tensor:
    """FPN level index (0-based from min_level) per box (N, 4): Eq. 1 of the FPN paper."""
    sizes = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp_min(0).sqrt()
    levels = torch.floor(canonical_level + torch.log2(sizes / canonical_size + 1e-8))
    return (levels.clamp(min_level, max_level) - min_level).to(torch.int64)


class ROIPooler(nn.Module):
    """Pools (M, C, R, R) features for boxes given per image, from the FPN level that fits them."""

    def __init__(
        self, *, output_size: int, strides: list[int], sampling_ratio: int = 0, aligned: bool = True
    ):
        super().__init__()
        self.output_size, self.sampling_ratio, self.aligned = output_size, sampling_ratio, aligned
        self.scales = [1.0 / s for s in strides]
        self.min_level, self.max_level = int(math.log2(strides[0])), int(math.log2(strides[-1]))

    def forward(self, features: list[torch.Tensor], boxes: list[torch.Tensor]) -> torch.Tensor:
        """features: per level (B, C, H_l, W_l); boxes: per image (n_i, 4) -> (sum n_i, C, R, R)."""
        rois = torch.cat(
            [torch.cat([b.new_full((len(b), 1), i), b], 1) for i, b in enumerate(boxes)]
        )
        c = features[0].shape[1]
        out = features[0].new_zeros((len(rois), c, self.output_size, self.output_size))
        if len(rois) == 0:
            return out
        levels = assign_levels(rois[:, 1:], self.min_level, self.max_level)
        for level, (feat, scale) in enumerate(zip(features, self.scales)):
            idx = torch.nonzero(levels == level).squeeze(1)
            if idx.numel():
                out[idx] = roi_align(
                    feat, rois[idx], self.output_size, scale, self.sampling_ratio, self.aligned
                ).to(out.dtype)
        return out
