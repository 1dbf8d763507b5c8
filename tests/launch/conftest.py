"""A real single-host SLURM cluster (2 nodes, accounting) started by slurm/local/start.sh."""

from __future__ import annotations

import fcntl
import os
import subprocess
import time

import pytest

from tests.conftest import REPO, shared_cluster_folder


@pytest.fixture(scope="session")
def slurm():
    """The test run's one cluster: the first test that needs it starts it (under a lock, so
    parallel pytest-xdist workers share it), the controller process stops it when the whole run
    ends (``pytest_sessionfinish`` in ``tests/conftest.py``)."""
    folder = shared_cluster_folder()
    with open(folder.parent / "slurm-cluster.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "up").exists():
            start = subprocess.run(
                ["bash", os.path.join(REPO, "slurm", "local", "start.sh"), str(folder), "2"],
                capture_output=True,
                text=True,
                timeout=180,
            )
            assert start.returncode == 0, start.stdout + start.stderr
            (folder / "up").write_text("")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(folder / "slurm.conf")
    old_profile = os.environ.get("OPMASK_PROFILE")
    os.environ["OPMASK_PROFILE"] = "local"  # the test cluster's profile: there is no default
    yield folder
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old
    if old_profile is None:
        os.environ.pop("OPMASK_PROFILE", None)
    else:
        os.environ["OPMASK_PROFILE"] = old_profile


def jobs_submitted_from(folder) -> list[str]:
    """Ids of every job (running or ended) whose working folder is under ``folder``: what one
    test submitted, whatever other tests run on the shared cluster at the same time. squeue
    answers from the controller at once; sacct holds the ended jobs, but learns of a new job
    only when the controller's record reaches slurmdbd (a moment later): both are asked."""
    queued = subprocess.run(
        ["squeue", "-h", "-a", "-t", "all", "-o", "%i|%Z"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ended = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-a", "-S", "now-1days", "-o", "JobID,WorkDir"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    root = str(folder)
    rows = (line.partition("|") for line in (queued + ended).splitlines() if line)
    found = {jid for jid, _, work in rows if work == root or work.startswith(root + os.sep)}
    return sorted(found)


def sacct(job_id: str) -> list[str]:
    """Every attempt's state of a job (requeues are extra rows)."""
    out = subprocess.run(
        ["sacct", "-n", "-P", "-X", "--duplicates", "-o", "State", "-j", str(job_id)],
        capture_output=True,
        text=True,
    ).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def wait_for(predicate, timeout: float, what: str, poll: float = 1.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED"}


def wait_final(job_id: str, timeout: float = 300) -> list[str]:
    return wait_for(
        lambda: (s := sacct(job_id)) and s[-1] in FINAL and s, timeout, f"job {job_id} to end"
    )
