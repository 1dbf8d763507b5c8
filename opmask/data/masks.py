"""COCO segmentations (polygons, RLE) to bit masks, through pycocotools."""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_util


def is_polygon(segm: Any) -> bool:
    return isinstance(segm, list)


def valid_polygons(polygons: list) -> list:
    """Polygons with at least 3 points (6 coordinates); others are degenerate."""
    return [p for p in polygons if len(p) >= 6 and len(p) % 2 == 0]


def segm_to_mask(segm: Any, height: int, width: int) -> np.ndarray:
    """One annotation's segmentation as a (H, W) uint8 mask.

    Accepts a list of polygons, an uncompressed RLE (``counts`` a list) or a compressed RLE.
    """
    if is_polygon(segm):
        rles = mask_util.frPyObjects([list(map(float, p)) for p in segm], height, width)
        rle = mask_util.merge(rles)
    elif isinstance(segm, dict) and isinstance(segm.get("counts"), list):
        rle = mask_util.frPyObjects(segm, height, width)
    elif isinstance(segm, dict) and "counts" in segm:
        rle = dict(segm)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    else:
        raise ValueError(f"unsupported segmentation of type {type(segm).__name__}")
    return mask_util.decode(rle).astype(np.uint8)


def mask_to_rle(mask: np.ndarray) -> dict:
    """A (H, W) binary mask as a JSON-ready compressed RLE."""
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def transform_polygons(polygons: list, scale_x: float, scale_y: float, flip_width: float | None):
    """Scale polygon coordinates, then mirror them horizontally in an image of ``flip_width``."""
    out = []
    for p in polygons:
        a = np.asarray(p, dtype=np.float64).reshape(-1, 2) * (scale_x, scale_y)
        if flip_width is not None:
            a[:, 0] = flip_width - a[:, 0]
        out.append(a.reshape(-1).tolist())
    return out
