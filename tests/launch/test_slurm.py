"""opmask-submit / opmask-sweep against a real SLURM cluster (never a mock of sbatch or sacct)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from opmask.config import load_config
from opmask.run.folder import RunFolder
from opmask.train.checkpoint import load_verified
from opmask.train.loop import train
from tests.conftest import SHAPES_OPMASK, TINY
from tests.launch.conftest import jobs_submitted_from, wait_final, wait_for

SMALL = {k: v for k, v in zip(TINY[0::2], TINY[1::2]) if k != "VIS_PERIOD"}
NO_VIS = ["VIS_PERIOD", "0", "DATASETS.TEST", "()"]


def submit(args, datasets_root, cwd, *, opts=()):
    env = dict(os.environ, OPMASK_DATASETS=datasets_root)
    cmd = [
        sys.executable,
        "-m",
        "opmask_launch.submit",
        "--config-file",
        SHAPES_OPMASK,
        *args,
        *TINY,
        *opts,
    ]
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def job_id(proc) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("submitted job"))
    return line.split()[-1]


def _metrics(run):
    path = run / "metrics.json"
    return [json.loads(x) for x in open(path)] if path.exists() else []


def _attempts(run):
    path = run / "attempts.jsonl"
    return [json.loads(x) for x in open(path)] if path.exists() else []


def test_dry_run_prints_sbatch_lines_and_config(slurm, datasets_root, tmp_path):
    proc = submit(
        [
            "--output",
            str(tmp_path / "run"),
            "--dry-run",
            "--nodes",
            "2",
            "--tasks-per-node",
            "1",
            "--time",
            "45",
            "--partition",
            "debug",
        ],
        datasets_root,
        str(tmp_path),
        opts=["SOLVER.MAX_ITER", "77"],
    )
    assert proc.returncode == 0, proc.stderr
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --time=45",
        "#SBATCH --partition=debug",
        "#SBATCH --signal=USR2@30",
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
        "MAX_ITER: 77",
    ):
        assert line in proc.stdout, line
    assert not (tmp_path / "run").exists()  # nothing written, nothing submitted


@pytest.mark.parametrize(
    "case,args,opts,message",
    [
        ("unknown key", [], ["SOLVER.BASE_RL", "1"], "unknown config key SOLVER.BASE_RL"),
        ("no partition", ["--partition", "nope"], [], "partition 'nope' does not exist"),
        (
            "world size",
            ["--nodes", "2", "--tasks-per-node", "1"],
            ["SOLVER.IMS_PER_BATCH", "3"],
            "not a multiple of the 2 processes (2 nodes x 1 tasks per node)",
        ),
    ],
)
def test_bad_input_is_refused_before_submitting(
    slurm, datasets_root, tmp_path, case, args, opts, message
):
    proc = submit(
        ["--output", str(tmp_path / "run"), *args], datasets_root, str(tmp_path), opts=opts
    )
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in proc.stderr, err
    assert jobs_submitted_from(tmp_path) == []
    assert not (tmp_path / "run").exists()


def test_small_run_finishes_with_evaluation(slurm, datasets_root, tmp_path):
    run = tmp_path / "run"
    proc = submit(
        ["--output", str(run)], datasets_root, str(tmp_path), opts=["SOLVER.MAX_ITER", "3"]
    )
    jid = job_id(proc)
    assert f"run folder: {run}" in proc.stdout and "squeue -j" in proc.stdout
    assert jobs_submitted_from(tmp_path) == [jid]  # what the refusal tests rely on
    assert wait_final(jid)[-1] == "COMPLETED"
    assert json.loads((run / "inference" / "shapes_val" / "results.json").read_text())["segm"]
    assert [a["outcome"] for a in _attempts(run)] == ["completed"]


def test_two_node_gloo_job(slurm, datasets_root, tmp_path):
    run = tmp_path / "run"
    jid = job_id(
        submit(
            ["--output", str(run), "--nodes", "2", "--tasks-per-node", "1"],
            datasets_root,
            str(tmp_path),
            opts=["SOLVER.MAX_ITER", "3", *NO_VIS],
        )
    )
    assert wait_final(jid)[-1] == "COMPLETED"
    assert "rank 0 of 2" in (run / "log.txt").read_text()
    assert "rank 1 of 2" in (run / "log.txt.rank1").read_text()  # the second node's task
    assert [m["iteration"] for m in _metrics(run)] == [0, 1, 2]


def test_preempted_twice_resumes_and_matches_uninterrupted(
    slurm, datasets_root, tmp_path, monkeypatch
):
    run = tmp_path / "run"
    opts = ["SOLVER.MAX_ITER", "40", "SOLVER.CHECKPOINT_PERIOD", "1000", *NO_VIS]
    jid = job_id(submit(["--output", str(run)], datasets_root, str(tmp_path), opts=opts))
    seen = []
    for n in (1, 2):
        floor = seen[-1] if seen else 0
        wait_for(
            lambda f=floor: any(m["iteration"] > f + 2 for m in _metrics(run)),
            240,
            f"progress before preemption {n}",
        )
        subprocess.run(["scancel", "--signal=USR2", jid], check=True)
        rec = wait_for(
            lambda k=n: len(_attempts(run)) >= k and _attempts(run)[k - 1],
            120,
            f"checkpoint for preemption {n}",
        )
        assert rec["outcome"] == "preemption" and rec["iteration"] > floor
        seen.append(rec["iteration"])
    states = wait_final(jid, timeout=400)
    assert states.count("REQUEUED") == 2 and states[-1] == "COMPLETED"
    assert [a["outcome"] for a in _attempts(run)] == ["preemption", "preemption", "completed"]
    assert seen[0] < seen[1]  # each resume started from a newer checkpoint
    # the same config, uninterrupted, in this process
    monkeypatch.setenv("OPMASK_DATASETS", datasets_root)
    cfg = load_config(SHAPES_OPMASK, TINY + opts)
    train(cfg, RunFolder(str(tmp_path / "local")), resume=False)
    a = load_verified(str(run / "models" / "model_final.pth"))["model"]
    b = load_verified(str(tmp_path / "local" / "models" / "model_final.pth"))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    logs = "".join(p.read_text() for p in (run / "slurm").rglob("*_0_log.out"))
    assert "Resumed from" in logs  # every attempt's log is kept (appended)
    assert "attempt 3, run folder" in logs and "previous attempt: preemption at iteration" in logs


def test_timeout_is_requeued_within_budget_then_stops(slurm, datasets_root, tmp_path):
    run = tmp_path / "run"
    jid = job_id(
        submit(
            [
                "--output",
                str(run),
                "--time",
                "2",  # USR2 ~70 s after start: well after start-up, even on a loaded machine
                "--signal-delay-s",
                "50",
                "--max-requeue-timeouts",
                "1",
            ],
            datasets_root,
            str(tmp_path),
            opts=["SOLVER.MAX_ITER", "100000", "SOLVER.CHECKPOINT_PERIOD", "100000", *NO_VIS],
        )
    )
    states = wait_final(jid, timeout=400)
    outcomes = [a["outcome"] for a in _attempts(run)]
    assert outcomes == ["timeout", "timeout"], outcomes  # one requeue (budget 1), then stop
    assert states.count("REQUEUED") == 1
    assert all(a["iteration"] is not None for a in _attempts(run))


def test_bad_input_in_the_job_is_not_requeued(slurm, datasets_root, tmp_path):
    run = tmp_path / "run"
    jid = job_id(
        submit(
            ["--output", str(run), "--no-data-check"],  # so that the job, not submit, finds it
            datasets_root,
            str(tmp_path),
            opts=["DATASETS.TRAIN", f"('{tmp_path}/missing.json:{tmp_path}',)"],
        )
    )
    states = wait_final(jid)
    assert "REQUEUED" not in states and states[-1] == "FAILED"
    assert [a["outcome"] for a in _attempts(run)] == ["application_error"]


def sweep(args, datasets_root, cwd):
    env = dict(os.environ, OPMASK_DATASETS=datasets_root)
    return subprocess.run(
        [sys.executable, "-m", "opmask_launch.sweep", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_sweep_array_status_collect_cancel_resume(slurm, datasets_root, tmp_path):
    spec = {
        "name": "seeds",
        "config": SHAPES_OPMASK,
        "overrides": SMALL
        | {"VIS_PERIOD": 0, "SOLVER.CHECKPOINT_PERIOD": 5, "DATALOADER.NUM_WORKERS": 0},
        "points": [
            {"SEED": 1, "SOLVER.MAX_ITER": 3},
            {"SEED": 2, "SOLVER.MAX_ITER": 3},
            {"SEED": 3, "SOLVER.MAX_ITER": 3},
            # the point to cancel, at its second metrics line: its 28 further iterations (~0.1 s
            # each on a fast idle machine) outlast the ~1 s the cancel takes to arrive (a 0.2 s
            # poll, `opmask-sweep cancel` without torch, scancel)
            {"SEED": 2, "SOLVER.MAX_ITER": 30},
        ],
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "sw"
    proc = sweep(
        ["submit", str(tmp_path / "sweep.yaml"), "--output", str(out)], datasets_root, str(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "sweep.json").read_text())
    ids = [p["job_ids"][0] for p in manifest["points"]]
    assert len(ids) == 4 and len({i.split("_")[0] for i in ids}) == 1  # one array
    victim = manifest["points"][3]
    wait_for(lambda: len(_metrics(_path(victim))) >= 2, 300, "the long point to run", poll=0.2)
    assert (
        sweep(
            ["cancel", str(out), "--point", str(victim["index"])], datasets_root, str(tmp_path)
        ).returncode
        == 0
    )
    for p in manifest["points"]:
        if p is not victim:
            wait_final(p["job_ids"][0], timeout=600)
    status = sweep(["status", str(out)], datasets_root, str(tmp_path)).stdout
    assert len(status.strip().splitlines()) == 5  # header + every point
    assert "CANCELLED" in status and "COMPLETED" in status and "3/3" in status, status
    proc = sweep(["resume", str(out)], datasets_root, str(tmp_path))
    assert proc.returncode == 0 and f"[{victim['index']}]" in proc.stdout, proc.stdout
    after = json.loads((out / "sweep.json").read_text())
    rerun = [p for p in after["points"] if len(p["job_ids"]) == 2]
    assert [p["index"] for p in rerun] == [victim["index"]]  # only the cancelled point
    assert wait_final(rerun[0]["job_ids"][1], timeout=600)[-1] == "COMPLETED"
    collect = sweep(["collect", str(out)], datasets_root, str(tmp_path))
    assert collect.returncode == 0
    rows = (out / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 5 and "segm_weak_AP" in rows[0]
    assert (out / "results.md").read_text().count("\n") == 6
    again = sweep(["resume", str(out)], datasets_root, str(tmp_path))
    assert "nothing to resume" in again.stdout  # finished points are never rerun


def _path(point):
    from pathlib import Path

    return Path(point["run_dir"])


def test_bad_sweep_file_is_refused(slurm, datasets_root, tmp_path):
    (tmp_path / "bad.yaml").write_text("config: x.yaml\ngrid: {SEED: 3}\n")
    proc = sweep(
        ["submit", str(tmp_path / "bad.yaml"), "--output", str(tmp_path / "o")],
        datasets_root,
        str(tmp_path),
    )
    assert proc.returncode == 1 and "grid values must be non-empty lists" in proc.stderr
    (tmp_path / "bad2.yaml").write_text(
        yaml.safe_dump({"config": SHAPES_OPMASK, "grid": {"SOLVER.BASE_RL": [1, 2]}})
    )
    proc = sweep(
        ["submit", str(tmp_path / "bad2.yaml"), "--output", str(tmp_path / "o2")],
        datasets_root,
        str(tmp_path),
    )
    assert proc.returncode == 1 and "unknown config key SOLVER.BASE_RL" in proc.stderr
    assert not (tmp_path / "o2" / "sweep.json").exists()


def test_plain_sbatch_example_checkpoints_and_requeues_itself(slurm, datasets_root, tmp_path):
    """slurm/sbatch_example.sh (no submitit), its GPU lines overridden for this CPU cluster."""
    from tests.conftest import REPO

    env = dict(os.environ, OPMASK_DATASETS=datasets_root)
    script = os.path.join(REPO, "slurm", "sbatch_example.sh")
    sub = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--nodes=2",
            "--ntasks-per-node=1",
            "--cpus-per-task=1",
            "--gpus-per-node=0",
            "--time=10",
            script,
            SHAPES_OPMASK,
            "plain",
            *TINY,
            "SOLVER.MAX_ITER",
            "20",  # the signal comes at iteration ~5: 15 iterations of margin
            "SOLVER.CHECKPOINT_PERIOD",
            "1000",
            *NO_VIS,
        ],
        env=env,
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        check=True,
    )
    jid = sub.stdout.strip()
    run = tmp_path / "output" / "OPMask" / "shapes_train_plain"
    wait_for(lambda: len(_metrics(run)) >= 3, 240, "training to start")
    subprocess.run(["scancel", "--signal=USR1", jid], check=True)
    states = wait_final(jid, timeout=400)
    assert states.count("REQUEUED") == 1 and states[-1] == "COMPLETED", states
    log = (run / "log.txt").read_text()
    assert "exiting with code 75" in log and "Resumed from" in log
    assert [m["iteration"] for m in _metrics(run)] == list(range(20))
    assert "rank 1 of 2" in (run / "log.txt.rank1").read_text()


# ---------------------------------------------------------------- transactional submission
def test_refused_sbatch_leaves_a_sweep_that_resume_completes(slurm, datasets_root, tmp_path):
    """The cluster has 2 nodes: an array asking for 3 is refused by sbatch. The manifest and the
    claimed run folders stay, marked unsubmitted; `resume --nodes 1` then submits every point."""
    spec = {
        "name": "refused",
        "config": SHAPES_OPMASK,
        "overrides": SMALL | {"VIS_PERIOD": 0, "DATASETS.TEST": "()"},
        "grid": {"SEED": [1, 2]},
    }
    spec["overrides"]["SOLVER.IMS_PER_BATCH"] = 3  # a multiple of 3 and of 1 processes
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "sw"
    proc = sweep(
        ["submit", str(tmp_path / "sweep.yaml"), "--output", str(out), "--nodes", "3"],
        datasets_root,
        str(tmp_path),
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "sbatch refused the request" in err[0], err
    assert f"opmask-sweep resume {out}" in err[0] and "Traceback" not in proc.stderr
    assert jobs_submitted_from(tmp_path) == []
    manifest = json.loads((out / "sweep.json").read_text())
    assert [p["job_ids"] for p in manifest["points"]] == [[], []]
    assert "sbatch refused" in manifest["last_error"]
    assert all((_path(p) / "config.yaml").is_file() for p in manifest["points"])
    status = sweep(["status", str(out)], datasets_root, str(tmp_path))
    assert status.returncode == 0 and status.stdout.count("NOT_SUBMITTED") == 2
    fixed = sweep(["resume", str(out), "--nodes", "1"], datasets_root, str(tmp_path))
    assert fixed.returncode == 0 and "resubmitted points [0, 1]" in fixed.stdout, fixed.stderr
    after = json.loads((out / "sweep.json").read_text())
    assert after["resources"]["nodes"] == 1 and "last_error" not in after
    for p in after["points"]:
        assert len(p["job_ids"]) == 1
        assert wait_final(p["job_ids"][0], timeout=600)[-1] == "COMPLETED"
        assert [m["iteration"] for m in _metrics(_path(p))] == list(range(6))
    again = sweep(["resume", str(out)], datasets_root, str(tmp_path))
    assert "nothing to resume" in again.stdout


def test_refused_sbatch_of_a_single_run_leaves_nothing(slurm, datasets_root, tmp_path):
    run = tmp_path / "out" / "run"
    proc = submit(
        ["--output", str(run), "--nodes", "3", "--tasks-per-node", "1"],
        datasets_root,
        str(tmp_path),
        opts=["SOLVER.IMS_PER_BATCH", "3"],
    )
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "sbatch refused the request" in err[0], err
    assert not (tmp_path / "out").exists()  # the run folder this start made is gone
    assert jobs_submitted_from(tmp_path) == []
