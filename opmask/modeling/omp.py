"""The object mask prior (OMP): the paper's idea in one pure function."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def object_mask_prior(
    box_maps: torch.Tensor, cls_weight: torch.Tensor, classes: torch.Tensor, size: int = 14
) -> torch.Tensor:
    """Class activation map of each RoI, min-max normalised and resized to the mask resolution.

    Args:
        box_maps: (N, C, h, w) feature maps of the CAM box head (before pooling).
        cls_weight: (K+1, C) weights of ``cls_score``; detached here, so the mask loss never
            changes the classifier, while gradients still reach ``box_maps``.
        classes: (N,) int64, the class whose map to take (GT class in training, predicted class
            at inference), indexing rows of ``cls_weight``.
        size: output resolution (the mask pooler's).

    Returns:
        (N, 1, size, size) in [0, 1]; a constant map gives zeros.
    """
    w = cls_weight.detach()[classes].to(box_maps.dtype)  # (N, C)
    cam = torch.einsum("nchw,nc->nhw", box_maps, w).unsqueeze(1)  # (N, 1, h, w)
    flat = cam.flatten(1)
    lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
    span = (flat.max(dim=1).values.view(-1, 1, 1, 1) - lo).clamp_min(1e-6)
    cam = (cam - lo) / span
    return F.interpolate(cam, size=(size, size), mode="bilinear", align_corners=False)
