"""Validate a COCO-format dataset once, completely: every problem counted, the first ids named.

The same checks as ``load_coco_json`` (which stops at the first problem), plus the image files:
present, readable, and of the size the annotations give; files are checked in parallel.
Training no longer stats every image upfront; it checks each image when it reads it.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from PIL import Image

from .coco import (
    DatasetError,
    _annotation_problem,
    _check_categories,
    _check_image,
    _group_annotations,
    _read_json,
    index_of_ids,
)
from .index import cache_path, json_key
from .masks import is_polygon, valid_polygons

FIRST_IDS = 5  # offending image ids shown per kind of problem


@dataclass
class CheckReport:
    json_file: str
    counts: Counter = field(default_factory=Counter)  # images, annotations, categories, ...
    problems: dict = field(default_factory=dict)  # kind -> [(image id, message)]
    notes: Counter = field(default_factory=Counter)  # well-formed but dropped by training

    def add(self, kind: str, image_id, message: str) -> None:
        self.problems.setdefault(kind, []).append((image_id, message))

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        out = [f"{self.json_file}: " + ", ".join(f"{v} {k}" for k, v in self.counts.items())]
        out += [f"  note: {v} {k} (dropped by training)" for k, v in self.notes.items()]
        for kind, items in self.problems.items():
            ids = ", ".join(str(i) for i, _ in items[:FIRST_IDS])
            out.append(f"  {kind}: {len(items)} (first image ids: {ids})")
            out += [f"    image id {i}: {msg}" for i, msg in items[:FIRST_IDS]]
        out.append("OK" if self.ok else f"FAILED: {sum(map(len, self.problems.values()))} problems")
        return out


def _check_file(item: tuple) -> tuple | None:
    """(image id, path, problem kind, message) or None when the file is fine."""
    iid, path, width, height, decode = item
    if not os.path.isfile(path):
        return iid, "missing image file", f"not found: {path}"
    try:
        with Image.open(path) as im:
            size = im.size
            im.load() if decode else im.verify()
    except Exception as e:  # noqa: BLE001 - any decoder failure means unreadable
        return iid, "unreadable image", f"{path}: {type(e).__name__}: {e}"
    if size != (width, height):
        return iid, "image size mismatch", (
            f"{path} is {size[0]}x{size[1]}, annotations say {width}x{height}"
        )
    return None


def _check_annotations(report: CheckReport, data: dict, images: dict, id_map: dict) -> None:
    seen, image_ids = set(), set(images)
    for ann in data.get("annotations", []):
        iid = ann.get("image_id") if isinstance(ann, dict) else None
        try:
            _group_annotations(report.json_file, [ann], image_ids)
            if ann["id"] in seen:
                raise DatasetError(f"duplicate annotation id {ann['id']}")
        except DatasetError as e:
            report.add("bad annotation record", iid, str(e).split(": ", 1)[-1])
            continue
        seen.add(ann["id"])
        problem = _annotation_problem(ann, images[iid], id_map)
        if problem:
            report.add("bad annotation", iid, f"annotation {ann['id']}: {problem}")
        elif is_polygon(ann.get("segmentation")):
            segm = ann["segmentation"]
            report.notes["degenerate polygons"] += len(segm) - len(valid_polygons(segm))
    report.counts["annotations"] = len(seen)


def check_dataset(
    json_file: str, image_root: str, *, workers: int = 0, decode: bool = False
) -> CheckReport:
    """Every check on ``json_file`` and the images under ``image_root``.

    Raises:
        DatasetError: the file is not a COCO object at all, or its categories are invalid.
    """
    data = _read_json(json_file)
    cats = _check_categories(json_file, data["categories"])
    id_map = index_of_ids([c["id"] for c in cats])
    report = CheckReport(json_file)
    images, seen = {}, set()
    for i, img in enumerate(data["images"]):
        try:
            _check_image(json_file, i, img, seen)
            images[img["id"]] = img
        except DatasetError as e:
            iid = img.get("id") if isinstance(img, dict) else None
            report.add("bad image record", iid, str(e).split(": ", 1)[-1])
    report.counts.update(images=len(images), categories=len(cats))
    _check_annotations(report, data, images, id_map)
    items = [
        (iid, os.path.join(image_root, im["file_name"]), im["width"], im["height"], decode)
        for iid, im in images.items()
    ]
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        for bad in pool.map(_check_file, items, chunksize=max(1, len(items) // 64)):
            if bad is not None:
                report.add(bad[1], bad[0], bad[2])
    return report


def record_check(json_file: str, report: CheckReport, cache_dir: str = "") -> str | None:
    """Record the outcome beside the dataset's index cache, keyed like it; None if unwritable."""
    path = cache_path(json_file, cache_dir) + ".check.json"
    record = {
        "key": json_key(json_file),
        "ok": report.ok,
        "counts": dict(report.counts),
        "problems": {k: len(v) for k, v in report.problems.items()},
    }
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.replace(tmp, path)
    except OSError:
        return None
    return path
