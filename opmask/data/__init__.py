"""Datasets (COCO format, synthetic shapes), splits, mapping and loaders."""

from .catalog import load_dataset, resolve, short_name
from .coco import DatasetError, DatasetInfo, load_coco_json

__all__ = ["DatasetError", "DatasetInfo", "load_coco_json", "load_dataset", "resolve", "short_name"]
