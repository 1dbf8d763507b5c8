"""Submitting training runs, shared by ``opmask-submit`` (one point) and ``opmask-sweep``
(N points): check every input, claim the run folders, submit them as one job (or one job array)
and record the outcome.

A *point* is a dict with at least ``cfg`` (a loaded config; after claiming, its YAML with the
seed drawn) and ``run_dir``; sweeps keep more keys in it (their manifest's points).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from fvcore.common.config import CfgNode

from opmask.run.claim import RunFolderError, RunLock, claim
from opmask.run.entry import validate_inputs
from opmask.run.folder import RunFolder

from .executor import LaunchError, Resources, check_partition, make_executor, submit_all
from .job import TrainJob


@dataclass
class Request:
    """How points are submitted.

    Attributes:
        res: the SLURM request of each point's job.
        folder: submitit's folder for scripts and logs (holding ``%j``).
        name: the SLURM job name.
        local: submitit's local executor instead of SLURM (one point only).
        dist_timeout_min: collective timeout of the training processes, minutes.
        eval_only: the job evaluates the run folder's newest checkpoint instead of training
            (``opmask-train --eval-only``); the folder must hold one (:func:`check_evaluable`).
    """

    res: Resources
    folder: str
    name: str
    local: bool = False
    dist_timeout_min: float = 30.0
    eval_only: bool = False


class Record:
    """Where a submission is recorded; the default records nothing. ``opmask-submit`` writes
    RUN/submission.json, ``opmask-sweep`` the sweep manifest."""

    keep_on_refusal = False  # keep the claimed run folders when sbatch refuses (else abandon)

    def claimed(self, points: list[dict]) -> None:
        """The run folders are claimed; nothing is submitted yet."""

    def refused(self, error: LaunchError) -> LaunchError:
        """sbatch refused the request; returns the error to report."""
        return error

    def submitted(self, points: list[dict], jobs: list) -> None:
        """sbatch accepted ``jobs`` (one per point, in order)."""


def add_data_check_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-data-check",
        action="store_true",
        help="skip checking the datasets and MODEL.WEIGHTS here (when this host cannot see them)",
    )


def validate(cfg: CfgNode, res: Resources, *, eval_only: bool, data: bool, checked: set) -> None:
    """opmask-train's validation of a job's inputs, on this host: the batch split over the job's
    processes (not for ``eval_only``) and, when ``data``, the datasets and MODEL.WEIGHTS (each
    once per ``checked``); the device is the compute node's, not checked here."""
    validate_inputs(
        cfg,
        eval_only=eval_only,
        world_size=res.nodes * res.tasks,
        local_procs=None,
        processes=f"processes ({res.nodes} nodes x {res.tasks} tasks per node)",
        data=data,
        checked=checked,
    )


def check_evaluable(
    run_dir: str, *, what: str = "", hint: str = "check --exp-id / --output"
) -> None:
    """Refuse an evaluation job for a run folder that does not exist or holds no checkpoint
    file (the job itself verifies the newest one, as ``opmask-train --eval-only`` does).
    ``what`` names the folder's owner in the message (``"point 3: "``); ``hint`` says where a
    missing folder's path came from."""
    if not os.path.isdir(run_dir):
        raise RunFolderError(f"--eval-only: {what}no run folder {run_dir} to evaluate ({hint})")
    folder = RunFolder(run_dir)
    if not folder.CHECKPOINTS.candidates(folder.models):
        raise RunFolderError(f"--eval-only: {what}no checkpoint in {run_dir}/models to evaluate")


def check_points(points: list[dict], request: Request, *, data_check: bool) -> None:
    """Every point's world size (training only), evaluable run folder (``request.eval_only``)
    and (when ``data_check``) data, each data set once; then the cluster and partition unless
    ``request.local``. Writes nothing."""
    checked: set = set()
    for p in points:
        if request.eval_only:
            check_evaluable(p["run_dir"])
        validate(
            p["cfg"], request.res, eval_only=request.eval_only, data=data_check, checked=checked
        )
    if not request.local:
        check_partition(request.res.partition)


def claim_points(points: list[dict], *, resume: bool, eval_only: bool = False) -> list[RunLock]:
    """Claim each point's run folder (writes its config.yaml, drawing its seed, unless
    ``eval_only``; ``p["cfg"]`` becomes the config's YAML); on failure undo the earlier ones.
    Returns the held locks."""
    locks = []
    try:
        for p in points:
            cfg, lock = claim(p["cfg"], p["run_dir"], resume=resume, eval_only=eval_only)
            locks.append(lock)
            p["cfg"] = cfg.dump()
    except BaseException:
        for lock in locks:
            lock.abandon()
        raise
    return locks


def sbatch_points(points: list[dict], request: Request, record: Record) -> list:
    """Submit claimed ``points`` as one job array (a single point as a plain job); the record
    gets the job ids, or the refusal. Returns the jobs, one per point.

    Raises:
        LaunchError: sbatch refused (``record.refused``'s error).
    """
    ex = make_executor(request.folder, request.res, request.name, local=request.local)
    if not request.local:
        ex.update_parameters(slurm_array_parallelism=request.res.array_parallelism)
    calls = [
        TrainJob(
            p["cfg"],
            p["run_dir"],
            CfgNode.load_cfg(p["cfg"]).MODEL.DEVICE,
            request.dist_timeout_min,
            eval_only=request.eval_only,
        )
        for p in points
    ]
    try:
        jobs = submit_all(ex, calls, array=len(points) > 1)
    except LaunchError as e:
        raise record.refused(e) from None
    record.submitted(points, jobs)
    return jobs


def submit_points(
    points: list[dict], request: Request, record: Record, *, data_check: bool, resume: bool
) -> list:
    """Check every input, claim the run folders, submit, record: the one submission path.

    Args:
        points: dicts with ``cfg`` (a loaded config) and ``run_dir``; ``cfg`` becomes the
            claimed config's YAML.
        request: where and how to submit.
        record: gets the claimed points, then the job ids or sbatch's refusal.
        data_check: check the datasets and MODEL.WEIGHTS on this host first.
        resume: allow run folders that hold a run (continue them).

    Returns:
        The submitted jobs, one per point.

    Raises:
        OPMaskInputError: bad input, nothing submitted. After a refusal by sbatch
            (``LaunchError``) the claimed folders are abandoned, or kept when
            ``record.keep_on_refusal``.
    """
    check_points(points, request, data_check=data_check)
    locks = claim_points(points, resume=resume, eval_only=request.eval_only)
    try:
        record.claimed(points)
        jobs = sbatch_points(points, request, record)
    except LaunchError:
        for lock in locks:
            lock.release() if record.keep_on_refusal else lock.abandon()
        raise
    for lock in locks:
        lock.release()  # the jobs take them over
    return jobs
