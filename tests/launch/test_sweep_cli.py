"""opmask-sweep without a cluster: a manifest that is not one, identical and non-ASCII points, a
config warning once per sweep, ``submit --dry-run`` on a machine without SLURM."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml

from opmask.utils import exit_codes
from opmask_launch import sweep
from opmask_launch.sweep_file import exp_id, run_names
from tests.conftest import REPO, SHAPES_OPMASK

FLAGS = ["--profile", "local", "--no-data-check"]
POINT = {"index": 0, "exp_id": "p0", "overrides": {"SEED": 1}, "run_dir": "r", "cfg": "SEED: 1\n"}


@pytest.fixture
def no_slurm(tmp_path, monkeypatch):
    """A PATH without SLURM's commands (this machine has them, for the test cluster)."""
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return str(empty)


def _sweep_file(tmp_path, spec: dict) -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("command", ["status", "collect", "resume", "cancel"])
@pytest.mark.parametrize(
    "text, problem",
    [
        ("{not json", "not JSON: Expecting property name enclosed in double quotes: line 1 "),
        ("[1, 2]", "a JSON list, not an object"),
        ('{"name": "t"}', "'points' is missing or not a list"),
        ('{"name": "t", "points": [3]}', "points[0] is not an object"),
        ('{"name": "t", "points": [{"index": 0}]}', "points[0].exp_id is missing or not a str"),
        (
            json.dumps({"name": "t", "points": [POINT | {"job_ids": 7}]}),
            "points[0].job_ids is not a list of job ids",
        ),
        (json.dumps({"name": "t", "points": [], "resources": []}), "'resources' is not an object"),
    ],
)
def test_a_manifest_that_is_not_one_is_one_line_exit_1(command, text, problem, tmp_path, capsys):
    manifest = tmp_path / "sweep.json"
    manifest.write_text(text)
    assert sweep.main([command, str(tmp_path)]) == exit_codes.ERROR
    err = capsys.readouterr().err
    assert err.startswith(f"opmask-sweep: error: {manifest}: not a sweep manifest ({problem}"), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.json"]  # nothing written


def test_resume_needs_the_manifests_request(tmp_path, capsys):
    manifest = tmp_path / "sweep.json"
    manifest.write_text(json.dumps({"name": "t", "points": [POINT]}))
    assert sweep.main(["resume", str(tmp_path)]) == exit_codes.ERROR
    assert capsys.readouterr().err == (
        f"opmask-sweep: error: {manifest}: not a sweep manifest ('resources' is missing)\n"
    )
    manifest.write_text(json.dumps({"name": "t", "points": [POINT], "resources": {"nodes": 0}}))
    assert sweep.main(["resume", str(tmp_path)]) == exit_codes.ERROR
    assert capsys.readouterr().err == (
        f"opmask-sweep: error: {manifest}: resources.nodes must be >= 1, got 0\n"
    )


def test_run_names_keep_every_difference():
    assert exp_id({"EXP.PS": "voc", "SEED": 1}) == "PS-voc_SEED-1"  # readable ids stay as they were
    assert exp_id({}) == "base"
    accents = run_names([{"DATASETS.CACHE_DIR": "/tmp/cé"}, {"DATASETS.CACHE_DIR": "/tmp/cè"}])
    assert accents[0] != accents[1], accents
    assert all(re.fullmatch(r"CACHE_DIR-tmpc-[0-9a-f]{8}", n) for n in accents), accents
    steps = run_names([{"SOLVER.STEPS": "(100,)"}, {"SOLVER.STEPS": "(100)"}])
    assert steps[0] != steps[1] and all(n.startswith("STEPS-100-") for n in steps), steps
    keys = run_names([{"A.SEED": 1}, {"B.SEED": 1}, {"SEED": 2}])  # equal before the last dot
    assert len(set(keys)) == 3 and keys[2] == "SEED-2", keys
    assert re.fullmatch(r"SEED-1-[0-9a-f]{8}", keys[0]), keys


def test_points_differing_only_in_non_ascii_get_their_own_run_folders(no_slurm, tmp_path, capsys):
    grid = {"DATASETS.CACHE_DIR": ["/tmp/cé", "/tmp/cè"]}
    spec = _sweep_file(tmp_path, {"name": "u", "config": SHAPES_OPMASK, "grid": grid})
    out = tmp_path / "sw"
    assert sweep.main(["submit", spec, "--output", str(out), "--dry-run", *FLAGS]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("point ")]
    folders = [x.split()[2] for x in lines]
    assert len(lines) == 2 and folders[0] != folders[1], lines
    assert lines[0].endswith("DATASETS.CACHE_DIR /tmp/cé") and lines[1].endswith("/tmp/cè")
    assert not out.exists()


def test_identical_points_are_refused_naming_both(no_slurm, tmp_path, capsys):
    points = [{"SOLVER.MAX_ITER": 5}, {"SOLVER.BASE_LR": 0.1}, {"SOLVER.MAX_ITER": 5}]
    spec = _sweep_file(tmp_path, {"config": SHAPES_OPMASK, "points": points})
    out = tmp_path / "sw"
    assert sweep.main(["submit", spec, "--output", str(out), "--dry-run", *FLAGS]) == 1
    assert capsys.readouterr().err == (
        "opmask-sweep: error: points 0 and 2 have the same overrides {'SOLVER.MAX_ITER': 5}: "
        "remove one (a grid value or a point listed twice)\n"
    )
    assert sweep.main(["submit", spec, "--output", str(out), *FLAGS]) == 1  # and when submitting
    assert "points 0 and 2 have the same overrides" in capsys.readouterr().err
    assert not out.exists()


def _sweep_cli(args, path):
    return subprocess.run(
        [sys.executable, "-m", "opmask_launch.sweep", *args],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO, PATH=path),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_dry_run_prints_every_point_and_the_array_and_a_shared_warning_once(no_slurm, tmp_path):
    """50 points that share one config warning (an unread Detectron2 key): the warning is printed
    once, the points and the array's sbatch script on stdout, nothing written; without SLURM."""
    spec = {
        "name": "many",
        "config": SHAPES_OPMASK,
        "overrides": {"VERSION": 1},
        "grid": {"SEED": list(range(50))},
    }
    out = tmp_path / "sw"
    proc = _sweep_cli(
        ["submit", _sweep_file(tmp_path, spec), "--output", str(out), "--dry-run", *FLAGS], no_slurm
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        "config key VERSION = 1 is not read (one config schema is supported); accepted for "
        "Detectron2 compatibility",
        "(49 more copies of the config warning(s) above, one per further point, not shown)",
        "not checked here: partition 'debug' (no SLURM on this machine: sinfo not found)",
    ]
    lines = proc.stdout.splitlines()
    assert lines[0] == f"point 0: {out}/runs/VERSION-1_SEED-0  VERSION 1 SEED 0"
    assert lines[49] == f"point 49: {out}/runs/VERSION-1_SEED-49  VERSION 1 SEED 49"
    assert lines[50] == "#!/bin/bash"
    assert "#SBATCH --array=0-49%2" in lines and "#SBATCH --job-name=sweep-many" in lines
    assert "#SBATCH --partition=debug" in lines
    assert not out.exists()


def test_what_all_points_share_fails_before_the_points_are_loaded(
    no_slurm, tmp_path, capsys, caplog
):
    """No cluster here: refused before any point's config is loaded (no warning); a global batch
    that no point can share: refused at the first of 2000 points, its warning logged once."""
    spec = {
        "config": SHAPES_OPMASK,
        "overrides": {"VERSION": 1, "SOLVER.IMS_PER_BATCH": 3},
        "grid": {"SEED": list(range(2000))},
    }
    path, out = _sweep_file(tmp_path, spec), tmp_path / "sw"
    assert sweep.main(["submit", path, "--output", str(out), *FLAGS]) == 1
    assert capsys.readouterr().err == (
        "opmask-sweep: error: no SLURM cluster here for partition 'debug' (sinfo not found); "
        "use --local\n"
    )
    assert not [r for r in caplog.records if "VERSION" in r.getMessage()]
    argv = ["submit", path, "--output", str(out), "--nodes", "2", "--dry-run", *FLAGS]
    assert sweep.main(argv) == 1
    assert capsys.readouterr().err == (
        "opmask-sweep: error: SOLVER.IMS_PER_BATCH 3 is not a multiple of the 2 processes "
        "(2 nodes x 1 tasks per node)\n"
    )
    assert [r.getMessage() for r in caplog.records if "VERSION" in r.getMessage()] == [
        "config key VERSION = 1 is not read (one config schema is supported); accepted for "
        "Detectron2 compatibility"
    ]
    assert not out.exists()


def test_status_reads_damaged_run_files_as_unknown(tmp_path, capsys):
    """Records without an iteration, losses and APs that are not finite numbers, an attempt
    without an outcome, a saved config that is not YAML: shown as unknown, not a traceback."""
    run = tmp_path / "runs" / "p0"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(
        '{"total_loss": 2.0}\n{"iteration": 3, "total_loss": "x", "eta_seconds": NaN}\n'
        '{"iteration": 4, "segm_weak/AP": "high"}\n'
    )
    (run / "attempts.jsonl").write_text('{"job_id": "local"}\n')
    point = POINT | {"run_dir": str(run), "cfg": "{broken"}
    (tmp_path / "sweep.json").write_text(json.dumps({"name": "t", "points": [point]}))
    assert sweep.main(["status", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "point",
        "exp_id",
        "job",
        "state",
        "iter",
        "loss",
        "eta",
        "strong_AP",
        "weak_AP",
        "requeues",
        "last_outcome",
    ]
    assert out[1].split() == ["0", "p0", "-", "NOT_SUBMITTED", "4/?", "-", "-", "-", "-", "0", "?"]


def _trained_sweep(tmp_path, *, checkpoints=(True, True)):
    """A sweep file of two points and its folder as training left it: the manifest and each run
    folder, with a checkpoint file where ``checkpoints`` says so."""
    spec = _sweep_file(tmp_path, {"name": "ev", "config": SHAPES_OPMASK, "grid": {"SEED": [1, 2]}})
    out = tmp_path / "sw"
    runs = [out / "runs" / "SEED-1", out / "runs" / "SEED-2"]
    for run, has in zip(runs, checkpoints):
        (run / "models").mkdir(parents=True)
        (run / "config.yaml").write_text("SEED: 1\n")
        if has:
            (run / "models" / "model_final.pth").write_bytes(b"weights")
    (out / "sweep.json").write_text('{"name": "ev", "points": []}')
    return spec, out, runs


def _tree(root) -> dict:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_eval_only_dry_run_prints_each_points_evaluation(no_slurm, tmp_path, capsys):
    """An existing sweep: each point's run folder and the opmask-train --eval-only command its
    job equals, the evaluation array's script; the manifest and the run folders unchanged."""
    spec, out, runs = _trained_sweep(tmp_path)
    before = _tree(tmp_path)
    argv = ["submit", spec, "--output", str(out), "--eval-only", "--dry-run", *FLAGS]
    assert sweep.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    hparams = ["EXP.HPARAMS", "('SEED',)"]
    for i, run in enumerate(runs):
        assert lines[2 * i] == f"point {i}: {run}  SEED {i + 1}"
        head, command = lines[2 * i + 1].split(": ", 1)
        assert head == "  evaluates as"
        assert shlex.split(command) == [
            "opmask-train",
            "--config-file",
            SHAPES_OPMASK,
            "--output",
            str(run),
            "--eval-only",
            "SEED",
            str(i + 1),
            *hparams,
        ]
    assert "#SBATCH --job-name=sweep-eval-ev" in lines and "#SBATCH --array=0-1%2" in lines
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("state", ["no checkpoint", "missing"])
def test_eval_only_refuses_a_point_without_a_checkpoint(no_slurm, state, tmp_path, capsys):
    """One line naming the point, exit 1, nothing written or submitted (dry run or not)."""
    spec, out, runs = _trained_sweep(tmp_path, checkpoints=(True, False))
    if state == "missing":
        shutil.rmtree(runs[1])
    expected = (
        f"no checkpoint in {runs[1]}/models to evaluate"
        if state == "no checkpoint"
        else f"no run folder {runs[1]} to evaluate (check --output, the sweep)"
    )
    before = _tree(tmp_path)
    argv = ["submit", spec, "--output", str(out), "--eval-only", "--dry-run", *FLAGS]
    assert sweep.main(argv) == exit_codes.ERROR
    out_, err = capsys.readouterr()
    assert err == f"opmask-sweep: error: --eval-only: point 1: {expected}\n"
    assert out_ == ""
    assert _tree(tmp_path) == before


@pytest.mark.slurm
@pytest.mark.slow
def test_eval_only_submit_refuses_a_point_without_a_checkpoint_on_the_cluster(tmp_path, capsys):
    """Where SLURM answers (the partition is then checked first), a point without a checkpoint
    is still refused before anything is submitted or written."""
    spec, out, runs = _trained_sweep(tmp_path, checkpoints=(False, True))
    before = _tree(tmp_path)
    assert sweep.main(["submit", spec, "--output", str(out), "--eval-only", *FLAGS]) == 1
    assert capsys.readouterr().err == (
        f"opmask-sweep: error: --eval-only: point 0: no checkpoint in {runs[0]}/models to "
        "evaluate\n"
    )
    assert _tree(tmp_path) == before
