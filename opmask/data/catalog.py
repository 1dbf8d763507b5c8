"""Dataset names to files.

A name in ``DATASETS.TRAIN`` / ``DATASETS.TEST`` is one of:

- a builtin name (``coco_2017_train``, ``coco_2017_val``, ``shapes_train``, ``shapes_val``),
  resolved under ``$OPMASK_DATASETS`` (default ``./datasets``);
- ``ANNOTATIONS.json:IMAGE_DIR`` — any COCO-format dataset, no Python needed.
"""

from __future__ import annotations

import os

from .coco import DatasetError, DatasetInfo, load_coco_json
from .index import open_index

BUILTIN = {
    "coco_2017_train": ("coco/annotations/instances_train2017.json", "coco/train2017"),
    "coco_2017_val": ("coco/annotations/instances_val2017.json", "coco/val2017"),
    "shapes_train": ("shapes/train/annotations.json", "shapes/train/images"),
    "shapes_val": ("shapes/val/annotations.json", "shapes/val/images"),
}


def datasets_root() -> str:
    return os.environ.get("OPMASK_DATASETS", "datasets")


def resolve(name: str) -> tuple[str, str, str]:
    """``(json_file, image_root, short_name)`` for a dataset name or spec."""
    if name in BUILTIN:
        json_rel, img_rel = BUILTIN[name]
        root = datasets_root()
        return os.path.join(root, json_rel), os.path.join(root, img_rel), name
    if ":" in name:
        json_file, image_root = name.rsplit(":", 1)
        if json_file.endswith(".json"):
            short = os.path.splitext(os.path.basename(json_file))[0]
            return json_file, image_root, short
    raise DatasetError(
        f"unknown dataset {name!r}: use one of {sorted(BUILTIN)} "
        "or ANNOTATIONS.json:IMAGE_DIR (see datasets/README.md)"
    )


def short_name(name: str) -> str:
    """The name used in run folders."""
    return resolve(name)[2]


def load_dataset(
    name: str, *, index: bool = False, cache_dir: str = ""
) -> tuple[list, DatasetInfo]:
    """The dataset's dicts and info. ``index``: a memory-mapped ``DatasetIndex`` (list-like,
    cached under ``cache_dir``; see ``opmask.data.index``) instead of a list of dicts."""
    json_file, image_root, short = resolve(name)
    if not os.path.isfile(json_file):
        hint = " (run `opmask-data shapes` to generate it)" if name.startswith("shapes_") else ""
        raise DatasetError(f"dataset {name!r}: annotation file not found: {json_file}{hint}")
    if index:
        st = os.stat(json_file)
        key = (
            os.path.realpath(json_file),
            image_root,
            short,
            cache_dir,
            st.st_mtime_ns,
            st.st_size,
        )
        if key not in _OPENED:  # once per process: the checks, the loop and the evaluator share it
            _OPENED[key] = open_index(json_file, image_root, short, cache_dir)
        return _OPENED[key]
    return load_coco_json(json_file, image_root, short)


# Indexes opened in this process, by annotation file (path, size, mtime) and options. An index is
# read-only (memory-mapped), so every reader of a dataset shares one.
_OPENED: dict[tuple, tuple] = {}
