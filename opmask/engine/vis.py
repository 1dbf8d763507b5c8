"""TensorBoard pictures like the paper's figures: per sampled foreground RoI, the RoI's image
crop | OMP | predicted mask | GT mask, under a caption with the class name and whether the class
is strong (mask-supervised) or weak."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torchvision.ops import roi_align

PANEL = 112  # pixels per column (the 28x28 mask scaled 4x)
CAPTION = 14  # caption strip height


def roi_triptychs(
    extras: dict,
    max_rois: int,
    images: list[torch.Tensor] | None = None,
    class_names: list[str] | None = None,
    bgr: bool = True,
) -> list[tuple[str, torch.Tensor]]:
    """``(tag, image (3, CAPTION + PANEL, 4 PANEL))`` per sampled foreground RoI, in [0, 1].

    Args:
        extras: the training forward's extras: ``mask`` (F, 1, M, M) probabilities, ``gt``
            (F, M, M), ``prior`` (F, 1, m, m) or None (baseline: a black OMP column),
            ``labels`` (F,) 1..K, ``strong`` (F,), ``samples`` [(boxes (R_i, 4), labels (R_i,))]
            per image (foreground RoIs are those with label > 0, in this order).
        images: the batch's images (3, H_i, W_i), 0-255, in the boxes' coordinates; without
            them the crop column is black.
        class_names: name per label - 1. bgr: the images' channels are BGR.

    Tags are stable (``image_omp_mask_gt/roiN``): TensorBoard shows a slider over iterations.
    """
    mask = extras.get("mask")
    if mask is None or len(mask) == 0:
        return []
    idx = torch.linspace(0, len(mask) - 1, steps=min(max_rois, len(mask))).round().long()
    crops = _crops(extras, idx, images, bgr)  # (n, 3, P, P)
    out = []
    for n, i in enumerate(idx.tolist()):
        cols = [_gray(c) for c in _mask_columns(extras, i)]  # OMP, mask, GT: (3, P, P) each
        panel = torch.cat([crops[n], *cols], dim=2).clamp(0, 1)  # (3, P, 4P)
        caption = _caption(extras, i, class_names, panel.shape[2])
        out.append((f"image_omp_mask_gt/roi{n}", torch.cat([caption, panel], dim=1)))
    return out


def _mask_columns(extras: dict, i: int) -> list[torch.Tensor]:
    """OMP, predicted mask and GT mask of RoI ``i`` as (P, P) maps."""
    mask = extras["mask"][i, 0].detach().float().cpu()
    prior = extras.get("prior")
    omp = prior[i, 0].detach().float().cpu() if prior is not None else torch.zeros_like(mask)
    gt = extras["gt"][i].detach().float().cpu()
    return [_resize(x, "bilinear" if x is omp else "nearest") for x in (omp, mask, gt)]


def _resize(x: torch.Tensor, mode: str) -> torch.Tensor:
    kw = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(x[None, None], size=(PANEL, PANEL), mode=mode, **kw)[0, 0]


def _gray(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(0).repeat(3, 1, 1)


def _crops(extras: dict, idx: torch.Tensor, images: list | None, bgr: bool) -> torch.Tensor:
    """The chosen RoIs' image regions, RGB in [0, 1]: (n, 3, P, P); black without images."""
    if images is None or "samples" not in extras:
        return torch.zeros(len(idx), 3, PANEL, PANEL)
    boxes, owner = [], []
    for b, (img_boxes, labels) in enumerate(extras["samples"]):
        fg = labels.detach().cpu() > 0
        boxes.append(img_boxes.detach().float().cpu()[fg])
        owner += [b] * int(fg.sum())
    boxes = torch.cat(boxes)[idx]  # (n, 4)
    out = []
    for box, b in zip(boxes, [owner[i] for i in idx.tolist()]):
        img = images[b].detach().float().cpu()[None]  # (1, 3, H, W)
        crop = roi_align(img, [box[None]], output_size=PANEL, aligned=True)[0]
        out.append((crop.flip(0) if bgr else crop) / 255.0)
    return torch.stack(out)


def _caption(extras: dict, i: int, class_names: list[str] | None, width: int) -> torch.Tensor:
    """A white-on-black strip: ``name (strong|weak)  crop | OMP | mask | GT``: (3, CAPTION, W)."""
    label = int(extras["labels"][i])
    name = class_names[label - 1] if class_names else f"class {label}"
    strong = extras.get("strong")
    kind = "" if strong is None else (" (strong)" if bool(strong[i]) else " (weak)")
    strip = Image.new("RGB", (width, CAPTION), "black")
    ImageDraw.Draw(strip).text((3, 1), f"{name}{kind}   image | OMP | mask | GT", fill="white")
    return torch.from_numpy(np.asarray(strip).copy()).permute(2, 0, 1).float() / 255.0
