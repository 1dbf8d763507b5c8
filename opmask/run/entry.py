"""The one entry point of a run: config -> run folder -> train or evaluate -> exit code.

Used by ``opmask-train`` (:func:`prepare` once, then :func:`rank_main` on every rank through
``opmask.run.spawn``), the SLURM job (:func:`rank_main`), ``opmask-demo`` and the tests
(:func:`train_in_process`). Exit codes are those of :mod:`opmask.utils.exit_codes`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from typing import Sequence

from fvcore.common.config import CfgNode

from ..config import check_device, load_config
from ..config.checks import check_world
from ..data.catalog import check_datasets
from ..train import preempt
from ..utils import comm, exit_codes
from ..utils.logs import setup_logging
from .claim import RunLock, claim, run_folder, settle_config
from .folder import RunFolder

# The model, the loop and torch are imported where a rank starts (execute, _rank), not here:
# everything before that (the checks, the run folder's claim) refuses bad input in well under a
# second, and the launcher's commands never import them.

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
    cfg: CfgNode,
    *,
    eval_only: bool,
    world_size: int,
    local_procs: int | None = 1,
    processes: str = "processes (--num-gpus x --num-machines)",
    data: bool = True,
    checked: set | None = None,
) -> None:
    """Everything a run will read, checked before anything is written — the one validation of
    ``opmask-train``, ``opmask-submit`` and ``opmask-sweep``: the device (``local_procs``
    processes on this machine; None where the job runs elsewhere, e.g. a login node), the batch
    split over ``world_size`` processes (``processes`` says how they were asked for; not for
    ``eval_only``), and unless ``data`` is False (the host cannot see them) MODEL.WEIGHTS and
    every dataset. ``checked``: the weights and datasets already checked (a sweep's points
    share them), updated.

    Raises:
        ConfigError, DatasetError, SplitError, UnsafeWeightsError, WeightsFileError.
    """
    if local_procs is not None:
        check_device(cfg.MODEL.DEVICE, local_procs)
    if not eval_only:
        check_world(cfg, world_size, processes)
    key = (tuple(cfg.DATASETS.TRAIN), tuple(cfg.DATASETS.TEST), cfg.MODEL.WEIGHTS, eval_only)
    if not data or (checked is not None and key in checked):
        return
    if cfg.MODEL.WEIGHTS:
        from ..modeling.weights import check_weights_file

        check_weights_file(cfg.MODEL.WEIGHTS)
    check_datasets(cfg, eval_only=eval_only)
    if checked is not None:
        checked.add(key)


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
        return settle_config(cfg, run_dir, resume=resume), None
    return claim(cfg, run_dir, resume=resume, eval_only=eval_only)


def finish(lock: RunLock | None, code: int) -> int:
    """Release the run folder and return ``code``; a start that failed on bad input
    (``exit_codes.ERROR``) before training began leaves nothing behind. Once training began
    (``metrics.json`` exists) the folder is kept, every rank's log with it."""
    if lock is not None and code == exit_codes.ERROR and not _training_began(lock.run_dir):
        lock.abandon()
    elif lock is not None:
        lock.release()
    return code


def _training_began(run_dir: str) -> bool:
    """Whether the loop's event writer was made (rank 0, just before the first iteration)."""
    return os.path.isfile(RunFolder(run_dir).metrics)


def execute(cfg: CfgNode, run_dir: str, *, resume: bool, eval_only: bool) -> dict:
    """Train or evaluate in this process (one rank); returns the evaluation results."""
    from ..train.loop import evaluate_only, train

    setup_logging(RunFolder(run_dir).log(comm.get_rank()))
    logger.info("Run folder: %s (rank %d of %d)", run_dir, comm.get_rank(), comm.get_world_size())
    if eval_only:
        return evaluate_only(cfg, RunFolder(run_dir))
    return train(cfg, RunFolder(run_dir), resume=resume)


def train_in_process(
    cfg: CfgNode, run_dir: str, *, resume: bool = False, eval_only: bool = False
) -> dict:
    """Prepare, then train or evaluate in this one process; returns the evaluation results
    (task -> metrics). Exceptions propagate (the caller maps them with
    ``exit_codes.run_command``); the run folder is let go either way."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    cfg, lock = prepare(cfg, run_dir, resume=resume, eval_only=eval_only, world_size=world)
    try:
        with preempt.handling((signal.SIGUSR1,)):  # SIGUSR1: checkpoint, CheckpointedExit
            results = execute(cfg, run_dir, resume=resume, eval_only=eval_only)
    except BaseException as e:
        finish(lock, exit_codes.code_for(e))  # bad input: clean up; a bug or NaN: keep it
        raise
    finish(lock, exit_codes.OK)
    return results


def _rank(cfg_yaml: str, run_dir: str, resume: bool, eval_only: bool) -> int:
    from ..train.loop import CheckpointedExit, EvaluationStopped, NonFiniteLossError

    cfg = CfgNode.load_cfg(cfg_yaml)
    cfg.freeze()
    try:
        results = execute(cfg, run_dir, resume=resume, eval_only=eval_only)
    except NonFiniteLossError as e:
        logger.error("%s", e)
        if comm.is_main_process():
            print(f"{PROG}: error: {e}", file=sys.stderr)
        return exit_codes.NON_FINITE
    except (CheckpointedExit, EvaluationStopped) as e:
        logger.info("%s; exiting with code %d to be resumed", e, e.code)
        if comm.is_main_process():
            print(f"{PROG}: {e.line}", file=sys.stderr, flush=True)
        return e.code
    except Exception as e:
        if _peer_lost(e):
            return _after_peer_lost(e)
        if exit_codes.is_input_error(e):  # in this rank's log too (its one line: stderr)
            logger.error("%s", e)
        raise
    if comm.is_main_process():
        aps = {k: v.get("AP") for k, v in results.items() if isinstance(v, dict) and "AP" in v}
        print(json.dumps(aps))
    return exit_codes.OK


# What gloo, NCCL and the TCP store say when another rank's process is gone.
PEER_GONE = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "NCCL communicator was aborted",
    "ProcessGroupNCCL is aborted",
)


def _peer_lost(e: BaseException) -> bool:
    """Whether ``e`` is a collective that failed because another rank's process ended."""
    if comm.get_world_size() < 2:
        return False
    return isinstance(e, RuntimeError) and any(s in str(e) for s in PEER_GONE)


def _after_peer_lost(e: Exception) -> int:
    """Another rank ended first: its exit code and line tell why; this rank logs what it saw and
    says nothing on stderr. After a stop signal of its own, the stop's code (the other rank
    stopped first)."""
    if preempt.requested():
        logger.info("stopped by %s; another rank ended first: %s", preempt.reason(), e)
        return preempt.code_for(preempt.signals())
    logger.error(
        "rank %d: stopped because another rank ended first (its log and message say why)",
        comm.get_rank(),
        exc_info=True,
    )
    return exit_codes.PEER_FAILED


def _aborted(e: preempt.Stopped, run_dir: str) -> int:
    """A second SIGINT (or a stop during the evaluation that escaped it): one line from the
    main rank, the signal's code."""
    newest = RunFolder(run_dir).checkpointer().last_name()
    if e.aborted:
        where = f"{RunFolder(run_dir).models}/{newest}" if newest else "the start"
        line = f"aborted by a second SIGINT; nothing more saved; --resume continues from {where}"
    else:
        line = f"{e}; continue with --resume"
    logger.info("%s", line)
    if comm.is_main_process():
        print(f"{PROG}: {line}", file=sys.stderr, flush=True)
    return e.code


def rank_main(cfg_yaml: str, run_dir: str, resume: bool, eval_only: bool) -> int:
    """One rank of a prepared run (``cfg_yaml``: the final config's dump): train or evaluate,
    and return its exit code; bad input is one line (on the rank that met it), any other
    exception a traceback and ``exit_codes.BUG``. SIGUSR1, SIGTERM and SIGINT stop it at the
    next step boundary with a checkpoint (:mod:`opmask.train.preempt`); a second SIGINT aborts.
    """
    try:
        with preempt.handling(), preempt.armed():
            return exit_codes.run_command(PROG, _rank, cfg_yaml, run_dir, resume, eval_only)
    except preempt.Stopped as e:
        return _aborted(e, run_dir)
    finally:
        preempt.clear()
