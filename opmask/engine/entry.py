"""The one entry point of a run: config -> run folder -> train or evaluate -> exit code.

Used by ``opmask-train`` (:func:`prepare` once, then :func:`rank_main` on every rank through
``opmask.engine.launch``), the SLURM job (:func:`rank_main`), ``opmask-demo`` and the tests
(:func:`train_in_process`). Exit codes are those of :mod:`opmask.engine.exit_codes`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Sequence

from fvcore.common.config import CfgNode

from ..config import ConfigError, check_device, load_config
from ..data.build import check_datasets
from ..modeling.weights import check_weights_file
from ..utils import comm
from . import exit_codes, preempt
from .run_dir import RunLock, claim, run_folder, settle_config, setup_logging
from .train_loop import CheckpointedExit, NonFiniteLossError, evaluate_only, train

logger = logging.getLogger("opmask.train")

PROG = "opmask-train"  # the name in a rank's one-line error messages


def load(
    config_file: str, opts: Sequence[str] = (), *, exp_id: str, output_dir: str | None = None
) -> tuple[CfgNode, str]:
    """The checked, frozen config and its run folder (``output_dir`` if given, else
    ``OUTPUT_DIR/EXP.FOLDER_NAME/{dataset}_{exp_id}``).

    Raises:
        ConfigError: missing/invalid file, unknown key or bad value.
    """
    cfg = load_config(config_file, list(opts))
    return cfg, run_folder(cfg, exp_id, output_dir)


def validate_inputs(
    cfg: CfgNode, *, eval_only: bool, world_size: int, local_procs: int = 1
) -> None:
    """Everything the run will read, checked before the run folder is claimed: the device
    (``local_procs`` processes on this machine), the batch split over ``world_size`` processes,
    MODEL.WEIGHTS and every dataset.

    Raises:
        ConfigError, DatasetError, SplitError, UnsafeWeightsError, WeightsFileError.
    """
    check_device(cfg.MODEL.DEVICE, local_procs)
    if not eval_only and cfg.SOLVER.IMS_PER_BATCH % world_size:
        raise ConfigError(
            f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} is not a multiple of the "
            f"{world_size} processes (--num-gpus x --num-machines)"
        )
    if cfg.MODEL.WEIGHTS:
        check_weights_file(cfg.MODEL.WEIGHTS)
    check_datasets(cfg, eval_only=eval_only)


def prepare(
    cfg: CfgNode,
    run_dir: str,
    *,
    resume: bool,
    eval_only: bool,
    world_size: int,
    machine_rank: int = 0,
    local_procs: int = 1,
) -> tuple[CfgNode, RunLock | None]:
    """Validate every input, then claim the run folder (once, before any rank starts).

    Args:
        cfg: the loaded config (:func:`load`).
        world_size: processes of the whole run; local_procs: those on this machine.

    Returns:
        The final config (seed fixed, resume checked) and the folder's lock: None on machines
        other than 0 and on ranks other than 0, which neither lock nor write. The caller lets
        it go with :func:`finish`.

    Raises:
        OPMaskInputError (ConfigError, DatasetError, RunFolderError, CheckpointError ...).
    """
    writer = machine_rank == 0 and comm.is_main_process()
    if writer:
        RunLock(run_dir).ensure_free()  # a busy folder is named at once, before validation
    validate_inputs(cfg, eval_only=eval_only, world_size=world_size, local_procs=local_procs)
    if not writer:  # e.g. srun's other tasks
        return settle_config(cfg, run_dir, resume=resume, eval_only=eval_only), None
    return claim(cfg, run_dir, resume=resume, eval_only=eval_only)


def finish(lock: RunLock | None, code: int) -> int:
    """Release the run folder and return ``code``; a start that failed on bad input
    (``exit_codes.ERROR``) leaves nothing behind."""
    if lock is not None and code == exit_codes.ERROR:
        lock.abandon()
    elif lock is not None:
        lock.release()
    return code


def execute(cfg: CfgNode, run_dir: str, *, resume: bool, eval_only: bool) -> dict:
    """Train or evaluate in this process (one rank); returns the evaluation results."""
    setup_logging(run_dir)
    logger.info("Run folder: %s (rank %d of %d)", run_dir, comm.get_rank(), comm.get_world_size())
    if eval_only:
        return evaluate_only(cfg, run_dir)
    preempt.install_signal_handlers()
    return train(cfg, run_dir, resume=resume)


def train_in_process(
    cfg: CfgNode, run_dir: str, *, resume: bool = False, eval_only: bool = False
) -> dict:
    """Prepare, then train or evaluate in this one process; returns the evaluation results
    (task -> metrics). Exceptions propagate (the caller maps them with
    ``exit_codes.run_command``); the run folder is let go either way."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    cfg, lock = prepare(cfg, run_dir, resume=resume, eval_only=eval_only, world_size=world)
    try:
        results = execute(cfg, run_dir, resume=resume, eval_only=eval_only)
    except BaseException as e:
        finish(lock, exit_codes.code_for(e))  # bad input: clean up; a bug or NaN: keep it
        raise
    finish(lock, exit_codes.OK)
    return results


def _rank(cfg_yaml: str, run_dir: str, resume: bool, eval_only: bool) -> int:
    cfg = CfgNode.load_cfg(cfg_yaml)
    cfg.freeze()
    try:
        results = execute(cfg, run_dir, resume=resume, eval_only=eval_only)
    except NonFiniteLossError as e:
        logger.error("%s", e)
        if comm.is_main_process():
            print(f"{PROG}: error: {e}", file=sys.stderr)
        return exit_codes.NON_FINITE
    except CheckpointedExit as e:
        logger.info("%s; exiting with code %d to be resumed", e, exit_codes.CHECKPOINTED)
        return exit_codes.CHECKPOINTED
    if comm.is_main_process():
        aps = {k: v.get("AP") for k, v in results.items() if isinstance(v, dict) and "AP" in v}
        print(json.dumps(aps))
    return exit_codes.OK


def rank_main(cfg_yaml: str, run_dir: str, resume: bool, eval_only: bool) -> int:
    """One rank of a prepared run (``cfg_yaml``: the final config's dump): train or evaluate,
    and return its exit code; bad input is one line (main rank), any other exception a
    traceback and ``exit_codes.BUG``."""
    return exit_codes.run_command(
        PROG,
        _rank,
        cfg_yaml,
        run_dir,
        resume,
        eval_only,
        report_input=comm.is_main_process(),
    )
