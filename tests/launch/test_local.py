"""``opmask-submit --local``: the same job through submitit's local executor, no SLURM needed."""

from __future__ import annotations

import json

import pytest

from tests.launch.test_slurm import NO_VIS, _attempts, submit


@pytest.mark.slow
def test_local_executor_runs_the_job_to_completion(datasets_root, tmp_path):
    """Slow (about 15 s on 2 cores): submitit's local executor starts the job as its own Python
    process, which trains and evaluates a small run."""
    run = tmp_path / "run"
    proc = submit(
        ["--output", str(run), "--local"],
        datasets_root,
        str(tmp_path),
        opts=["SOLVER.MAX_ITER", "2", *NO_VIS],
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"run_dir": str(run), "outcome": "completed"}
    assert (run / "models" / "model_final.pth").is_file()
    assert [a["outcome"] for a in _attempts(run)] == ["completed"]
    assert json.loads((run / "submission.json").read_text())["job_id"]
