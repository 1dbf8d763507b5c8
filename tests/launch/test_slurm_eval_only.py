"""``opmask-submit --eval-only`` on the real test cluster: a job that evaluates a run's newest
checkpoint, as ``opmask-train --eval-only`` does."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from opmask.config import load_config
from opmask.run.entry import train_in_process
from tests.conftest import SHAPES_OPMASK, TINY
from tests.launch.conftest import wait_final

SHORT = ["SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)", "VIS_PERIOD", "0"]


def _submit(run, cwd, datasets_root, *flags, opts=()):
    cmd = [sys.executable, "-m", "opmask_launch.submit", "--config-file", SHAPES_OPMASK]
    cmd += ["--output", str(run), *flags, *TINY, *SHORT, *opts]
    env = dict(os.environ, OPMASK_DATASETS=datasets_root)  # OPMASK_PROFILE=local: the fixture
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.slurm
@pytest.mark.xdist_group("slurm")
def test_eval_only_job_evaluates_the_newest_checkpoint(slurm, datasets_root, tmp_path, monkeypatch):
    """Train 2 iterations here without a test set, then evaluate on shapes_val as a job: the
    results appear, the run's config is untouched, no attempt or submission record is added.
    Before that, a dry run still checks the partition where SLURM is. About a minute (the job's
    start and evaluation on the test cluster), plus the cluster's start if it is not up."""
    monkeypatch.setenv("OPMASK_DATASETS", datasets_root)
    run = tmp_path / "run"
    cfg = load_config(SHAPES_OPMASK, TINY + SHORT + ["DATASETS.TEST", "()"])
    train_in_process(cfg, str(run))
    config = (run / "config.yaml").read_bytes()
    results = run / "inference" / "shapes_val" / "results.json"
    assert (run / "models" / "model_final.pth").is_file() and not results.exists()

    proc = _submit(run, tmp_path, datasets_root, "--eval-only", "--dry-run", "--partition", "no")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "partition 'no' does not exist" in proc.stderr

    proc = _submit(run, tmp_path, datasets_root, "--eval-only")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job = next(x for x in proc.stdout.splitlines() if x.startswith("submitted job")).split()[-1]
    assert wait_final(job)[-1] == "COMPLETED"
    assert json.loads(results.read_text())["segm"]
    assert (run / "config.yaml").read_bytes() == config
    assert not (run / "attempts.jsonl").exists() and not (run / "submission.json").exists()
    assert not (run / "run.lock").exists()
