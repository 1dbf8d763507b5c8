"""engine/entry: the one rank entry point. ``prepare`` validates before it claims the folder,
``finish`` cleans up after bad input only, ``rank_main`` maps a rank's outcome to an exit code."""

from __future__ import annotations

import pytest

from opmask.config import ConfigError
from opmask.run import entry
from opmask.run.claim import RunFolderError
from opmask.run.folder import RunFolder
from opmask.utils import exit_codes
from tests.conftest import SHAPES_OPMASK, TINY


def _load(run_dir, *opts):
    return entry.load(SHAPES_OPMASK, [*TINY, *opts], exp_id="x", output_dir=str(run_dir))


def test_load_names_the_folder(tmp_path, shapes_env):
    cfg, run_dir = _load(tmp_path / "run")
    assert run_dir == str(tmp_path / "run") and cfg.is_frozen()
    cfg, derived = entry.load(SHAPES_OPMASK, ["OUTPUT_DIR", str(tmp_path)], exp_id="e1")
    assert derived.startswith(str(tmp_path)) and derived.endswith("_e1")


def test_prepare_claims_and_finish_cleans_up_after_bad_input(tmp_path, shapes_env):
    cfg, run_dir = _load(tmp_path / "run")
    final, lock = entry.prepare(cfg, run_dir, resume=False, eval_only=False, world_size=1)
    run = RunFolder(run_dir)
    assert final.SEED >= 0 and run.is_run() and lock is not None
    assert entry.finish(lock, exit_codes.ERROR) == exit_codes.ERROR
    assert not (tmp_path / "run").exists()  # a failed start leaves nothing behind


def test_finish_keeps_the_folder_after_a_bug(tmp_path, shapes_env):
    cfg, run_dir = _load(tmp_path / "run")
    _, lock = entry.prepare(cfg, run_dir, resume=False, eval_only=False, world_size=1)
    assert entry.finish(lock, exit_codes.BUG) == exit_codes.BUG
    assert RunFolder(run_dir).is_run() and not (tmp_path / "run" / "run.lock").exists()
    with pytest.raises(RunFolderError):  # it holds a run: not started over without --resume
        entry.prepare(cfg, run_dir, resume=False, eval_only=False, world_size=1)


def test_prepare_validates_before_claiming(tmp_path, shapes_env):
    cfg, run_dir = _load(tmp_path / "run")  # SOLVER.IMS_PER_BATCH 2
    with pytest.raises(ConfigError, match="not a multiple of the 3 processes"):
        entry.prepare(cfg, run_dir, resume=False, eval_only=False, world_size=3)
    assert not (tmp_path / "run").exists()


def test_rank_main_maps_bad_input_to_one_line(tmp_path, shapes_env, capsys):
    """Evaluating a folder with no checkpoint and no MODEL.WEIGHTS: exit 1, one line."""
    cfg, run_dir = _load(tmp_path / "run")
    (tmp_path / "run").mkdir()
    code = entry.rank_main(cfg.dump(), run_dir, False, True)
    assert code == exit_codes.ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("opmask-train: error: nothing to evaluate")
