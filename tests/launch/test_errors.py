"""The launcher's commands map errors as every console script does (``exit_codes.run_command``):
bad input is one line and exit 1, anything else a traceback and ``exit_codes.BUG``."""

from __future__ import annotations

import pytest

from opmask.utils import exit_codes
from opmask.utils.errors import OPMaskInputError
from opmask_launch import submit, sweep
from opmask_launch.executor import LaunchError
from tests.conftest import SHAPES_OPMASK

DRY_RUN = ["--config-file", SHAPES_OPMASK, "--dry-run", "--local", "--no-data-check"]


def _boom(*args, **kwargs):
    raise ValueError("deliberate bug")


def test_launch_errors_are_input_errors():
    assert issubclass(LaunchError, OPMaskInputError)


def test_submit_bad_input_is_one_line_and_exit_1(capsys):
    assert submit.main([*DRY_RUN, "--profile", "no-such-profile"]) == exit_codes.ERROR
    err = capsys.readouterr().err
    assert err.startswith("opmask-submit: error: cluster profile not found:"), err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_submit_bug_is_a_traceback_and_exit_bug(monkeypatch, capsys):
    monkeypatch.setattr(submit, "check_points", _boom)
    assert submit.main(DRY_RUN) == exit_codes.BUG
    err = capsys.readouterr().err
    assert "Traceback" in err and "ValueError: deliberate bug" in err


@pytest.mark.parametrize("command", ["status", "collect"])
def test_sweep_bad_input_and_bug(command, monkeypatch, capsys, tmp_path):
    assert sweep.main([command, str(tmp_path)]) == exit_codes.ERROR
    err = capsys.readouterr().err
    assert err == f"opmask-sweep: error: no sweep manifest at {tmp_path / sweep.MANIFEST}\n"
    monkeypatch.setattr(sweep, "load_manifest", _boom)
    assert sweep.main([command, str(tmp_path)]) == exit_codes.BUG
    err = capsys.readouterr().err
    assert "Traceback" in err and "ValueError: deliberate bug" in err
