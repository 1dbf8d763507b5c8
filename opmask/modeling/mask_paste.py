"""Pasting RoI masks into the image with Detectron2 v0.6's ``paste_masks_in_image`` semantics:
every image pixel centre is mapped into the box and the M x M mask is sampled there bilinearly
(``grid_sample``, ``align_corners=False``, zeros outside), so the pasted shape is exact at any
box size (no enlarged box, no integer box, no resize of the mask)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

GPU_MEM_LIMIT = 1024**3  # bytes of float32 sampled output per chunk on GPU (Detectron2's value)


def _paste_chunk(masks: torch.Tensor, boxes: torch.Tensor, h: int, w: int, crop: bool):
    """Masks (n, 1, M, M) sampled at the pixel centres of the image, or only of the window that
    covers all ``boxes`` (n, 4) when ``crop``: (n, h', w') and the window's (rows, cols) slices."""
    if crop:
        x0 = int(torch.clamp(boxes[:, 0].min().floor() - 1, min=0))
        y0 = int(torch.clamp(boxes[:, 1].min().floor() - 1, min=0))
        x1 = int(torch.clamp(boxes[:, 2].max().ceil() + 1, max=w))
        y1 = int(torch.clamp(boxes[:, 3].max().ceil() + 1, max=h))
    else:
        x0, y0, x1, y1 = 0, 0, w, h
    bx0, by0, bx1, by1 = boxes.float().split(1, dim=1)  # each (n, 1)
    ys = torch.arange(y0, y1, device=boxes.device, dtype=torch.float32) + 0.5
    xs = torch.arange(x0, x1, device=boxes.device, dtype=torch.float32) + 0.5
    ys = (ys - by0) / (by1 - by0) * 2 - 1  # (n, h')
    xs = (xs - bx0) / (bx1 - bx0) * 2 - 1  # (n, w')
    size = (len(boxes), ys.shape[1], xs.shape[1])  # grid: (n, h', w', 2)
    grid = torch.stack([xs[:, None, :].expand(size), ys[:, :, None].expand(size)], dim=3)
    out = F.grid_sample(masks.float(), grid, align_corners=False)[:, 0]
    return out, (slice(y0, y1), slice(x0, x1))


def num_chunks(n: int, h: int, w: int, device: torch.device) -> int:
    """How many pieces the ``n`` masks are pasted in: one per mask on CPU (each only over its
    own box's window), else as few as keep each piece's float32 output under GPU_MEM_LIMIT."""
    if device.type == "cpu":
        return n
    return min(n, math.ceil(n * h * w * 4 / GPU_MEM_LIMIT))


def paste_masks_in_image(
    masks: torch.Tensor,
    boxes: torch.Tensor,
    image_shape: tuple[int, int],
    threshold: float | None = 0.5,
) -> torch.Tensor:
    """Paste masks (N, M, M) or (N, 1, M, M) into boxes (N, 4) xyxy of an (H, W) image.

    Returns (N, H, W): bool ``>= threshold``; or float probabilities when ``threshold`` is None.
    Memory: the output plus one chunk's sampling grid (one box window on CPU, at most
    GPU_MEM_LIMIT of output on GPU).
    """
    if masks.dim() == 4:
        masks = masks[:, 0]
    h, w = (int(v) for v in image_shape)
    n = len(masks)
    dtype = torch.bool if threshold is not None else torch.float32
    out = torch.zeros((n, h, w), dtype=dtype, device=boxes.device)
    if n == 0:
        return out
    dev = boxes.device
    for inds in torch.chunk(torch.arange(n, device=dev), num_chunks(n, h, w, dev)):
        pasted, window = _paste_chunk(masks[inds, None], boxes[inds], h, w, dev.type == "cpu")
        out[(inds, *window)] = pasted >= threshold if threshold is not None else pasted
    return out
