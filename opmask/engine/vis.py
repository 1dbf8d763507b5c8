"""TensorBoard pictures like the paper's figures: OMP | predicted mask | GT mask per RoI."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def roi_triptychs(extras: dict, max_rois: int) -> list[tuple[str, torch.Tensor]]:
    """``(tag, image (3, M, 3M))`` per sampled foreground RoI; the OMP column is black for the
    baseline (no prior). Tags are stable (``omp_mask_gt/roiN``): TensorBoard shows a slider."""
    mask = extras.get("mask")
    if mask is None or len(mask) == 0:
        return []
    m = mask.shape[-1]
    idx = torch.linspace(0, len(mask) - 1, steps=min(max_rois, len(mask))).round().long()
    out = []
    for n, i in enumerate(idx.tolist()):
        prior = extras.get("prior")
        omp = (
            F.interpolate(
                prior[i : i + 1].float(), size=(m, m), mode="bilinear", align_corners=False
            )[0, 0]
            if prior is not None
            else mask.new_zeros((m, m))
        )
        row = torch.cat([omp, mask[i, 0].float(), extras["gt"][i].float()], dim=1).clamp(0, 1)
        out.append((f"omp_mask_gt/roi{n}", row.detach().cpu().unsqueeze(0).repeat(3, 1, 1)))
    return out
