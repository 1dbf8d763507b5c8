"""COCO-format annotation files to Detectron2-style dataset dicts, with strict validation.

A dataset dict is ``{file_name, height, width, image_id, annotations}``; each annotation is
``{bbox: [x0, y0, x1, y1] (absolute), category_id: contiguous 0..K-1, segmentation, iscrowd}``.

Every field used is checked for type and value; an error names the file, the image id and the
annotation id. As Detectron2 v0.6 does, polygons of < 3 points are dropped (and an annotation left
without one), and a zero-size box is kept: the training mapper drops it (empty once clipped), so
an image whose only annotation it is trains as background instead of being filtered out as
empty. Both are counted in ``DatasetInfo.dropped``. What trains but deserves a word (polygons
mostly outside their image, file names absolute or leading out of the image folder) is logged once
per dataset and process (``DatasetInfo.warnings``). Paths in messages are escaped when not
printable.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
from pycocotools import mask as mask_util

from ..utils.errors import OPMaskInputError

logger = logging.getLogger(__name__)

# A box may reach this far outside its image: BOX_SLACK_PX + BOX_SLACK_FRACTION * image side.
BOX_SLACK_PX = 1.0
BOX_SLACK_FRACTION = 0.05


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


class DatasetError(OPMaskInputError):
    """A dataset file is malformed; the message names the file, image id or category."""


def shown(path: str) -> str:
    """``path`` as a message prints it: as is when printable, else escaped like ``ascii()`` (a
    NUL byte, a newline, an escape sequence or an undecodable byte never reaches a terminal)."""
    return path if path.isprintable() else ascii(path)


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
    # why the file cannot be COCOeval's ground truth (None: it can); checked for test sets
    not_evaluable: str | None = None
    # what trains but deserves a word (one line each; logged once per dataset and process)
    warnings: list[str] = field(default_factory=list)

    # The one place that maps category ids to the model's labels and back.
    def labels(self, category_ids: Iterable[int]) -> list[int]:
        """Original category ids -> the model's labels (1..K; 0 is background)."""
        index = index_of_ids(self.category_ids)
        return [label_of_index(index[c]) for c in category_ids]

    def category_id(self, label: int) -> int:
        """The model's label (1..K) -> the original category id."""
        return self.category_ids[label - 1]


def index_of_ids(category_ids: Sequence[int]) -> dict[int, int]:
    """Sorted original category ids -> contiguous indices 0..K-1 (what the loaded dicts hold)."""
    return {c: i for i, c in enumerate(category_ids)}


def label_of_index(index: int) -> int:
    """A contiguous index 0..K-1 -> the model's label 1..K (label 0 is background)."""
    return index + 1


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _read_json(json_file: str) -> dict:
    if not os.path.isfile(json_file):
        raise DatasetError(f"annotation file not found: {json_file}")
    try:
        with open(json_file, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{json_file}: malformed JSON: {e}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{json_file}: expected a COCO object, got {type(data).__name__}")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{json_file}: missing the COCO list '{key}'")
    if not isinstance(data.get("annotations", []), list):
        raise DatasetError(f"{json_file}: 'annotations' must be a list")
    return data


def _check_categories(json_file: str, cats: list) -> list[dict]:
    """Sorted by id; each a dict with a unique int id."""
    seen = set()
    for i, c in enumerate(cats):
        cid = c.get("id") if isinstance(c, dict) else None
        if not _is_int(cid):
            raise DatasetError(f"{json_file}: categories[{i}] has no integer 'id': {c!r:.80}")
        if cid in seen:
            raise DatasetError(f"{json_file}: duplicate category id {cid}")
        seen.add(cid)
    return sorted(cats, key=lambda c: c["id"])


def _is_unicode(text: str) -> bool:
    """``text`` encodes as UTF-8 (no lone surrogate from a ``\\udXXX`` escape in the JSON)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_image(json_file: str, i: int, img: Any, seen: set) -> None:
    if not isinstance(img, dict):
        raise DatasetError(f"{json_file}: images[{i}] is a {type(img).__name__}, not an object")
    iid = img.get("id")
    if not _is_int(iid):
        raise DatasetError(f"{json_file}: images[{i}]: image id {iid!r} is not an integer")
    if iid in seen:
        raise DatasetError(f"{json_file}: duplicate image id {iid} (images[{i}])")
    seen.add(iid)
    name = img.get("file_name")
    if not isinstance(name, str) or not name:
        raise DatasetError(f"{json_file}: image id {iid}: 'file_name' missing or not a string")
    if "\0" in name or not _is_unicode(name):
        raise DatasetError(
            f"{json_file}: image id {iid}: 'file_name' {ascii(name)} cannot name a file "
            "(a NUL byte or a lone surrogate)"
        )
    for key in ("height", "width"):
        if not _is_int(img.get(key)) or img[key] <= 0:
            raise DatasetError(
                f"{json_file}: image id {iid}: '{key}' must be a positive integer, "
                f"got {img.get(key)!r}"
            )


def _group_annotations(json_file: str, anns: list, image_ids: set) -> dict:
    """image id -> its annotations, after checking each is an object with unique int ids."""
    by_image: dict = {}
    seen = set()
    for i, ann in enumerate(anns):
        if not isinstance(ann, dict):
            raise DatasetError(
                f"{json_file}: annotations[{i}] is a {type(ann).__name__}, not an object"
            )
        aid, iid = ann.get("id"), ann.get("image_id")
        if not _is_int(aid):
            raise DatasetError(f"{json_file}: annotations[{i}]: id {aid!r} is not an integer")
        if aid in seen:
            raise DatasetError(f"{json_file}: duplicate annotation id {aid}")
        seen.add(aid)
        if not _is_int(iid):
            raise DatasetError(f"{json_file}: annotation {aid}: image_id {iid!r} is not an integer")
        if iid not in image_ids:
            raise DatasetError(
                f"{json_file}: annotation {aid} refers to image id {iid}, not in 'images'"
            )
        by_image.setdefault(iid, []).append(ann)
    return by_image


def _check_bbox(bbox: Any, img: dict) -> str | None:
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(map(_is_finite, bbox)):
        return f"bbox must be 4 finite numbers [x, y, w, h], got {bbox!r:.80}"
    x, y, w, h = bbox
    if w < 0 or h < 0:
        return f"bbox {bbox} has a negative width or height"
    sx = BOX_SLACK_PX + BOX_SLACK_FRACTION * img["width"]
    sy = BOX_SLACK_PX + BOX_SLACK_FRACTION * img["height"]
    if x < -sx or y < -sy or x + w > img["width"] + sx or y + h > img["height"] + sy:
        return f"bbox {bbox} lies outside the {img['width']}x{img['height']} image"
    return None


def _finite_numbers(values: Any) -> bool:
    """A list of finite numbers (fast path: one C-level sum; per item only when it fails)."""
    if not isinstance(values, list):
        return False
    try:
        if math.isfinite(sum(values)):
            return True
    except TypeError:
        return False
    return all(map(_is_finite, values))  # inf/nan inside, or a sum that overflowed


def _check_segmentation(segm: Any, img: dict) -> str | None:
    if segm is None or is_polygon(segm):
        bad = [p for p in segm or [] if not _finite_numbers(p)]
        return f"polygon {bad[0]!r:.60} is not a list of finite numbers" if bad else None
    if isinstance(segm, dict):
        size, counts = segm.get("size"), segm.get("counts")
        if not isinstance(counts, (str, list)):
            return "RLE segmentation needs 'counts' (a string or a list of run lengths)"
        if size != [img["height"], img["width"]]:
            return (
                f"RLE size {size!r} differs from the image size [{img['height']}, {img['width']}]"
            )
        return None
    return f"segmentation must be a list of polygons or an RLE object, got {type(segm).__name__}"


EVAL_FIELDS = ("area", "iscrowd", "segmentation")  # what pycocotools' COCOeval reads


def _not_evaluable(json_file: str, anns: list) -> str | None:
    """The first annotation COCOeval would fail on (it reads every annotation of the file)."""
    for ann in anns:
        missing = [k for k in EVAL_FIELDS if ann.get(k) is None]
        if missing:
            return (
                f"{json_file}: image id {ann['image_id']}, annotation {ann['id']}: no "
                f"{', '.join(missing)} (COCO evaluation needs {', '.join(EVAL_FIELDS)})"
            )
    return None


def _annotation_problem(ann: dict, img: dict, id_map: dict) -> str | None:
    if not _is_int(ann.get("category_id")) or ann["category_id"] not in id_map:
        return f"unknown category_id {ann.get('category_id')!r}"
    if ann.get("iscrowd", 0) not in (0, 1):
        return f"iscrowd must be 0 or 1, got {ann.get('iscrowd')!r}"
    area = ann.get("area", 0)
    if not _is_finite(area) or area < 0:
        return f"area must be a finite number >= 0, got {area!r}"
    return _check_bbox(ann.get("bbox"), img) or _check_segmentation(ann.get("segmentation"), img)


def _convert_annotation(ann: dict, img: dict, id_map: dict, json_file: str, dropped: Counter):
    """One COCO annotation to our form, or None without a valid polygon (counted in ``dropped``;
    a zero-size box is counted there too but kept, for the mapper to drop, as Detectron2)."""
    problem = _annotation_problem(ann, img, id_map)
    if problem:
        raise DatasetError(f"{json_file}: image id {img['id']}, annotation {ann['id']}: {problem}")
    x, y, w, h = (float(v) for v in ann["bbox"])
    degenerate = w <= 0 or h <= 0
    if degenerate:
        dropped["degenerate box"] += 1
    segm = ann.get("segmentation")
    if is_polygon(segm):
        good = valid_polygons(segm)
        if len(good) < len(segm) and not degenerate:
            dropped["degenerate polygon"] += len(segm) - len(good)
        if not good:
            if not degenerate:
                dropped["annotation without valid polygon"] += 1
            return None
        segm = good
    return {
        "bbox": [x, y, x + w, y + h],
        "category_id": id_map[ann["category_id"]],
        "segmentation": segm,
        "iscrowd": int(ann.get("iscrowd", 0)),
    }


def _strong_ids(json_file: str, data: dict, category_ids: list[int]) -> list[int] | None:
    """The split the file declares in ``opmask.strong_category_ids``, checked."""
    meta = data.get("opmask") or {}
    ids = meta.get("strong_category_ids") if isinstance(meta, dict) else None
    if ids is None:
        return None
    if not isinstance(ids, list) or not all(map(_is_int, ids)):
        raise DatasetError(f"{json_file}: opmask.strong_category_ids must be a list of integers")
    unknown = sorted(set(ids) - set(category_ids))
    if unknown:
        raise DatasetError(f"{json_file}: opmask.strong_category_ids {unknown} are not categories")
    return ids


def load_coco_json(
    json_file: str, image_root: str, name: str, *, check_files: bool = True
) -> tuple[list[dict], DatasetInfo]:
    """Load and validate a COCO-format dataset (``check_files``: also stat every image file;
    the dataset index skips it: images are checked when read, and by ``opmask-data check``).

    Raises:
        DatasetError: malformed JSON; a field of wrong type or value (ids, file names, sizes,
            boxes, segmentations, categories); duplicate ids; a missing image file.
    """
    data = _read_json(json_file)
    cats = _check_categories(json_file, data["categories"])
    id_map = index_of_ids([c["id"] for c in cats])
    info = DatasetInfo(
        name=name,
        json_file=json_file,
        image_root=image_root,
        category_ids=[c["id"] for c in cats],
        thing_classes=[str(c.get("name", c["id"])) for c in cats],
        dataset_strong_ids=_strong_ids(json_file, data, list(id_map)),
    )
    image_ids: set = set()
    for i, img in enumerate(data["images"]):
        _check_image(json_file, i, img, image_ids)
    anns_by_image = _group_annotations(json_file, data.get("annotations", []), image_ids)
    info.not_evaluable = _not_evaluable(json_file, data.get("annotations", []))
    dicts, flagged, first = [], Counter(), {}  # kind -> how many; kind -> the first
    for img in data["images"]:
        file_name = os.path.join(image_root, img["file_name"])
        if check_files and not os.path.isfile(file_name):
            raise DatasetError(
                f"{json_file}: image id {img['id']}: file not found: {shown(file_name)}"
            )
        if name_leaves_root(img["file_name"]):
            flagged["names"] += 1
            first.setdefault("names", f"image id {img['id']}: {shown(img['file_name'])}")
        annos = []
        for ann in anns_by_image.get(img["id"], []):
            obj = _convert_annotation(ann, img, id_map, json_file, info.dropped)
            if obj is None:
                continue
            annos.append(obj)
            if is_polygon(obj["segmentation"]) and polygon_outside(
                obj["segmentation"], img["width"], img["height"]
            ):
                flagged["outside"] += 1
                first.setdefault(
                    "outside", f"image id {img['id']}, annotation {ann['id']}, {shown(file_name)}"
                )
        dicts.append(
            {
                "file_name": file_name,
                "height": img["height"],
                "width": img["width"],
                "image_id": img["id"],
                "annotations": annos,
            }
        )
    if info.dropped:
        logger.warning("%s: dropped %s", name, dict(info.dropped))
    info.warnings = _warnings(flagged, first)
    log_warnings(info)
    logger.info("Loaded %d images from %s", len(dicts), json_file)
    return dicts, info


def polygon_outside(polygons: list, width: int, height: int) -> bool:
    """Under half of the polygons' extent (their joint bounding box) lies inside the image grown
    by a box's slack (``BOX_SLACK_*``): wholly outside, or a vertex far away. A polygon crossing
    the edge is normal (shapes cut by the border). Detectron2 trains on such polygons: the
    rasterised mask is clipped to the image (empty for one wholly outside)."""
    xs = [v for p in polygons for v in p[0::2]]
    ys = [v for p in polygons for v in p[1::2]]
    if not xs:
        return False
    inside = 1.0
    for lo, hi, side in ((min(xs), max(xs), width), (min(ys), max(ys), height)):
        slack = BOX_SLACK_PX + BOX_SLACK_FRACTION * side
        if hi > lo:
            inside *= max(0.0, min(hi, side + slack) - max(lo, -slack)) / (hi - lo)
        elif not -slack <= lo <= side + slack:
            return True
    return inside < 0.5


def name_leaves_root(file_name: str) -> bool:
    """An absolute ``file_name``, or one whose ``..`` leads out of the image folder (Detectron2
    reads both as given)."""
    norm = os.path.normpath(file_name)
    return os.path.isabs(file_name) or norm == os.pardir or norm.startswith(os.pardir + os.sep)


OUTSIDE_POLYGONS = (
    "polygons mostly outside their image (under half their extent inside); they train "
    "clipped to the image"
)
NAMES_OUTSIDE_ROOT = (
    "file_name absolute or leading out of the image folder with '..'; read as given"
)


def _warnings(flagged: Counter, first: dict) -> list[str]:
    """One line per kind of flagged record: how many and the first."""
    out = []
    if flagged["outside"]:
        out.append(
            f"{flagged['outside']} annotations with {OUTSIDE_POLYGONS} (first: {first['outside']})"
        )
    if flagged["names"]:
        out.append(f"{flagged['names']} images with {NAMES_OUTSIDE_ROOT} (first: {first['names']})")
    return out


_WARNED: set = set()  # (annotation file, warning) already logged by this process


def log_warnings(info: DatasetInfo) -> None:
    """Log each of ``info.warnings`` once per annotation file and process."""
    for w in info.warnings:
        key = (os.path.realpath(info.json_file), w)
        if key not in _WARNED:
            _WARNED.add(key)
            logger.warning("dataset %s: %s", info.name, w)
