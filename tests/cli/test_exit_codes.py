"""The error taxonomy (issue 14): bad input is one line and exit 1; anything else, a bare
ValueError included, is a bug: its traceback and exit code BUG, also when it comes from inside
the model during ``opmask-train``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from opmask.config import ConfigError
from opmask.data.coco import DatasetError
from opmask.data.splits import SplitError
from opmask.modeling.weights import UnsafeWeightsError
from opmask.run.claim import RunFolderError
from opmask.train.checkpoint import CheckpointError
from opmask.utils import exit_codes
from opmask.utils.errors import OPMaskInputError
from opmask.utils.exit_codes import run_command
from opmask.utils.safeload import WeightsFileError
from tests import warm
from tests.conftest import REPO, SHAPES_OPMASK, TINY

INPUT_ERRORS = [
    ConfigError,
    DatasetError,
    SplitError,
    UnsafeWeightsError,
    WeightsFileError,
    RunFolderError,
    CheckpointError,
]


@pytest.mark.parametrize("cls", INPUT_ERRORS, ids=lambda c: c.__name__)
def test_every_input_error_derives_from_the_one_base(cls):
    assert issubclass(cls, OPMaskInputError)
    assert exit_codes.code_for(cls("x")) == exit_codes.ERROR


def test_kept_bases():
    """Code that catches the old bases still catches them."""
    assert issubclass(RunFolderError, RuntimeError) and issubclass(CheckpointError, RuntimeError)
    assert all(issubclass(c, ValueError) for c in INPUT_ERRORS)


def test_bug_code_is_its_own():
    others = {exit_codes.OK, exit_codes.ERROR, exit_codes.USAGE, exit_codes.NON_FINITE}
    assert exit_codes.BUG not in others | {exit_codes.CHECKPOINTED}


def _raise(exc: BaseException):
    raise exc


@pytest.mark.parametrize(
    "exc",
    [ConfigError("bad key X"), FileNotFoundError(2, "No such file", "/nope"), PermissionError("p")],
    ids=["ConfigError", "FileNotFoundError", "PermissionError"],
)
def test_input_error_is_one_line_exit_1(exc, capsys):
    assert run_command("opmask-x", _raise, exc) == exit_codes.ERROR
    err = capsys.readouterr().err
    assert err == f"opmask-x: error: {exc}\n"


@pytest.mark.parametrize(
    "exc",
    [ValueError("deliberate"), KeyError("k"), RuntimeError("r"), ConnectionResetError("c")],
    ids=["ValueError", "KeyError", "RuntimeError", "ConnectionResetError"],
)
def test_other_exception_is_a_bug_with_traceback(exc, capsys):
    assert run_command("opmask-x", _raise, exc) == exit_codes.BUG
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert f"{type(exc).__name__}" in err and f"exit code {exit_codes.BUG}" in err


def test_quiet_input_error_and_pass_through(capsys):
    assert run_command("p", _raise, DatasetError("d"), report_input=False) == exit_codes.ERROR
    assert capsys.readouterr().err == ""
    assert run_command("p", lambda: None) == exit_codes.OK
    assert run_command("p", lambda: exit_codes.NON_FINITE) == exit_codes.NON_FINITE
    with pytest.raises(SystemExit):
        run_command("p", _raise, SystemExit(2))
    capsys.readouterr()
    assert run_command("p", _raise, KeyboardInterrupt()) == exit_codes.INTERRUPTED
    assert capsys.readouterr().err == "p: interrupted (Ctrl-C)\n"  # one line, no traceback


# The model's forward raises a bare ValueError; then opmask-train runs as its console script.
FAULTY_MODEL = """
import sys
from opmask.modeling.meta_arch import OPMask
def forward(self, batched_inputs):
    raise ValueError("deliberate bug inside the model")
OPMask.forward = forward
from opmask.cli.train import main
sys.exit(main(sys.argv[1:]))
"""


def test_value_error_inside_the_model_is_a_bug(tmp_path, datasets_root):
    run = tmp_path / "run"
    env = dict(os.environ, OPMASK_DATASETS=datasets_root, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    proc = warm.run(
        [sys.executable, "-c", FAULTY_MODEL]
        + ["--config-file", SHAPES_OPMASK, "--output", str(run), *TINY],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == exit_codes.BUG, proc.stderr[-3000:]
    assert "Traceback (most recent call last)" in proc.stderr
    assert "ValueError: deliberate bug inside the model" in proc.stderr
    assert "opmask-train: error:" not in proc.stderr  # not reported as bad input
    # a bug keeps the run folder as it is (config.yaml, log), and lets go of it
    assert (run / "config.yaml").is_file() and not (run / "run.lock").exists()


def test_bad_config_key_is_still_one_line_exit_1(tmp_path, datasets_root):
    run = tmp_path / "run"
    env = dict(os.environ, OPMASK_DATASETS=datasets_root)
    proc = subprocess.run(
        [sys.executable, "-m", "opmask.cli.train", "--config-file", SHAPES_OPMASK]
        + ["--output", str(run), *TINY, "SOLVER.NOT_A_KEY", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == exit_codes.ERROR
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("opmask-train: error:") and "SOLVER.NOT_A_KEY" in lines[0]
    assert not run.exists()  # a failed start leaves nothing behind


def _buggy_rank() -> int:
    """A rank whose code has a bug on rank 1 only (module level: spawned ranks import it)."""
    from opmask.utils import comm

    fail = comm.get_rank() == 1
    return run_command("opmask-train", _raise, ValueError("rank 1 bug")) if fail else 0


def test_a_rank_bug_is_the_launch_exit_code(capfd):
    from opmask.run.spawn import launch

    assert launch(_buggy_rank, num_procs=2, device="cpu") == exit_codes.BUG
    assert "ValueError: rank 1 bug" in capfd.readouterr().err
