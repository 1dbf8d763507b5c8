"""The GT-box diagnostic of a run folder: its newest valid checkpoint on its first test set."""

from __future__ import annotations

import json
import os

from ..config import load_config
from ..data.build import load_datasets, strong_ids_from_cfg
from ..data.mapper import DatasetMapper
from ..evaluation.gt_boxes import gt_box_diagnostics
from ..modeling import build_model
from ..utils.fs import atomic_write_bytes
from .checkpoint import CheckpointError
from .run_folder import RunFolder


def diagnose_run(run_dir: str) -> tuple[dict[str, float], str]:
    """Diagnostics of the newest valid checkpoint of ``run_dir`` on its first test dataset,
    written to ``inference/{dataset}/gt_box_diagnostics.json``; returns (results, that path)."""
    run = RunFolder(run_dir)
    cfg = load_config(run.config)
    dicts, info = load_datasets(cfg.DATASETS.TEST[:1])
    found = run.latest_checkpoint()
    if found is None:
        raise CheckpointError(f"{run_dir}/models: no valid checkpoint")
    model = build_model(cfg)
    model.load_state_dict(found[1]["model"])
    mapper = DatasetMapper(
        is_train=True,
        min_sizes=[cfg.INPUT.MIN_SIZE_TEST],
        max_size=cfg.INPUT.MAX_SIZE_TEST,
        image_format=cfg.INPUT.FORMAT,
        mask_format="bitmask",
    )
    strong = set(info.labels(strong_ids_from_cfg(cfg, info)))
    res = gt_box_diagnostics(model, dicts, mapper, strong)
    out = run.gt_box_diagnostics(info.name)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    atomic_write_bytes(out, json.dumps({"checkpoint": found[0], **res}, indent=1).encode())
    return res, out
