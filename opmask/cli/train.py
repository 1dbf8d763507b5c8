"""``opmask-train``: train or evaluate OPMask (Detectron2-style command line)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys

from fvcore.common.config import CfgNode

from ..config import ConfigError, check_device, load_config
from ..data.build import check_datasets
from ..data.coco import DatasetError
from ..data.splits import SplitError
from ..engine import exit_codes, preempt
from ..engine.checkpoint import CheckpointError
from ..engine.launch import launch
from ..engine.run_dir import (
    RunFolderError,
    RunLock,
    claim,
    run_folder,
    settle_config,
    setup_logging,
)
from ..engine.train_loop import CheckpointedExit, NonFiniteLossError, evaluate_only, train
from ..modeling.weights import UnsafeWeightsError, check_weights_file
from ..utils import comm
from .parser import OneLineParser

logger = logging.getLogger("opmask.train")

EPILOG = """\
examples:
  opmask-train --config-file configs/shapes/opmask_R18_shapes.yaml --exp-id try1
  opmask-train --config-file configs/opmask_R50_FPN_130k.yaml --exp-id voc \\
      EXP.PS nvoc SOLVER.IMS_PER_BATCH 8 SOLVER.BASE_LR 0.01
  opmask-train --config-file ... --exp-id voc --resume       # continue from the newest checkpoint
  opmask-train --config-file ... --exp-id voc --eval-only    # evaluate the run's newest checkpoint
  opmask-train --config-file ... --num-gpus 8                 # 8 local ranks (NCCL; gloo on CPU)
  torchrun --nproc-per-node 4 -m opmask.cli.train --config-file ...   # env:// initialisation

exit codes: 0 done; 1 bad input (config, dataset, weights, output folder); 2 bad command line;
3 non-finite loss; 75 stopped after a requested checkpoint (SIGUSR1 / preemption):
rerun with --resume.
"""

# Errors a user fixes by changing the input: one line, exit code 1, no traceback.
INPUT_ERRORS = (
    ConfigError,
    DatasetError,
    SplitError,
    RunFolderError,
    CheckpointError,
    UnsafeWeightsError,
    FileNotFoundError,
    PermissionError,
    ValueError,
)


def _count(minimum: int):
    """An argparse type: an integer >= minimum."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expects an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects minutes, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of minutes, got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="opmask-train",
        description=__doc__.replace("``", ""),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config-file",
        required=True,
        metavar="FILE",
        help="YAML config (may inherit others through _BASE_)",
    )
    p.add_argument(
        "--exp-id",
        default="run_01",
        help="names the run folder OUTPUT_DIR/OPMask/{dataset}_{exp-id} (default run_01)",
    )
    p.add_argument(
        "--output-dir", metavar="DIR", help="use exactly this run folder instead of the derived one"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in the folder from its newest valid checkpoint",
    )
    p.add_argument(
        "--eval-only",
        action="store_true",
        help="only evaluate the run's newest checkpoint (or MODEL.WEIGHTS)",
    )
    d = p.add_argument_group("distributed (SOLVER.IMS_PER_BATCH is the global batch)")
    d.add_argument(
        "--num-gpus",
        type=_count(1),
        default=1,
        metavar="N",
        help="processes per machine: one per GPU, or N CPU processes with gloo",
    )
    d.add_argument("--num-machines", type=_count(1), default=1, help="machines taking part")
    d.add_argument(
        "--machine-rank", type=_count(0), default=0, help="this machine's rank (0-based)"
    )
    d.add_argument(
        "--dist-url",
        default="auto",
        help="tcp://HOST:PORT of machine 0 (auto: a free local port, one machine)",
    )
    d.add_argument(
        "--dist-timeout",
        type=_minutes,
        default=30.0,
        metavar="MIN",
        help="collective timeout in minutes (default 30)",
    )
    p.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        metavar="KEY VALUE",
        help="config overrides, e.g. SOLVER.BASE_LR 0.01 EXP.PS nvoc",
    )
    return p


TCP_URL = re.compile(r"tcp://(\[[^]]+\]|[^:/]+):\d+")  # tcp://HOST:PORT, HOST may be [IPv6]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line (exit 2 with one line on a bad flag)."""
    p = parser()
    args = p.parse_args(argv)
    if args.machine_rank >= args.num_machines:
        p.error(f"argument --machine-rank: {args.machine_rank} is not below --num-machines")
    if args.num_machines > 1 and args.dist_url == "auto":
        p.error("argument --dist-url: machine 0's tcp://HOST:PORT is needed with --num-machines")
    if args.dist_url.startswith("tcp://") and not TCP_URL.fullmatch(args.dist_url):
        p.error(f"argument --dist-url: expected tcp://HOST:PORT, got {args.dist_url!r}")
    return args


def validate_inputs(cfg: CfgNode, args: argparse.Namespace) -> None:
    """Everything the run will read, checked before the run folder is claimed: the device,
    the batch split over the processes, MODEL.WEIGHTS and every dataset.

    Raises:
        ConfigError, DatasetError, SplitError, UnsafeWeightsError, WeightsFileError.
    """
    world = int(os.environ.get("WORLD_SIZE", args.num_gpus * args.num_machines))
    check_device(cfg.MODEL.DEVICE, args.num_gpus)
    if not args.eval_only and cfg.SOLVER.IMS_PER_BATCH % world:
        raise ConfigError(
            f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} is not a multiple of the "
            f"{world} processes (--num-gpus x --num-machines)"
        )
    if cfg.MODEL.WEIGHTS:
        check_weights_file(cfg.MODEL.WEIGHTS)
    check_datasets(cfg, eval_only=args.eval_only)


def setup(args: argparse.Namespace) -> tuple[CfgNode, str, RunLock | None]:
    """Load and validate every input, then claim the run folder (once, before any worker starts).

    Returns the final config, the run folder and its lock (None on machines other than 0,
    which neither lock nor write); the caller releases the lock.
    """
    cfg = load_config(args.config_file, args.opts)
    run_dir = run_folder(cfg, args.exp_id, args.output_dir)
    writer = args.machine_rank == 0 and comm.is_main_process()
    if writer:
        RunLock(run_dir).ensure_free()  # a busy folder is named at once, before validation
    validate_inputs(cfg, args)
    if not writer:  # e.g. srun's other tasks
        cfg = settle_config(cfg, run_dir, resume=args.resume, eval_only=args.eval_only)
        return cfg, run_dir, None
    cfg, lock = claim(cfg, run_dir, resume=args.resume, eval_only=args.eval_only)
    return cfg, run_dir, lock


def _finish(lock: RunLock | None, code: int) -> int:
    """Release the run folder; a start that failed on bad input leaves nothing behind."""
    if lock is not None and code == exit_codes.ERROR:
        lock.abandon()
    elif lock is not None:
        lock.release()
    return code


def execute(cfg: CfgNode, run_dir: str, *, resume: bool, eval_only: bool) -> dict:
    """Train or evaluate in this process (one rank)."""
    setup_logging(run_dir)
    logger.info("Run folder: %s (rank %d of %d)", run_dir, comm.get_rank(), comm.get_world_size())
    if eval_only:
        return evaluate_only(cfg, run_dir)
    preempt.install_signal_handlers()
    return train(cfg, run_dir, resume=resume)


def run(args: argparse.Namespace) -> dict:
    """Set up and execute in this one process (the demo uses this)."""
    cfg, run_dir, lock = setup(args)
    try:
        results = execute(cfg, run_dir, resume=args.resume, eval_only=args.eval_only)
    except INPUT_ERRORS:
        _finish(lock, exit_codes.ERROR)
        raise
    except BaseException:
        _finish(lock, exit_codes.NON_FINITE)  # a bug or NaN: keep the folder as it is
        raise
    _finish(lock, exit_codes.OK)
    return results


def _fail(message: str) -> None:
    if comm.is_main_process():
        print(f"opmask-train: error: {message}", file=sys.stderr)


def worker(cfg_yaml: str, run_dir: str, resume: bool, eval_only: bool) -> int:
    """One rank: execute, and map the outcome to an exit code (``exit_codes``)."""
    cfg = CfgNode.load_cfg(cfg_yaml)
    cfg.freeze()
    try:
        results = execute(cfg, run_dir, resume=resume, eval_only=eval_only)
    except NonFiniteLossError as e:
        logger.error("%s", e)
        _fail(str(e))
        return exit_codes.NON_FINITE
    except CheckpointedExit as e:
        logger.info("%s; exiting with code %d to be resumed", e, exit_codes.CHECKPOINTED)
        return exit_codes.CHECKPOINTED
    except INPUT_ERRORS as e:
        _fail(str(e))
        return exit_codes.ERROR
    if comm.is_main_process():
        print(
            json.dumps(
                {k: v.get("AP") for k, v in results.items() if isinstance(v, dict) and "AP" in v}
            )
        )
    return exit_codes.OK


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg, run_dir, lock = setup(args)
    except INPUT_ERRORS as e:
        print(f"opmask-train: error: {e}", file=sys.stderr)
        return exit_codes.ERROR
    try:
        code = launch(
            worker,
            (cfg.dump(), run_dir, args.resume, args.eval_only),
            num_procs=args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            device=cfg.MODEL.DEVICE,
            timeout_min=args.dist_timeout,
        )
    except INPUT_ERRORS as e:
        print(f"opmask-train: error: {e}", file=sys.stderr)
        code = exit_codes.ERROR
    except BaseException:
        _finish(lock, exit_codes.NON_FINITE)  # a bug: keep the folder as it is
        raise
    return _finish(lock, code)


if __name__ == "__main__":
    sys.exit(main())
