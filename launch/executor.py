"""Cluster profiles and command-line flags -> a configured submitit executor."""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import submitit
import yaml
from submitit.core.utils import FailedJobError

from opmask.utils.errors import OPMaskInputError
from opmask.utils.resources import profile_names, profile_path

# The environment variable naming the cluster profile used when --profile is not given.
PROFILE_ENV = "OPMASK_PROFILE"

# Every job: append to its logs across requeues, and let SLURM requeue it.
_SBATCH_EXTRA = {"open-mode": "append", "requeue": True}


class LaunchError(OPMaskInputError):
    """Bad launcher input (profile, sweep file, partition...): reported before submitting."""


@dataclass
class Resources:
    """One job's SLURM request. Profiles give site defaults; flags override them."""

    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int = 0  # 0: one task per GPU (or 1 without GPUs)
    cpus_per_task: int = 4
    mem_gb: float = 0  # 0: the partition's default
    partition: str = ""
    account: str = ""
    qos: str = ""
    constraint: str = ""
    time_min: int = 60
    signal_delay_s: int = 120  # USR2 this long before the time limit: checkpoint and requeue
    max_requeue_timeouts: int = 3  # requeues allowed after timeouts (preemptions are unlimited)
    array_parallelism: int = 8  # sweeps: points running at once

    @property
    def tasks(self) -> int:
        """Tasks (training processes) per node: ``tasks_per_node``, else one per GPU, else 1."""
        return self.tasks_per_node or max(1, self.gpus_per_node)


def add_resource_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("SLURM resources (defaults from --profile)")
    g.add_argument(
        "--profile",
        default=None,
        help="cluster profile: a shipped profile's name ("
        + ", ".join(profile_names())
        + f") or a YAML path (default: ${PROFILE_ENV})",
    )
    for f in fields(Resources):
        flag = "--time" if f.name == "time_min" else "--" + f.name.replace("_", "-")
        g.add_argument(
            flag,
            dest=f.name,
            type=type(f.default),
            default=None,
            help=_HELP.get(f.name, f.name.replace("_", " ")),
        )
    g.add_argument(
        "--submitit-folder",
        default=None,
        help="where submitit keeps scripts and logs (default RUN/slurm or SWEEP/slurm)",
    )


_HELP = {
    "time_min": "time limit in minutes",
    "mem_gb": "memory per node in GB",
    "signal_delay_s": "seconds before the time limit at which USR2 asks for a checkpoint",
    "max_requeue_timeouts": "requeue budget for timeouts",
}


def read_yaml(path: str):
    """A YAML file's content; invalid YAML is a LaunchError naming the file and line."""
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise LaunchError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None


def load_profile(name: str) -> dict:
    """A cluster profile's resource keys, checked.

    Args:
        name: a shipped profile's name (``local``) or a YAML path (``opmask.utils.resources``).

    Raises:
        LaunchError: no such profile, invalid YAML, unknown keys or values of the wrong type.
    """
    path = profile_path(name)
    if not os.path.isfile(path):
        known = ", ".join(profile_names())
        raise LaunchError(f"cluster profile not found: {path} (known: {known})")
    data = read_yaml(path)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise LaunchError(f"{path}: a profile is a mapping of resource keys, got {_kind(data)}")
    valid = {f.name for f in fields(Resources)}
    unknown = sorted(set(data) - valid)
    if unknown:
        raise LaunchError(f"{path}: unknown profile keys {unknown}; valid: {sorted(valid)}")
    for key, value in data.items():
        check_resource(key, value, f"{path}: {key}")
    return data


# Smallest allowed value of each numeric resource.
_MINIMUM = {"nodes": 1, "cpus_per_task": 1, "time_min": 1, "array_parallelism": 1}


def _kind(value) -> str:
    return f"{type(value).__name__} {value!r}"


def check_resource(key: str, value, where: str) -> None:
    """Raise LaunchError naming ``where`` unless ``value`` fits the ``Resources`` field ``key``."""
    default = Resources.__dataclass_fields__[key].default
    if isinstance(default, str):
        if not isinstance(value, str):
            raise LaunchError(f"{where} must be a string, got {_kind(value)}")
        return
    numeric = (int, float) if isinstance(default, float) else (int,)
    if isinstance(value, bool) or not isinstance(value, numeric):
        expected = "a number" if isinstance(default, float) else "an integer"
        raise LaunchError(f"{where} must be {expected}, got {_kind(value)}")
    if value < _MINIMUM.get(key, 0):
        raise LaunchError(f"{where} must be >= {_MINIMUM.get(key, 0)}, got {value}")


def chosen_profile(args: argparse.Namespace) -> str | None:
    """The profile to use: ``--profile``, else ``$OPMASK_PROFILE``; None (the ``Resources``
    defaults) only with ``--local``, which targets no cluster.

    Raises:
        LaunchError: neither names one and the job goes to a cluster (no silent default: the
            throw-away test cluster's ``local`` is used only when asked for).
    """
    name = getattr(args, "profile", None) or os.environ.get(PROFILE_ENV) or None
    if name is None and not getattr(args, "local", False):
        known = ", ".join(profile_names()) or "none shipped"
        raise LaunchError(
            f"no cluster profile chosen: pass --profile NAME or set {PROFILE_ENV} "
            f"(profiles: {known}; or a YAML path)"
        )
    return name


def resolve_resources(args: argparse.Namespace, base: Resources | None = None) -> Resources:
    """``base`` (else the profile's values, :func:`chosen_profile`), then the flags given on the
    command line."""
    if base is None:
        name = chosen_profile(args)
        base = Resources(**load_profile(name)) if name else Resources()
    res = base
    for f in fields(Resources):
        value = getattr(args, f.name, None)
        if value is not None:
            check_resource(f.name, value, "--time" if f.name == "time_min" else _flag(f.name))
            setattr(res, f.name, value)
    return res


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def slurm_here() -> bool:
    """True when this machine has SLURM's client commands (``sinfo``) on its PATH."""
    return shutil.which("sinfo") is not None


class NoCluster(LaunchError):
    """No SLURM cluster answers here: ``sinfo`` is missing or fails (``reason`` says which)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def not_checked_note(res: Resources, reason: str) -> str:
    """The one line a dry run prints when it cannot ask SLURM about ``res``'s partition here
    (what :func:`check_partition` checks where a cluster answers); ``reason``: a
    :class:`NoCluster`'s."""
    what = f"partition {res.partition!r}" if res.partition else "the cluster's default partition"
    return f"not checked here: {what} ({reason})"


def check_partition(partition: str) -> None:
    """Refuse a missing cluster (:class:`NoCluster`) or a partition SLURM does not know, before
    anything is written."""
    asked = f" for partition {partition!r}" if partition else ""
    if not slurm_here():
        raise NoCluster(
            f"no SLURM cluster here{asked} (sinfo not found); use --local",
            "no SLURM on this machine: sinfo not found",
        )
    out = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True)
    if out.returncode != 0:
        why = " ".join((out.stderr.strip().splitlines() or ["sinfo failed"])[-1].split())
        raise NoCluster(
            f"cannot reach the SLURM cluster{asked} ({why}); use --local",
            f"cannot reach a SLURM cluster from here: {why}",
        )
    known = sorted(set(out.stdout.split()))
    if partition and partition not in known:
        raise LaunchError(
            f"partition {partition!r} does not exist on this cluster "
            f"(known: {', '.join(known) or 'none'})"
        )


def submit_all(ex, calls: list, *, array: bool) -> list:
    """Submit ``calls`` with ``ex`` (as one job array when ``array``); returns the jobs.

    Raises:
        LaunchError: sbatch refused the request (its message, on one line).
    """
    quiet, sub_logger = io.StringIO(), logging.getLogger("submitit")
    level = sub_logger.level
    sub_logger.setLevel(logging.CRITICAL)  # submitit would print sbatch's error a second time
    try:
        with contextlib.redirect_stderr(quiet):
            with ex.batch() if array else contextlib.nullcontext():
                jobs = [ex.submit(c) for c in calls]
    except (FailedJobError, OSError, subprocess.SubprocessError) as e:
        text = " ".join(str(e).split()) or " ".join(quiet.getvalue().split())
        raise LaunchError(f"sbatch refused the request: {text or type(e).__name__}") from None
    finally:
        sub_logger.setLevel(level)
    return jobs


def executor_parameters(res: Resources, name: str) -> dict:
    params = {
        "name": name,
        "nodes": res.nodes,
        "tasks_per_node": res.tasks,
        "cpus_per_task": res.cpus_per_task,
        "timeout_min": res.time_min,
        "slurm_signal_delay_s": res.signal_delay_s,
        "slurm_additional_parameters": dict(_SBATCH_EXTRA),
    }
    if res.gpus_per_node:
        params["gpus_per_node"] = res.gpus_per_node
    if res.mem_gb:
        params["mem_gb"] = res.mem_gb
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(res, key):
            params[f"slurm_{key}"] = getattr(res, key)
    return params


def make_executor(folder: str, res: Resources, name: str, *, local: bool):
    """A submitit executor: SLURM, or ``local`` (submitit's local executor, no SLURM)."""
    if local:
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(
            timeout_min=res.time_min,
            nodes=1,
            tasks_per_node=res.tasks,
            gpus_per_node=res.gpus_per_node,
        )
        return ex
    ex = submitit.AutoExecutor(
        folder=folder, cluster="slurm", slurm_max_num_timeout=res.max_requeue_timeouts
    )
    ex.update_parameters(**executor_parameters(res, name))
    return ex


# AutoExecutor's generic parameter names -> the sbatch ones submitit's SlurmExecutor uses (its
# ``_equivalence_dict``; ``slurm_X`` is ``X``). tests/launch/test_submitit_pin.py pins the two.
_SBATCH_NAMES = {
    "name": "job_name",
    "timeout_min": "time",
    "mem_gb": "mem",
    "tasks_per_node": "ntasks_per_node",
}


def sbatch_mem(mem_gb: float) -> str:
    """``--mem`` as submitit's SlurmExecutor writes it: whole GB as ``NGB``, else ``NMB``."""
    return f"{int(mem_gb)}GB" if mem_gb == int(mem_gb) else f"{int(mem_gb * 1024)}MB"


def sbatch_script(folder: str, res: Resources, name: str, array_count: int | None = None) -> str:
    """The sbatch script submitit would write for this request (for ``--dry-run``): the same
    :func:`executor_parameters` the job is submitted with, the same command line.

    This is the one place that calls submitit's private ``submitit.slurm.slurm.
    _make_sbatch_string`` (checked against submitit 1.5.4, pinned by
    tests/launch/test_submitit_pin.py). submitit has no public way to get a script's text without
    submitting: its ``SlurmExecutor`` refuses to start where ``srun`` is missing (a dry run's
    usual machine), and ``_make_submission_file_text`` is private too.
    """
    from submitit.slurm.slurm import _make_sbatch_string

    kwargs = {}
    for key, value in executor_parameters(res, name).items():
        key = key.removeprefix("slurm_")
        kwargs[_SBATCH_NAMES.get(key, key)] = value
    if "mem" in kwargs:
        kwargs["mem"] = sbatch_mem(kwargs["mem"])
    folder = str(Path(folder).expanduser().absolute())  # as submitit's executor holds it
    command = f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(folder)}"
    return _make_sbatch_string(
        command=command,
        folder=folder,
        map_count=array_count,
        array_parallelism=res.array_parallelism,
        **kwargs,
    )
