"""``opmask-submit``'s safe defaults, on a machine without SLURM: a dry run that says what it
could not check, no silent cluster profile, ``--eval-only`` refused without a run to evaluate, and
flags written after the ``KEY VALUE`` overrides refused (``opmask-train`` too)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from opmask.cli import train
from opmask.utils import exit_codes
from opmask_launch import submit
from tests.conftest import SHAPES_OPMASK, TINY

# The example GPU profile asks for 2 nodes x 8 GPUs: a global batch of 16 splits evenly.
BATCH_16 = ["SOLVER.IMS_PER_BATCH", "16"]
NO_PROFILE = (
    "opmask-submit: error: no cluster profile chosen: pass --profile NAME or set OPMASK_PROFILE "
    "(profiles: example-gpu-cluster, local; or a YAML path)\n"
)
LATE = "comes after the KEY VALUE overrides, where it would be read as one; put every flag before"


def _python_only_path(tmp_path) -> str:
    """A PATH holding only this Python (no sinfo, no sbatch)."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    os.symlink(sys.executable, bin_ / "python3")
    return str(bin_)


@pytest.fixture
def no_slurm(tmp_path, monkeypatch):
    """This process without SLURM: a PATH without its commands, no SLURM_CONF, no profile."""
    monkeypatch.setenv("PATH", _python_only_path(tmp_path))
    monkeypatch.delenv("SLURM_CONF", raising=False)
    monkeypatch.delenv("OPMASK_PROFILE", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _argv(run, *flags, opts=()):
    return ["--config-file", SHAPES_OPMASK, "--output", str(run), *flags, *TINY, *opts]


def test_dry_run_without_slurm_prints_the_script_and_what_it_did_not_check(
    no_slurm, datasets_root, monkeypatch, capsys
):
    monkeypatch.setenv("OPMASK_DATASETS", datasets_root)  # the data is checked here as usual
    argv = _argv(no_slurm / "run", "--profile", "example-gpu-cluster", "--dry-run", opts=BATCH_16)
    assert submit.main(argv) == 0
    out, err = capsys.readouterr()
    assert err == "not checked here: partition 'gpu' (no SLURM on this machine: sinfo not found)\n"
    for line in ("#SBATCH --partition=gpu", "#SBATCH --nodes=2", "# resolved training config:"):
        assert line in out, line
    assert "IMS_PER_BATCH: 16" in out
    assert sorted(os.listdir(no_slurm)) == ["bin"]  # nothing written


@pytest.mark.slow
def test_dry_run_without_slurm_end_to_end(tmp_path, datasets_root):
    """The same in a fresh interpreter whose PATH holds only Python (slow: importing the stack
    takes 4 s of CPU, 12 s of wall time on the shared 2-core machine)."""
    env = {k: v for k, v in os.environ.items() if k not in ("SLURM_CONF", "OPMASK_PROFILE")}
    env.update(PATH=_python_only_path(tmp_path), OPMASK_DATASETS=datasets_root)
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "opmask_launch.submit"]
        + _argv(run, "--profile", "example-gpu-cluster", "--dry-run", opts=BATCH_16),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == (
        "not checked here: partition 'gpu' (no SLURM on this machine: sinfo not found)\n"
    )
    for line in ("#SBATCH --partition=gpu", "#SBATCH --nodes=2", "# resolved training config:"):
        assert line in proc.stdout, line
    assert "IMS_PER_BATCH: 16" in proc.stdout
    assert sorted(os.listdir(tmp_path)) == ["bin"]  # nothing written


def test_no_profile_is_refused_in_one_line_listing_the_profiles(no_slurm, capsys):
    assert submit.main(_argv(no_slurm / "run", "--no-data-check")) == exit_codes.ERROR
    assert capsys.readouterr().err == NO_PROFILE
    assert sorted(os.listdir(no_slurm)) == ["bin"]  # nothing written, nothing submitted


def test_the_environment_names_the_profile_and_the_flag_wins(no_slurm, monkeypatch, capsys):
    monkeypatch.setenv("OPMASK_PROFILE", "example-gpu-cluster")
    dry = ("--dry-run", "--no-data-check")
    assert submit.main(_argv(no_slurm / "run", *dry, opts=BATCH_16)) == 0
    out, err = capsys.readouterr()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=my-lab", "#SBATCH --time=4320"):
        assert line in out, line
    assert err == "not checked here: partition 'gpu' (no SLURM on this machine: sinfo not found)\n"
    assert submit.main(_argv(no_slurm / "run", "--profile", "local", *dry)) == 0
    out, err = capsys.readouterr()
    assert "#SBATCH --partition=debug" in out and "partition 'debug'" in err
    assert sorted(os.listdir(no_slurm)) == ["bin"]


@pytest.mark.skipif(shutil.which("sinfo") is None, reason="needs SLURM's client commands")
def test_dry_run_where_sinfo_reaches_no_cluster_says_so(tmp_path, monkeypatch, capsys):
    """SLURM's commands installed but no cluster configured (this machine without SLURM_CONF)."""
    monkeypatch.delenv("SLURM_CONF", raising=False)
    monkeypatch.chdir(tmp_path)
    argv = _argv(tmp_path / "run", "--profile", "local", "--dry-run", "--no-data-check")
    assert submit.main(argv) == 0
    out, err = capsys.readouterr()
    assert "#SBATCH --partition=debug" in out
    prefix = "not checked here: partition 'debug' (cannot reach a SLURM cluster from here: "
    assert err.startswith(prefix) and err.count("\n") == 1, err
    assert os.listdir(tmp_path) == []


def test_local_needs_no_profile(no_slurm, capsys):
    """``--local`` targets no cluster: without a profile it uses the plain defaults."""
    argv = _argv(no_slurm / "run", "--local", "--dry-run", "--no-data-check")
    assert submit.main(argv) == 0
    out, err = capsys.readouterr()
    assert "#SBATCH --time=60" in out and "--partition" not in out and err == ""


@pytest.mark.parametrize("late", ["--resume", "--nodes=2", "--dry-run"])
def test_submit_refuses_a_flag_after_the_overrides(no_slurm, late, capsys):
    argv = _argv(no_slurm / "run", "--profile", "local", opts=["SOLVER.BASE_LR", "0.02", late])
    with pytest.raises(SystemExit) as e:
        submit.main(argv)
    assert e.value.code == 2
    name = late.split("=")[0]
    assert capsys.readouterr().err == (
        f"opmask-submit: error: {name} {LATE} the overrides (see opmask-submit --help)\n"
    )
    assert sorted(os.listdir(no_slurm)) == ["bin"]


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["--config-file", SHAPES_OPMASK, "SOLVER.BASE_LR", "0.02", "--eval-only"], "--eval-only"),
        (["SOLVER.BASE_LR", "0.02", "--config-file", SHAPES_OPMASK], "--config-file"),
    ],
)
def test_train_refuses_a_flag_after_the_overrides(argv, flag, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        train.main(argv)
    assert e.value.code == 2
    assert capsys.readouterr().err == (
        f"opmask-train: error: {flag} {LATE} the overrides (see opmask-train --help)\n"
    )
    assert os.listdir(tmp_path) == []


def test_values_that_start_with_a_dash_are_still_overrides():
    args = train.parse_args(["--config-file", SHAPES_OPMASK, "SEED", "-1"])
    assert args.opts == ["SEED", "-1"]


@pytest.mark.parametrize("state", ["missing", "no checkpoint"])
def test_eval_only_without_a_checkpoint_is_refused(no_slurm, state, capsys):
    run = no_slurm / "run"
    if state == "no checkpoint":
        (run / "models").mkdir(parents=True)
        (run / "config.yaml").write_text("SEED: 1\n")
    argv = _argv(run, "--profile", "local", "--eval-only", "--no-data-check")
    before = sorted(str(p) for p in no_slurm.rglob("*"))
    assert submit.main(argv) == exit_codes.ERROR
    expected = (
        f"no run folder {run} to evaluate (check --exp-id / --output)"
        if state == "missing"
        else f"no checkpoint in {run}/models to evaluate"
    )
    assert capsys.readouterr().err == f"opmask-submit: error: --eval-only: {expected}\n"
    assert sorted(str(p) for p in no_slurm.rglob("*")) == before
