"""A plain ``scancel`` (SIGTERM, then SIGKILL after the cluster's KillWait of 5 s) during a
submitit job's training: the job checkpoints, records the attempt as "cancelled" and is not
requeued; a resubmission with ``--resume`` continues from that checkpoint. A real SLURM cluster
(``tests/launch/conftest.py``), never a mock."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from opmask.train.checkpoint import load_verified
from opmask.utils import exit_codes
from tests.conftest import SHAPES_OPMASK, TINY
from tests.launch.conftest import wait_final, wait_for

MAX_ITER = 40
OPTS = ["SOLVER.MAX_ITER", str(MAX_ITER), "SOLVER.CHECKPOINT_PERIOD", "1000"]
OPTS += ["VIS_PERIOD", "0", "DATASETS.TEST", "()"]


def _submit(run, datasets_root, cwd, *flags) -> str:
    env = dict(os.environ, OPMASK_DATASETS=datasets_root)
    cmd = [sys.executable, "-m", "opmask_launch.submit", "--config-file", SHAPES_OPMASK]
    cmd += ["--output", str(run), *flags, *TINY, *OPTS]
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return next(x for x in proc.stdout.splitlines() if x.startswith("submitted job")).split()[-1]


def _iterations(run) -> list[int]:
    path = run / "metrics.json"
    if not path.exists():
        return []
    return [m["iteration"] for m in map(json.loads, open(path)) if "total_loss" in m]


def _attempts(run) -> list[dict]:
    path = run / "attempts.jsonl"
    return [json.loads(x) for x in open(path)] if path.exists() else []


@pytest.mark.slurm
@pytest.mark.xdist_group("slurm")
def test_scancel_checkpoints_is_not_requeued_and_a_resubmission_continues(
    slurm, datasets_root, tmp_path
):
    run = tmp_path / "run"
    jid = _submit(run, datasets_root, str(tmp_path))
    wait_for(lambda: len(_iterations(run)) >= 3, 240, "training to start", poll=0.2)
    subprocess.run(["scancel", jid], check=True)  # plain: SIGTERM to every task
    assert wait_final(jid, timeout=120) == ["CANCELLED"]  # one attempt: not requeued
    (rec,) = wait_for(lambda: _attempts(run), 30, "the attempt's record")
    it = rec["iteration"]
    assert rec["outcome"] == "cancelled" and rec["exit_code"] == exit_codes.TERMINATED
    assert (run / "models" / "last_checkpoint").read_text() == f"model_{it:07d}.pth"
    assert load_verified(str(run / "models" / f"model_{it:07d}.pth"))["iteration"] == it
    assert max(_iterations(run)) == it < MAX_ITER - 1
    log = (run / "log.txt").read_text()
    assert f"checkpoint requested (SIGTERM), written at iteration {it}" in log

    again = _submit(run, datasets_root, str(tmp_path), "--resume")
    assert wait_final(again, timeout=400)[-1] == "COMPLETED"
    assert f"Resumed from {run / 'models' / f'model_{it:07d}.pth'}" in (run / "log.txt").read_text()
    assert _iterations(run) == list(range(MAX_ITER))  # no step lost, none twice
    assert [a["outcome"] for a in _attempts(run)] == ["cancelled", "completed"]
