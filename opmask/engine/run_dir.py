"""The run folder: where it is, making it safely, config.yaml, log file, seed."""

from __future__ import annotations

import logging
import os
import sys
import tempfile

import numpy as np
import yaml
from fvcore.common.config import CfgNode

from ..config import config_diff
from ..data.catalog import short_name
from . import comm
from .checkpoint import atomic_write_bytes

# Keys that may change between a run and its resumption.
RESUME_SAFE_KEYS = {
    "SOLVER.MAX_ITER",
    "SOLVER.CHECKPOINT_PERIOD",
    "SOLVER.MAX_TO_KEEP",
    "TEST.EVAL_PERIOD",
    "EXP.PRINT_PERIOD",
    "VIS_PERIOD",
    "EXP.VIS_ROIS",
    "OUTPUT_DIR",
    "DATALOADER.NUM_WORKERS",
    "MODEL.DEVICE",
    "MODEL.WEIGHTS",
    "DATASETS.TEST",
    "SEED",
    "CUDNN_BENCHMARK",
    "SOLVER.TF32",
    "MODEL.CHANNELS_LAST",
    "MODEL.COMPILE",
}


class RunFolderError(RuntimeError):
    """The run folder cannot be used as asked (exists, unwritable, incompatible config)."""


def run_folder(cfg, exp_id: str, output_dir: str | None = None) -> str:
    """``OUTPUT_DIR/EXP.FOLDER_NAME/{dataset}_{exp_id}`` unless ``output_dir`` is given."""
    if output_dir:
        return output_dir
    names = cfg.DATASETS.TRAIN or cfg.DATASETS.TEST
    dataset = short_name(names[0]) if names else "nodata"
    return os.path.join(cfg.OUTPUT_DIR, cfg.EXP.FOLDER_NAME, f"{dataset}_{exp_id}")


def _check_writable(folder: str) -> None:
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise RunFolderError(f"output folder {folder} is not writable: {e.strerror or e}") from None


def saved_config(run_dir: str) -> CfgNode | None:
    path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return CfgNode(yaml.safe_load(f))


def incompatible_keys(old: CfgNode, new: CfgNode) -> list[str]:
    return [k for k in config_diff(new, old) if k not in RESUME_SAFE_KEYS]


def prepare(cfg: CfgNode, run_dir: str, *, resume: bool, eval_only: bool) -> CfgNode:
    """Check and create the folder, fix the seed, write config.yaml; returns the final cfg.

    Raises:
        RunFolderError: the folder holds an earlier run and neither ``resume`` nor ``eval_only``
            was asked; it is unwritable; or ``resume`` meets an incompatible config.
    """
    occupied = os.path.isdir(run_dir) and bool(os.listdir(run_dir))
    if occupied and not (resume or eval_only):
        raise RunFolderError(
            f"run folder {run_dir} already holds a run; pass --resume to continue it, or choose "
            "another --exp-id (nothing was changed)"
        )
    _check_writable(run_dir)
    old = saved_config(run_dir)
    cfg = cfg.clone()
    cfg.defrost()
    if cfg.SEED < 0:
        cfg.SEED = (
            int(old.SEED)
            if old is not None and old.SEED >= 0
            else int(np.random.SeedSequence().entropy % (2**31))
        )
    cfg.freeze()
    if resume and old is not None:
        bad = incompatible_keys(old, cfg)
        if bad:
            raise RunFolderError(
                f"cannot resume {run_dir}: config differs from the saved one in {', '.join(bad)}"
            )
    if comm.is_main_process() and not eval_only:
        atomic_write_bytes(os.path.join(run_dir, "config.yaml"), cfg.dump().encode())
    return cfg


def setup_logging(run_dir: str | None) -> None:
    """Console (main rank, INFO) and ``log.txt`` (each rank its own file, appended)."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        root.removeHandler(h)
    fmt = logging.Formatter("[%(asctime)s %(name)s %(levelname)s] %(message)s", "%m/%d %H:%M:%S")
    if comm.is_main_process():
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(fmt)
        root.addHandler(console)
    if run_dir:
        rank = comm.get_rank()
        name = "log.txt" if rank == 0 else f"log.txt.rank{rank}"
        fh = logging.FileHandler(os.path.join(run_dir, name))
        fh.setFormatter(fmt)
        root.addHandler(fh)
