"""SLURM's view of submitted jobs, from ``sacct``: every attempt's state per job id."""

from __future__ import annotations

import subprocess

# States of a job that is queued or running (resubmitting it would run it twice).
ACTIVE = {
    "PENDING",
    "RUNNING",
    "REQUEUED",
    "CONFIGURING",
    "COMPLETING",
    "SUSPENDED",
    "RESIZING",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
}


def sacct_states(job_ids: list[str]) -> dict[str, list[str]]:
    """Every attempt's state per job id (requeues show as extra rows), oldest first.

    Args:
        job_ids: SLURM job ids (``123`` or array tasks ``123_4``); empty ones are skipped.

    Returns:
        ``{job id as sacct prints it: [state of each attempt, oldest first]}``.
    """
    ids = [j for j in job_ids if j]
    if not ids:
        return {}
    out = subprocess.run(
        [
            "sacct",
            "-n",
            "-P",
            "-X",
            "--duplicates",
            "-o",
            "JobID,State",
            "-j",
            ",".join(sorted({j.split("_")[0] for j in ids})),
        ],
        capture_output=True,
        text=True,
    )
    states: dict[str, list[str]] = {}
    for line in out.stdout.splitlines():
        job, _, state = line.partition("|")
        states.setdefault(job, []).append(state.split()[0] if state else "UNKNOWN")
    return states


def last_job(point: dict) -> str:
    """The point's newest job id ('' when sbatch never accepted it)."""
    return point["job_ids"][-1] if point.get("job_ids") else ""


def current_state(states: dict[str, list[str]], point: dict) -> str:
    """SLURM state of the point's newest job's latest attempt (NOT_SUBMITTED: none yet).

    Args:
        states: :func:`sacct_states` of the points' newest jobs.
        point: a sweep manifest point (``job_ids``: its jobs, oldest first).
    """
    if not last_job(point):
        return "NOT_SUBMITTED"
    history = states.get(last_job(point), [])
    return history[-1] if history else "UNKNOWN"


def cancel(job_ids: list[str]) -> None:
    """``scancel`` the given jobs (nothing when the list is empty)."""
    if job_ids:
        subprocess.run(["scancel", *job_ids], check=False)
