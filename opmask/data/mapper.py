"""Dataset dict -> model input: read, resize (shortest edge), flip, transform masks."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .coco import DatasetError, is_polygon, label_of_index, segm_to_mask, shown
from .images import read_image
from .masks import InstanceMasks, transform_polygons


def shortest_edge_size(h: int, w: int, short: int, max_size: int) -> tuple[int, int]:
    """Output (h, w) with the short side ``short`` unless the long side would pass ``max_size``
    (Detectron2's ``ResizeShortestEdge.get_output_shape``, float for float)."""
    scale = short * 1.0 / min(h, w)
    newh, neww = (short, scale * w) if h < w else (scale * h, short)
    if max(newh, neww) > max_size:
        scale = max_size * 1.0 / max(newh, neww)
        newh, neww = newh * scale, neww * scale
    return int(newh + 0.5), int(neww + 0.5)


class DatasetMapper:
    """Callable turning one dataset dict into the model's input dict.

    Output: ``image`` (3, H, W) float32 0-255, ``height``/``width`` of the original image,
    ``image_id``; when training also ``instances``: ``boxes`` (N, 4) xyxy, ``labels`` (N,) in
    1..K, ``masks``, ``has_mask`` (N,) bool. Crowd regions are not instances. A dict with
    ``pixels`` ((H, W, 3) uint8 in ``image_format`` order) is mapped from it, not read from disk.

    ``mask_format`` "polygon" (Detectron2's default): ``masks`` is an ``InstanceMasks`` holding
    polygons as polygons (rasterised per RoI when training) and RLE annotations as (H, W) bit
    masks. "bitmask": a (N, H, W) uint8 stack at image resolution (the GT-box diagnostic).
    """

    def __init__(
        self,
        *,
        is_train: bool,
        min_sizes: Sequence[int],
        max_size: int,
        sampling: str = "choice",
        flip: bool = False,
        image_format: str = "BGR",
        mask_on: bool = True,
        mask_format: str = "polygon",
    ):
        if sampling not in ("choice", "range"):
            raise ValueError(
                f"INPUT.MIN_SIZE_TRAIN_SAMPLING must be choice or range, got {sampling}"
            )
        self.is_train, self.min_sizes, self.max_size = is_train, list(min_sizes), max_size
        self.sampling, self.flip, self.image_format, self.mask_on = (
            sampling,
            flip,
            image_format,
            mask_on,
        )
        if mask_format not in ("polygon", "bitmask"):
            raise ValueError(f"mask_format must be polygon or bitmask, got {mask_format}")
        self.mask_format = mask_format

    def _draw_short_side(self, rng: np.random.Generator | None) -> int:
        if rng is None:
            return self.min_sizes[0]
        if self.sampling == "range":
            return int(rng.integers(self.min_sizes[0], self.min_sizes[-1] + 1))
        return int(self.min_sizes[rng.integers(len(self.min_sizes))])

    def __call__(self, d: dict, rng: np.random.Generator | None = None) -> dict:
        img = d["pixels"] if "pixels" in d else read_image(d["file_name"], self.image_format)
        h0, w0 = img.shape[:2]
        if (h0, w0) != (d["height"], d["width"]):
            raise DatasetError(
                f"image id {d['image_id']}: {shown(d['file_name'])} is {w0}x{h0}, "
                f"annotations say {d['width']}x{d['height']}"
            )
        h, w = shortest_edge_size(h0, w0, self._draw_short_side(rng), self.max_size)
        flip = self.flip and rng is not None and bool(rng.random() < 0.5)
        pil = Image.fromarray(np.ascontiguousarray(img)).resize((w, h), Image.BILINEAR)
        arr = np.asarray(pil)[:, ::-1] if flip else np.asarray(pil)
        out = {
            "image": torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float(),
            "height": h0,
            "width": w0,
            "image_id": d["image_id"],
        }
        if self.is_train:
            out["instances"] = self._instances(d, (h0, w0), (h, w), flip)
        return out

    def _instances(self, d: dict, size0, size, flip: bool) -> dict:
        (h0, w0), (h, w) = size0, size
        sx, sy = w / w0, h / h0
        annos = [a for a in d["annotations"] if not a.get("iscrowd", 0)]
        boxes = torch.tensor([a["bbox"] for a in annos], dtype=torch.float32).reshape(-1, 4)
        boxes *= torch.tensor([sx, sy, sx, sy])
        if flip:
            boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
        # Clipped to the image, then empty boxes dropped, as Detectron2's
        # transform_instance_annotations and filter_empty_instances (box side > 1e-5).
        boxes = torch.minimum(boxes.clamp(min=0), torch.tensor([w, h, w, h], dtype=torch.float32))
        keep = ((boxes[:, 2] - boxes[:, 0]) > 1e-5) & ((boxes[:, 3] - boxes[:, 1]) > 1e-5)
        if not bool(keep.all()):
            boxes, annos = boxes[keep], [a for a, k in zip(annos, keep.tolist()) if k]
        masks = [self._mask(a.get("segmentation"), size0, size, flip) for a in annos]
        has_mask = torch.tensor([m is not None for m in masks], dtype=torch.bool)
        inst = InstanceMasks(masks, (h, w))
        return {
            "boxes": boxes,
            "labels": torch.tensor(
                [label_of_index(a["category_id"]) for a in annos], dtype=torch.int64
            ),
            "masks": inst.to_bitmasks() if self.mask_format == "bitmask" else inst,
            "has_mask": has_mask,
        }

    def _mask(self, segm, size0, size, flip: bool):
        """One instance's mask in the resized (and flipped) image: polygons (a list of flat
        float64 arrays), a (H, W) uint8 tensor for RLE, or None without a mask."""
        if not self.mask_on or not segm:
            return None
        (h0, w0), (h, w) = size0, size
        if is_polygon(segm):
            polys = transform_polygons(segm, w / w0, h / h0, w if flip else None)
            return [np.asarray(p, dtype=np.float64) for p in polys]
        m = np.asarray(Image.fromarray(segm_to_mask(segm, h0, w0)).resize((w, h), Image.NEAREST))
        return torch.from_numpy(np.array(m[:, ::-1] if flip else m))
