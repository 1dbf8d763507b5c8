"""A real single-host SLURM cluster (2 nodes, accounting) started by slurm/local/start.sh."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slurm-cluster")
    start = subprocess.run(
        ["bash", os.path.join(REPO, "slurm", "local", "start.sh"), str(folder), "2"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert start.returncode == 0, start.stdout + start.stderr
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(folder / "slurm.conf")
    yield folder
    subprocess.run(
        ["bash", os.path.join(REPO, "slurm", "local", "stop.sh"), str(folder)], timeout=120
    )
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old


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
