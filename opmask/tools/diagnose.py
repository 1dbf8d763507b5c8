"""The GT-box diagnostic of a run folder: its newest valid checkpoint on its first test set."""

from __future__ import annotations

import json
import os

from ..config import load_config
from ..data.build import build_gt_box_mapper
from ..data.catalog import load_datasets, strong_ids_from_cfg
from ..data.coco import DatasetError
from ..evaluation.gt_boxes import gt_box_diagnostics
from ..run.claim import RunFolderError
from ..run.folder import RunFolder
from ..utils.fs import atomic_write_bytes


def diagnose_run(run_dir: str) -> tuple[dict[str, float], str]:
    """Diagnostics of the newest valid checkpoint of ``run_dir`` on its first test dataset,
    written to ``inference/{dataset}/gt_box_diagnostics.json``; returns (results, that path).

    Raises:
        RunFolderError: not a run folder. DatasetError: the run has no test set (or a bad one).
        CheckpointError: no valid checkpoint, or one that does not match the run's config.yaml.
    """
    run = RunFolder(run_dir)
    if not run.is_run():
        raise RunFolderError(f"{run_dir}: no {run.CONFIG} (not a run folder of opmask-train)")
    cfg = load_config(run.config)
    if not cfg.DATASETS.TEST:
        raise DatasetError(
            f"{run.config}: DATASETS.TEST is empty (the diagnostic runs on the run's first "
            "test set)"
        )
    dicts, info = load_datasets(cfg.DATASETS.TEST[:1])
    model, path, _ = run.load_model(cfg)
    mapper = build_gt_box_mapper(cfg)
    strong = set(info.labels(strong_ids_from_cfg(cfg, info)))
    res = gt_box_diagnostics(model, dicts, mapper, strong)
    out = run.gt_box_diagnostics(info.name)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    atomic_write_bytes(out, json.dumps({"checkpoint": path, **res}, indent=1).encode())
    return res, out
