"""Validate a COCO-format dataset once, completely: every problem counted, the first ids named.

The same checks as ``load_coco_json`` (which stops at the first problem), plus the image files:
present, regular files, readable, and of the size the annotations give; files are checked in
parallel. Training no longer stats every image upfront; it checks each image when it reads it.

Problems fail the check (exit 1). Warnings do not: they name what trains, as Detectron2 would
train it, but deserves a look: polygon points outside their image, zero-width or zero-height
boxes (dropped), file names outside the image folder, 16-bit images (read scaled to 8 bits).
"""

from __future__ import annotations

import errno
import os
import stat
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from PIL import Image

from .coco import (
    NAMES_OUTSIDE_ROOT,
    OUTSIDE_POLYGONS,
    DatasetError,
    _annotation_problem,
    _check_categories,
    _check_image,
    _group_annotations,
    _read_json,
    index_of_ids,
    is_polygon,
    name_leaves_root,
    polygon_outside,
    shown,
    valid_polygons,
)
from .images import INTEGER_MODES, REFUSED_MODES, decode_reason, to_rgb8

FIRST_IDS = 5  # offending image ids shown per kind of problem


@dataclass
class CheckReport:
    json_file: str
    counts: Counter = field(default_factory=Counter)  # images, annotations, categories, ...
    problems: dict = field(default_factory=dict)  # kind -> [(image id, message)]
    notes: Counter = field(default_factory=Counter)  # well-formed but dropped by training
    warnings: dict = field(default_factory=dict)  # kind -> [(image id, message)]; not failures

    def add(self, kind: str, image_id, message: str) -> None:
        self.problems.setdefault(kind, []).append((image_id, message))

    def warn(self, kind: str, image_id, message: str) -> None:
        self.warnings.setdefault(kind, []).append((image_id, message))

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        out = [f"{self.json_file}: " + ", ".join(f"{v} {k}" for k, v in self.counts.items())]
        out += [f"  note: {v} {k} (dropped by training)" for k, v in self.notes.items()]
        for kind, items in self.warnings.items():
            out += _kind_lines(f"warning: {kind}", items)
        for kind, items in self.problems.items():
            out += _kind_lines(kind, items)
        warned = sum(map(len, self.warnings.values()))
        if not self.ok:
            out.append(f"FAILED: {sum(map(len, self.problems.values()))} problems")
        else:
            out.append(f"OK ({warned} warnings)" if warned else "OK")
        return out


def _kind_lines(kind: str, items: list) -> list[str]:
    ids = ", ".join(str(i) for i, _ in items[:FIRST_IDS])
    out = [f"  {kind}: {len(items)} (first image ids: {ids})"]
    return out + [f"    image id {i}: {msg}" for i, msg in items[:FIRST_IDS]]


def _file_problem(path: str) -> tuple[str, str] | None:
    """(kind, message) when ``path`` is not a regular file; None when it is."""
    try:
        st = os.stat(path)
    except ValueError:  # a NUL byte in the name
        return "missing image file", f"not found (the name holds a NUL byte): {shown(path)}"
    except OSError as e:
        if e.errno == errno.ENOENT and os.path.islink(path):
            return "missing image file", f"symlink to a missing file: {shown(path)}"
        if e.errno == errno.ENOENT:
            return "missing image file", f"not found: {shown(path)}"
        if e.errno == errno.ELOOP:
            return "not an image file", f"symlink loop: {shown(path)}"
        return "unreadable image", f"{shown(path)}: {e.strerror}"
    if stat.S_ISDIR(st.st_mode):
        return "not an image file", f"is a directory: {shown(path)}"
    if not stat.S_ISREG(st.st_mode):
        return "not an image file", f"not a regular file: {shown(path)}"
    return None


SIXTEEN_BIT = "16-bit images (read scaled by 1/257 to 8 bits)"


def _check_file(item: tuple) -> list[tuple]:
    """[(image id, kind, message, is a warning)]: empty when the file is fine."""
    iid, path, width, height, decode = item
    bad = _file_problem(path)
    if bad is not None:
        return [(iid, *bad, False)]
    try:
        with Image.open(path) as im:
            size, mode = im.size, im.mode
            if decode:
                im.load()
                to_rgb8(im)  # the mode's conversion, as training reads it
            else:
                im.verify()
    except DatasetError as e:
        return [(iid, "unsupported pixel mode", f"{shown(path)}: {e}", False)]
    except Exception as e:  # noqa: BLE001 - any decoder failure means unreadable
        return [(iid, "unreadable image", f"{shown(path)}: {decode_reason(e)}", False)]
    out = []
    if mode in REFUSED_MODES:
        out.append((iid, "unsupported pixel mode", f"{shown(path)}: mode {mode}", False))
    elif mode in INTEGER_MODES:
        out.append((iid, SIXTEEN_BIT, f"{shown(path)}: mode {mode}", True))
    if size != (width, height):
        msg = f"{shown(path)} is {size[0]}x{size[1]}, annotations say {width}x{height}"
        out.append((iid, "image size mismatch", msg, False))
    return out


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
        else:
            _warn_annotation(report, ann, images[iid])
    report.counts["annotations"] = len(seen)


def _warn_annotation(report: CheckReport, ann: dict, img: dict) -> None:
    """Notes and warnings on a valid annotation: what trains, or is dropped, without a word."""
    iid, segm, (_, _, w, h) = img["id"], ann.get("segmentation"), ann["bbox"]
    if w <= 0 or h <= 0:
        kind = "zero-width or zero-height boxes (dropped by training)"
        report.warn(kind, iid, f"annotation {ann['id']}: bbox {ann['bbox']}")
    if is_polygon(segm):
        good = valid_polygons(segm)
        report.notes["degenerate polygons"] += len(segm) - len(good)
        if polygon_outside(good, img["width"], img["height"]):
            where = f"{img['width']}x{img['height']} image {shown(img['file_name'])}"
            report.warn(OUTSIDE_POLYGONS, iid, f"annotation {ann['id']}: outside the {where}")


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
    for iid, im in images.items():
        if name_leaves_root(im["file_name"]):
            report.warn(NAMES_OUTSIDE_ROOT, iid, shown(im["file_name"]))
    _check_annotations(report, data, images, id_map)
    items = [
        (iid, os.path.join(image_root, im["file_name"]), im["width"], im["height"], decode)
        for iid, im in images.items()
    ]
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        for found in pool.map(_check_file, items, chunksize=max(1, len(items) // 64)):
            for iid, kind, message, warning in found:
                (report.warn if warning else report.add)(kind, iid, message)
    return report
