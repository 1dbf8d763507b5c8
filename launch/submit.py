"""``opmask-submit``: submit one training run to SLURM through submitit.

The training config and ``KEY VALUE`` overrides are exactly those of ``opmask-train``; everything
is validated before anything is submitted. The job checkpoints and requeues itself on preemption
and before its time limit, and resumes from the run folder's newest valid checkpoint. The cluster
profile is ``--profile``, else ``$OPMASK_PROFILE``; there is no silent default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from opmask.cli.flags import add_overrides, add_run_flags, old_names
from opmask.cli.parser import OneLineParser
from opmask.config import load_config
from opmask.run.claim import run_folder
from opmask.run.folder import RunFolder
from opmask.utils.exit_codes import run_command
from opmask.utils.fs import atomic_write_bytes

from .executor import (
    LaunchError,
    NoCluster,
    add_resource_flags,
    not_checked_note,
    resolve_resources,
    sbatch_script,
)
from .submission import Record, Request, add_data_check_flag, check_points, submit_points

EPILOG = """\
examples:
  opmask-submit --config-file configs/opmask_R50_FPN_130k.yaml --exp-id voc \\
      --profile example-gpu-cluster --nodes 2 --num-gpus 8 --time 4320
  export OPMASK_PROFILE=example-gpu-cluster     # then --profile can be left out
  opmask-submit --config-file configs/opmask_R50_FPN_130k.yaml --exp-id voc --dry-run \\
      --no-data-check                           # the sbatch script and config; submits nothing
  opmask-submit --config-file configs/opmask_R50_FPN_130k.yaml --exp-id voc --eval-only
  opmask-submit --config-file configs/shapes/opmask_R18_shapes.yaml --exp-id t --local

Flags go before the KEY VALUE overrides. Profiles: copy slurm/profiles/example-gpu-cluster.yaml,
set your partition and account, and pass --profile PATH.yaml.
"""


def parser() -> argparse.ArgumentParser:
    """opmask-submit's flags: the run flags of opmask-train (``opmask.cli.flags``), the submission
    flags and the SLURM resources (``--num-gpus``: GPUs per node, as opmask-train's processes per
    machine)."""
    p = OneLineParser(
        prog="opmask-submit",
        description=__doc__.replace("``", ""),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_flags(p)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the sbatch script and the resolved training config; submit nothing "
        "(where no SLURM cluster answers, the partition is left unchecked and one line says so)",
    )
    p.add_argument(
        "--eval-only",
        action="store_true",
        help="a job that evaluates the run folder's newest checkpoint (opmask-train --eval-only); "
        "the folder must exist and hold one",
    )
    p.add_argument(
        "--local",
        action="store_true",
        help="run the same job here without SLURM (submitit's local executor) and wait",
    )
    add_data_check_flag(p)
    add_resource_flags(p)
    old_names(p, "--gpus-per-node")  # --num-gpus, as opmask-train
    add_overrides(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Bad input: one line, exit 1; any other exception: its traceback, exit_codes.BUG."""
    return run_command("opmask-submit", submit, parser().parse_args(argv))


def submit(args: argparse.Namespace) -> int:
    res = resolve_resources(args)
    cfg = load_config(args.config_file, args.opts)
    run_dir = os.path.abspath(run_folder(cfg, args.exp_id, args.output_dir))
    folder = args.submitit_folder or RunFolder(run_dir).slurm
    name = f"opmask-{'eval-' if args.eval_only else ''}{os.path.basename(run_dir)}"
    request = Request(
        res, os.path.join(folder, "%j"), name, args.local, args.dist_timeout, args.eval_only
    )
    point = {"cfg": cfg, "run_dir": run_dir}
    if args.dry_run:
        return dry_run(point, request, data_check=not args.no_data_check)
    # An evaluation job leaves the training's RUN/submission.json as it is.
    record = Record() if args.eval_only else SubmissionFile(run_dir, folder)
    (job,) = submit_points(
        [point], request, record, data_check=not args.no_data_check, resume=args.resume
    )
    print(f"submitted job {job.job_id}\nrun folder: {run_dir}")
    if args.local:
        print(json.dumps(job.result()))
        return 0
    print(
        f"follow it: tail -f {run_dir}/log.txt   |   squeue -j {job.job_id}   |   "
        f"sacct -j {job.job_id} --duplicates   |   tensorboard --logdir {run_dir}"
    )
    return 0


def dry_run(point: dict, request: Request, *, data_check: bool) -> int:
    """Check what can be checked here, print the sbatch script and the resolved config; write
    and submit nothing. Where no SLURM cluster answers (no ``sinfo``, or it fails) the partition
    is left unchecked and one line on stderr says so; where one answers, an unknown partition is
    refused as when submitting."""
    try:
        check_points([point], request, data_check=data_check)  # the partition last
        note = None
    except NoCluster as e:
        note = not_checked_note(request.res, e.reason)
    print(sbatch_script(request.folder, request.res, request.name))
    kind = "evaluation" if request.eval_only else "training"
    print(f"# resolved {kind} config:\n" + point["cfg"].dump())
    if note is not None:
        print(note, file=sys.stderr)
    return 0


class SubmissionFile(Record):
    """RUN/submission.json: written before sbatch (``submitted: false``), then with the job id or
    sbatch's refusal (a new run folder is removed after a refusal; a resumed one keeps it)."""

    def __init__(self, run_dir: str, folder: str):
        self.path = RunFolder(run_dir).submission
        self.entry = {"job_id": None, "submitted": False, "submitit_folder": folder}

    def _write(self) -> None:
        atomic_write_bytes(self.path, json.dumps(self.entry).encode())

    def claimed(self, points: list[dict]) -> None:
        self._write()

    def refused(self, error: LaunchError) -> LaunchError:
        self.entry["error"] = str(error)
        self._write()
        return error

    def submitted(self, points: list[dict], jobs: list) -> None:
        self.entry.update(job_id=jobs[0].job_id, submitted=True)
        self._write()


if __name__ == "__main__":
    sys.exit(main())
