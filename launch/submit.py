"""``opmask-submit``: submit one training run to SLURM through submitit.

The training config and ``KEY VALUE`` overrides are exactly those of ``opmask-train``; everything
is validated before anything is submitted. The job checkpoints and requeues itself on preemption
and before its time limit, and resumes from the run folder's newest valid checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from opmask.cli.parser import OneLineParser
from opmask.config import ConfigError, load_config
from opmask.data.build import check_datasets
from opmask.data.coco import DatasetError
from opmask.data.splits import SplitError
from opmask.engine.checkpoint import CheckpointError
from opmask.engine.run_dir import RunFolderError, claim, run_folder
from opmask.modeling.weights import UnsafeWeightsError, check_weights_file
from opmask.utils.fs import atomic_write_bytes
from opmask.utils.safeload import WeightsFileError

from .executor import (
    LaunchError,
    Resources,
    add_resource_flags,
    check_partition,
    make_executor,
    resolve_resources,
    sbatch_script,
    submit_all,
)
from .job import TrainJob

ERRORS = (
    ConfigError,
    DatasetError,
    SplitError,
    UnsafeWeightsError,
    WeightsFileError,
    RunFolderError,
    CheckpointError,
    LaunchError,
)

EPILOG = """\
examples:
  opmask-submit --config-file configs/opmask_R50_FPN_130k.yaml --exp-id voc --profile mycluster \\
      --nodes 2 --gpus-per-node 8 --time 4320
  opmask-submit --config-file configs/shapes/opmask_R18_shapes.yaml --exp-id t --dry-run
  opmask-submit --config-file configs/shapes/opmask_R18_shapes.yaml --exp-id t --local
"""


def add_training_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dist-timeout",
        type=float,
        default=30.0,
        metavar="MIN",
        help="collective timeout in minutes",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the sbatch script and the resolved training config; submit nothing",
    )
    p.add_argument(
        "--local",
        action="store_true",
        help="run the same job here without SLURM (submitit's local executor) and wait",
    )


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="opmask-submit",
        description=__doc__.replace("``", ""),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config-file", required=True, help="training config (as for opmask-train)")
    p.add_argument("--exp-id", default="run_01", help="run folder name part (as for opmask-train)")
    p.add_argument("--output-dir", help="exact run folder (as for opmask-train)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="allow submitting into a folder that holds a run (continues it)",
    )
    add_training_flags(p)
    add_data_check_flag(p)
    add_resource_flags(p)
    p.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        metavar="KEY VALUE",
        help="config overrides, exactly as for opmask-train",
    )
    return p


def add_data_check_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-data-check",
        action="store_true",
        help="skip checking the datasets and MODEL.WEIGHTS here (when this host cannot see them)",
    )


def check_data(cfg, checked: set | None = None) -> None:
    """The datasets and MODEL.WEIGHTS the job will read, checked on this host as opmask-train
    checks them, before anything is written or submitted; ``checked`` skips repeats (sweeps)."""
    key = (tuple(cfg.DATASETS.TRAIN), tuple(cfg.DATASETS.TEST), cfg.MODEL.WEIGHTS)
    if checked is not None and key in checked:
        return
    if cfg.MODEL.WEIGHTS:
        check_weights_file(cfg.MODEL.WEIGHTS)
    check_datasets(cfg)
    if checked is not None:
        checked.add(key)


def check_world(cfg, res: Resources) -> None:
    world = res.nodes * res.tasks
    if cfg.SOLVER.IMS_PER_BATCH % world:
        raise LaunchError(
            f"SOLVER.IMS_PER_BATCH ({cfg.SOLVER.IMS_PER_BATCH}) is not a multiple "
            f"of the world size ({res.nodes} nodes x tasks = {world})"
        )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        res = resolve_resources(args)
        cfg = load_config(args.config_file, args.opts)
        run_dir = os.path.abspath(run_folder(cfg, args.exp_id, args.output_dir))
        check_world(cfg, res)
        if not args.no_data_check:
            check_data(cfg)
        if not args.local:
            check_partition(res.partition)
        folder = args.submitit_folder or os.path.join(run_dir, "slurm")
        name = f"opmask-{os.path.basename(run_dir)}"
        if args.dry_run:
            print(sbatch_script(os.path.join(folder, "%j"), res, name))
            print("# resolved training config:\n" + cfg.dump())
            return 0
        cfg, lock = claim(cfg, run_dir, resume=args.resume, eval_only=False)
    except ERRORS as e:
        print(f"opmask-submit: error: {e}", file=sys.stderr)
        return 1
    try:
        job = _submit(cfg, run_dir, folder, res, name, args)
    except LaunchError as e:
        lock.abandon()  # a new run folder is removed; a resumed one keeps its record
        print(f"opmask-submit: error: {e}", file=sys.stderr)
        return 1
    lock.release()  # the job takes it over
    print(f"submitted job {job.job_id}\nrun folder: {run_dir}")
    if args.local:
        print(json.dumps(job.result()))
        return 0
    print(
        f"follow it: tail -f {run_dir}/log.txt   |   squeue -j {job.job_id}   |   "
        f"sacct -j {job.job_id} --duplicates   |   tensorboard --logdir {run_dir}"
    )
    return 0


def _submit(cfg, run_dir: str, folder: str, res: Resources, name: str, args):
    """Record the submission in RUN/submission.json before and after sbatch; returns the job."""
    record = os.path.join(run_dir, "submission.json")
    entry = {"job_id": None, "submitted": False, "submitit_folder": folder}
    atomic_write_bytes(record, json.dumps(entry).encode())
    ex = make_executor(os.path.join(folder, "%j"), res, name, local=args.local)
    call = TrainJob(cfg.dump(), run_dir, cfg.MODEL.DEVICE, args.dist_timeout)
    try:
        (job,) = submit_all(ex, [call], array=False)
    except LaunchError as e:
        entry["error"] = str(e)
        atomic_write_bytes(record, json.dumps(entry).encode())
        raise
    entry.update(job_id=job.job_id, submitted=True)
    atomic_write_bytes(record, json.dumps(entry).encode())
    return job


if __name__ == "__main__":
    sys.exit(main())
