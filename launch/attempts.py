"""A SLURM job's attempts of a run: one line per attempt appended to the run folder's attempts
record (``RunFolder.attempts``, read back by ``RunFolder.read_attempts``) with its outcome, and the
job-log line that says which attempt this is and how the previous one ended. The SLURM variables
(``SLURM_JOB_ID``, ``SLURM_RESTART_COUNT``) are read here only."""

from __future__ import annotations

import json
import os
import time

from opmask.run.folder import RunFolder


def _job() -> tuple[str, int]:
    """(``SLURM_JOB_ID``, else "local"; ``SLURM_RESTART_COUNT``, else 0)."""
    return os.environ.get("SLURM_JOB_ID", "local"), int(os.environ.get("SLURM_RESTART_COUNT", 0))


def record_attempt(run: RunFolder, **fields) -> None:
    """Append one line to the run's attempts record: ``fields`` plus ``time``, ``job_id`` and
    ``attempt`` (the restart count). The line goes in one ``write`` of an ``O_APPEND`` file, so
    concurrent writers never interleave."""
    job, restart = _job()
    fields.update(time=time.time(), job_id=job, attempt=restart)
    data = (json.dumps(fields) + "\n").encode()
    fd = os.open(run.attempts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def describe_attempt(run: RunFolder) -> str:
    """One job-log line: which attempt of this SLURM job this is and how its previous one
    ended."""
    job, restart = _job()
    mine = [a for a in run.read_attempts() if a.get("job_id") == job]
    line = f"[opmask] job {job}, attempt {restart + 1}, run folder {run.path}"
    if restart == 0:
        return line
    if len(mine) >= restart:
        prev = mine[restart - 1]
        return f"{line}; previous attempt: {prev['outcome']} at iteration {prev.get('iteration')}"
    return (
        f"{line}; previous attempt ended without a checkpoint request (node failure, "
        "hard kill or scontrol requeue): resuming from the newest valid checkpoint"
    )
