"""Dataset names to files, and the datasets a config names, loaded and checked (no torch here:
``opmask-train``/``opmask-submit`` check every dataset before anything is written or imported).

A name in ``DATASETS.TRAIN`` / ``DATASETS.TEST`` is one of:

- a builtin name (``coco_2017_train``, ``coco_2017_val``, ``shapes_train``, ``shapes_val``),
  resolved under ``$OPMASK_DATASETS`` (default ``./datasets``);
- ``ANNOTATIONS.json:IMAGE_DIR`` — any COCO-format dataset, no Python needed.
"""

from __future__ import annotations

import os

import numpy as np

from .coco import DatasetError, DatasetInfo, load_coco_json
from .index import IndexSubset, concat, open_index
from .splits import strong_category_ids

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


def load_datasets(names, *, index: bool = True, cache_dir: str = "") -> tuple[list, DatasetInfo]:
    """Concatenate datasets that share one category set.

    ``index`` (default): a list-like view of memory-mapped ``DatasetIndex`` files (cached under
    ``cache_dir``, DATASETS.CACHE_DIR); ``index=False``: the JSON path, a list of dicts. Both
    give the same dict for image ``i``.
    """
    if not names:
        raise DatasetError("no dataset given (DATASETS.TRAIN / DATASETS.TEST is empty)")
    parts, info = [], None
    for name in names:
        dicts, this = load_dataset(name, index=index, cache_dir=cache_dir)
        if info is not None and this.category_ids != info.category_ids:
            raise DatasetError(f"dataset {name!r} has other categories than {info.name!r}")
        info = info or this
        parts.append(dicts)
    if not index:
        return [d for p in parts for d in p], info
    return concat(parts), info


def strong_ids_from_cfg(cfg, info: DatasetInfo) -> list[int]:
    return strong_category_ids(
        cfg.EXP.PS,
        info.category_ids,
        info.dataset_strong_ids,
        cfg.EXP.STRONG_CATEGORY_IDS,
        info.name,
    )


def check_num_classes(cfg, info: DatasetInfo) -> None:
    if cfg.MODEL.ROI_HEADS.NUM_CLASSES != len(info.category_ids):
        raise DatasetError(
            f"MODEL.ROI_HEADS.NUM_CLASSES is {cfg.MODEL.ROI_HEADS.NUM_CLASSES} but dataset "
            f"{info.name!r} has {len(info.category_ids)} categories"
        )


def check_datasets(cfg, *, eval_only: bool = False) -> None:
    """Load and check every dataset the run will read, as training (or ``eval_only``
    evaluation) will, so a bad file or split fails before anything is written.

    Raises:
        DatasetError: a malformed file, an empty DATASETS.TRAIN, NUM_CLASSES not matching, or
            a test set with other categories than the training set.
        SplitError: EXP.PS / EXP.STRONG_CATEGORY_IDS do not fit a dataset.
    """
    names = cfg.DATASETS.TRAIN if not eval_only else (cfg.DATASETS.TEST or cfg.DATASETS.TRAIN)[:1]
    dicts, info = load_datasets(names, cache_dir=cfg.DATASETS.CACHE_DIR)
    check_num_classes(cfg, info)
    if not eval_only and cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS and not len(with_instances(dicts)):
        raise DatasetError(_nothing_to_train(names, cfg.DATASETS.CACHE_DIR))
    strong_ids_from_cfg(cfg, info)
    for name in cfg.DATASETS.TEST:
        _, test = load_datasets([name], cache_dir=cfg.DATASETS.CACHE_DIR)
        if test.category_ids != info.category_ids:
            raise DatasetError(f"test dataset {name!r} has other categories than {info.name!r}")
        if test.not_evaluable:
            raise DatasetError(f"test dataset {name!r}: {test.not_evaluable}")
        strong_ids_from_cfg(cfg, test)


def _nothing_to_train(names, cache_dir: str) -> str:
    """Why no training image keeps an instance (DATALOADER.FILTER_EMPTY_ANNOTATIONS would drop
    them all), per dataset."""
    reasons = []
    for name in names:
        dicts, info = load_datasets([name], cache_dir=cache_dir)
        crowd = sum(a["iscrowd"] for d in dicts for a in d["annotations"])
        polygons, boxes = (
            info.dropped[k] for k in ("annotation without valid polygon", "degenerate box")
        )
        why = [f"no polygon has 3 points ({polygons} annotations dropped)"] if polygons else []
        why += [f"{boxes} boxes have no area (dropped)"] if boxes else []
        if crowd:
            why.append(
                f"the other {crowd} are crowd" if why else f"all {crowd} annotations are crowd"
            )
        reasons.append(f"dataset {name!r}: {', '.join(why) or 'no annotations'}")
    return (
        f"{'; '.join(reasons)}: no training image has an instance "
        "(DATALOADER.FILTER_EMPTY_ANNOTATIONS drops images without one)"
    )


def with_instances(dicts):
    """The images with a non-crowd annotation, in order (vectorised on an index)."""
    if isinstance(dicts, list):
        return [d for d in dicts if any(not a.get("iscrowd", 0) for a in d["annotations"])]
    return IndexSubset(dicts, np.flatnonzero(dicts.has_instances()))
