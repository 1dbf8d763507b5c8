"""A COCO-shaped fixture of any size, for benchmarks and tests (no real COCO needed).

``N`` images (640x480, every 10th 480x640) named like COCO's, 80 categories with COCO's sparse ids,
about 7 annotations per image: polygons (1-2 parts of 8-24 points), every 50th a compressed RLE,
crowd regions as uncompressed RLE (COCO's form), and every 100th image without annotations. One
JPEG per orientation is written and hard-linked under every image name (falls back to a copy
where links are not supported).
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

# COCO's 80 category ids (1..90 with gaps)
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def _polygon(rng: np.random.Generator, box: np.ndarray) -> list[float]:
    """A star-shaped polygon inside ``box`` (x, y, w, h), flat [x0, y0, x1, y1, ...]."""
    n = int(rng.integers(8, 25))
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = rng.uniform(0.5, 1.0, n)
    cx, cy, hw, hh = box[0] + box[2] / 2, box[1] + box[3] / 2, box[2] / 2, box[3] / 2
    pts = np.stack([cx + hw * rad * np.cos(ang), cy + hh * rad * np.sin(ang)], 1)
    return np.round(pts, 2).reshape(-1).tolist()


def _box_runs(box: np.ndarray, h: int, w: int) -> list[int]:
    """Uncompressed (column-major) RLE counts of the integer rectangle ``box`` (x, y, w, h)."""
    x0, y0, bw, bh = (int(v) for v in box)
    counts, pos = [], 0
    for x in range(x0, x0 + bw):
        start = x * h + y0
        counts += [start - pos, bh]
        pos = start + bh
    return counts + [h * w - pos]


def _annotation(rng, aid: int, img: dict, k: int) -> dict:
    h, w = img["height"], img["width"]
    bw, bh = rng.integers(8, w // 2), rng.integers(8, h // 2)
    box = np.array([rng.integers(0, w - bw), rng.integers(0, h - bh), bw, bh], dtype=np.float64)
    ann = {"id": aid, "image_id": img["id"], "category_id": COCO_IDS[int(rng.integers(80))]}
    if k == 6 and aid % 3 == 0:  # crowd region, uncompressed RLE
        segm, area, crowd = {"size": [h, w], "counts": _box_runs(box, h, w)}, float(bw * bh), 1
    else:
        segm = [_polygon(rng, box) for _ in range(1 + int(rng.random() < 0.2))]
        area, crowd = float(bw * bh) * 0.6, 0
        if aid % 50 == 0:  # compressed RLE (string counts)
            rle = mask_util.merge(mask_util.frPyObjects(segm, h, w))
            segm = {"size": [h, w], "counts": rle["counts"].decode("ascii")}
            area = float(mask_util.area(rle))
    ann.update(segmentation=segm, area=area, bbox=box.tolist(), iscrowd=crowd)
    return ann


def coco_like(num_images: int, seed: int = 0) -> dict:
    """The annotation file's content."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(num_images):
        h, w = (640, 480) if i % 10 == 9 else (480, 640)
        img = {"id": i + 1, "file_name": f"{i + 1:012d}.jpg", "height": h, "width": w}
        images.append(img)
        if i % 100 == 99:
            continue
        for k in range(int(rng.integers(1, 14))):
            anns.append(_annotation(rng, len(anns) + 1, img, k))
    cats = [{"id": c, "name": f"class{c}", "supercategory": "thing"} for c in COCO_IDS]
    return {
        "info": {"description": "opmask coco-like fixture"},
        "images": images,
        "annotations": anns,
        "categories": cats,
    }


def write_coco_like(out: str, num_images: int, seed: int = 0) -> str:
    """Write ``out/annotations.json`` and ``out/images/``; returns the JSON path.

    Raises:
        FileExistsError: ``out`` exists and is not empty.
    """
    if os.path.isdir(out) and os.listdir(out):
        raise FileExistsError(f"{out} exists and is not empty")
    data = coco_like(num_images, seed)
    img_dir = os.path.join(out, "images")
    os.makedirs(img_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    sources = {}
    for h, w in ((480, 640), (640, 480)):
        src = os.path.join(out, f"source_{w}x{h}.jpg")
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(src, quality=85)
        sources[(h, w)] = src
    for img in data["images"]:
        src, dst = sources[(img["height"], img["width"])], os.path.join(img_dir, img["file_name"])
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    path = os.path.join(out, "annotations.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"))
    return path
