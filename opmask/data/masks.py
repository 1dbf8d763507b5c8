"""Instance masks as tensors: polygons transformed with their image, rasterised or cropped per RoI
into mask targets (COCO segmentations to bit masks and back: ``coco.py``)."""

from __future__ import annotations

import numpy as np
import torch
from pycocotools import mask as mask_util
from torchvision.ops import roi_align

from .coco import segm_to_mask


def transform_polygons(polygons: list, scale_x: float, scale_y: float, flip_width: float | None):
    """Scale polygon coordinates, then mirror them horizontally in an image of ``flip_width``."""
    out = []
    for p in polygons:
        a = np.asarray(p, dtype=np.float64).reshape(-1, 2) * (scale_x, scale_y)
        if flip_width is not None:
            a[:, 0] = flip_width - a[:, 0]
        out.append(a.reshape(-1).tolist())
    return out


def rasterize_polygons_within_box(polygons: list, box, size: int) -> np.ndarray:
    """Detectron2's per-RoI target (``PolygonMasks.crop_and_resize``): translate the polygons to
    the box origin, scale by ``size / side`` (a side under 0.1 counts as 0.1), rasterise at
    ``size`` x ``size`` with pycocotools.

    Args:
        polygons: one instance's polygons, each a flat float64 array ``x0, y0, x1, y1, ...``.
        box: (4,) float32 xyxy, as the RoI tensor holds it (its sides are float32 differences).
        size: side M of the target.

    Returns:
        (M, M) uint8.
    """
    box = np.asarray(box, dtype=np.float32)
    w, h = float(box[2] - box[0]), float(box[3] - box[1])
    scale = np.array([size / max(w, 0.1), size / max(h, 0.1)])
    origin = box[:2].astype(np.float64)
    shifted = [((np.asarray(p).reshape(-1, 2) - origin) * scale).reshape(-1) for p in polygons]
    if not shifted:
        return np.zeros((size, size), dtype=np.uint8)
    rle = mask_util.merge(mask_util.frPyObjects([p.tolist() for p in shifted], size, size))
    return mask_util.decode(rle).astype(np.uint8)


class InstanceMasks:
    """Ground-truth masks of one image's N instances, each in the form the dataset gave it:
    polygons (a list of flat float64 arrays, in image coordinates) for polygon annotations, a
    (H, W) uint8 tensor for RLE ones, or None for an instance without a mask.

    Polygons stay polygons until ``crop_and_resize`` rasterises them per RoI, as Detectron2's
    ``PolygonMasks`` does; no (N, H, W) stack is shipped for them. Detectron2 keeps one form per
    dataset (``INPUT.MASK_FORMAT``); COCO files may mix both (the shapes set gives RLE for
    occluded objects), so the form is chosen per instance.
    """

    def __init__(self, masks: list, image_size: tuple[int, int]):
        self.masks, self.image_size = list(masks), tuple(image_size)

    @classmethod
    def from_bitmasks(cls, bitmasks: torch.Tensor) -> "InstanceMasks":
        """From a (N, H, W) stack of bit masks."""
        return cls(list(bitmasks), tuple(bitmasks.shape[1:]))

    def __len__(self) -> int:
        return len(self.masks)

    def to(self, device, non_blocking: bool = False) -> "InstanceMasks":
        moved = [
            m.to(device, non_blocking=non_blocking) if isinstance(m, torch.Tensor) else m
            for m in self.masks
        ]
        return InstanceMasks(moved, self.image_size)

    def crop_and_resize(self, index: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
        """Targets of R RoIs: (R, size, size) bool on ``boxes.device``.

        Args:
            index: (R,) instance of each RoI.
            boxes: (R, 4) xyxy RoIs in image coordinates.
        """
        out = torch.zeros((len(index), size, size), dtype=torch.bool, device=boxes.device)
        forms = [self.masks[i] for i in index.tolist()]
        poly = [r for r, m in enumerate(forms) if isinstance(m, list)]
        bits = [r for r, m in enumerate(forms) if isinstance(m, torch.Tensor)]
        if poly:
            cpu_boxes = boxes[poly].detach().float().cpu().numpy()
            crops = [
                rasterize_polygons_within_box(forms[r], b, size) for r, b in zip(poly, cpu_boxes)
            ]
            out[poly] = torch.from_numpy(np.stack(crops)).to(boxes.device).bool()
        if bits:
            out[bits] = crop_bitmasks(torch.stack([forms[r] for r in bits]), boxes[bits], size)
        return out

    def to_bitmasks(self) -> torch.Tensor:
        """(N, H, W) uint8 at image resolution (polygons rasterised; no mask: zeros)."""
        h, w = self.image_size
        out = torch.zeros((len(self), h, w), dtype=torch.uint8)
        for i, m in enumerate(self.masks):
            if isinstance(m, list) and m:
                out[i] = torch.from_numpy(segm_to_mask([p.tolist() for p in m], h, w))
            elif isinstance(m, torch.Tensor):
                out[i] = m.cpu()
        return out


def crop_bitmasks(bitmasks: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Detectron2's ``BitMasks.crop_and_resize``: aligned RoIAlign (sampling ratio 0) of each
    (H, W) mask in its own box, thresholded at 0.5. (R, H, W), (R, 4) -> (R, size, size) bool."""
    rois = torch.cat([torch.arange(len(boxes), device=boxes.device)[:, None].to(boxes), boxes], 1)
    crops = roi_align(bitmasks[:, None].to(boxes), rois, (size, size), 1.0, 0, aligned=True)
    return crops[:, 0] >= 0.5
