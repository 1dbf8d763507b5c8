"""The attempts record of a SLURM job's run (``launch/attempts.py``): what each attempt writes and
the job-log line that says how the previous attempt ended."""

from __future__ import annotations

import json

from opmask.run.folder import RunFolder
from opmask_launch.attempts import describe_attempt, record_attempt


def test_attempts_round_trip_in_the_job_format(tmp_path, monkeypatch):
    run = RunFolder(tmp_path)
    assert run.read_attempts() == []
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    assert describe_attempt(run) == f"[opmask] job 77, attempt 1, run folder {tmp_path}"
    record_attempt(run, outcome="preemption", iteration=99)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert describe_attempt(run).endswith("previous attempt: preemption at iteration 99")
    record_attempt(run, outcome="completed", iteration=None)
    lines = (tmp_path / "attempts.jsonl").read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert set(first) == {"outcome", "iteration", "time", "job_id", "attempt"}
    assert (first["job_id"], first["attempt"], first["outcome"]) == ("77", 0, "preemption")
    attempts = run.read_attempts()
    assert [a["outcome"] for a in attempts] == ["preemption", "completed"]
    assert attempts[1]["attempt"] == 1
    monkeypatch.setenv("SLURM_RESTART_COUNT", "3")  # two attempts left no record
    assert "ended without a checkpoint request" in describe_attempt(run)
