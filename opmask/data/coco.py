"""COCO-format annotation files to Detectron2-style dataset dicts, with strict validation.

A dataset dict is ``{file_name, height, width, image_id, annotations}``; each annotation is
``{bbox: [x0, y0, x1, y1] (absolute), category_id: contiguous 0..K-1, segmentation, iscrowd}``.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field

from .masks import is_polygon, valid_polygons

logger = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A dataset file is malformed; the message names the file, image id or category."""


@dataclass
class DatasetInfo:
    """What the rest of the system needs to know about a loaded dataset."""

    name: str
    json_file: str
    image_root: str
    category_ids: list[int]  # sorted original ids; contiguous index i <-> category_ids[i]
    thing_classes: list[str]
    dataset_strong_ids: list[int] | None = None  # split declared by the file itself, if any
    dropped: Counter = field(default_factory=Counter)


def _read_json(json_file: str) -> dict:
    if not os.path.isfile(json_file):
        raise DatasetError(f"annotation file not found: {json_file}")
    try:
        with open(json_file, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{json_file}: malformed JSON: {e}") from None
    for key in ("images", "categories"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise DatasetError(f"{json_file}: missing the COCO list '{key}'")
    return data


def _convert_annotation(ann: dict, img: dict, id_map: dict, json_file: str, dropped: Counter):
    """One COCO annotation to our form, or None when degenerate (counted in ``dropped``)."""
    cat = ann.get("category_id")
    if cat not in id_map:
        raise DatasetError(
            f"{json_file}: annotation {ann.get('id')} of image id {img['id']} has unknown "
            f"category {cat!r}"
        )
    try:
        x, y, w, h = (float(v) for v in ann["bbox"])
    except (KeyError, TypeError, ValueError):
        raise DatasetError(
            f"{json_file}: annotation {ann.get('id')} of image id {img['id']} has no valid bbox"
        ) from None
    if w <= 0 or h <= 0:
        dropped["degenerate box"] += 1
        return None
    segm = ann.get("segmentation")
    if is_polygon(segm):
        good = valid_polygons(segm)
        if len(good) < len(segm):
            dropped["degenerate polygon"] += len(segm) - len(good)
        if not good:
            dropped["annotation without valid polygon"] += 1
            return None
        segm = good
    return {
        "bbox": [x, y, x + w, y + h],
        "category_id": id_map[cat],
        "segmentation": segm,
        "iscrowd": int(ann.get("iscrowd", 0)),
    }


def load_coco_json(json_file: str, image_root: str, name: str) -> tuple[list[dict], DatasetInfo]:
    """Load and validate a COCO-format dataset.

    Raises:
        DatasetError: malformed JSON, missing image file, unknown category, missing fields.
    """
    data = _read_json(json_file)
    cats = sorted(data["categories"], key=lambda c: c["id"])
    id_map = {c["id"]: i for i, c in enumerate(cats)}
    meta = data.get("opmask") or {}
    info = DatasetInfo(
        name=name,
        json_file=json_file,
        image_root=image_root,
        category_ids=[c["id"] for c in cats],
        thing_classes=[c.get("name", str(c["id"])) for c in cats],
        dataset_strong_ids=meta.get("strong_category_ids"),
    )
    anns_by_image: dict = {}
    for ann in data.get("annotations", []):
        anns_by_image.setdefault(ann.get("image_id"), []).append(ann)
    dicts = []
    for img in data["images"]:
        file_name = os.path.join(image_root, img["file_name"])
        if not os.path.isfile(file_name):
            raise DatasetError(f"{json_file}: image id {img['id']}: file not found: {file_name}")
        annos = []
        for ann in anns_by_image.pop(img["id"], []):
            obj = _convert_annotation(ann, img, id_map, json_file, info.dropped)
            if obj is not None:
                annos.append(obj)
        dicts.append(
            {
                "file_name": file_name,
                "height": int(img["height"]),
                "width": int(img["width"]),
                "image_id": img["id"],
                "annotations": annos,
            }
        )
    if anns_by_image:
        orphan = next(iter(anns_by_image))
        raise DatasetError(
            f"{json_file}: annotations refer to image id {orphan!r}, not in 'images'"
        )
    if info.dropped:
        logger.warning("%s: dropped %s", name, dict(info.dropped))
    logger.info("Loaded %d images from %s", len(dicts), json_file)
    return dicts, info
