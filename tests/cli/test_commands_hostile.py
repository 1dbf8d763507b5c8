"""Commands given a run whose config no longer matches its checkpoint, or that lacks what the
command needs: one line on stderr naming the culprit, exit 1, nothing in the run folder changed."""

from __future__ import annotations

import re

import torch

from opmask.cli.diagnose import main as diagnose
from opmask.config import load_config
from opmask.modeling import build_model
from opmask.run.folder import RunFolder
from opmask.train.checkpoint import Checkpointer

from ..conftest import SHAPES_OPMASK, TINY, run_cli

CPU = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""]
NARROW = ["MODEL.ROI_MASK_HEAD.CONV_DIM", "16"]  # the run was trained with 32 (TINY)
MISMATCH = (
    r"checkpoint {} does not match the config: mask_head\.\S+ \(32, \d+, 3, 3\) in the checkpoint "
    r"vs \(16, \d+, 3, 3\) in the model; .+; \d+ more"
)


def _run_folder(tmp_path, *opts):
    """config.yaml (the TINY shapes OPMask config and ``opts``) and models/model_final.pth of a
    model built with the TINY config."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(load_config(SHAPES_OPMASK, [*TINY, *CPU, *opts]).dump())
    torch.manual_seed(0)
    model = build_model(load_config(SHAPES_OPMASK, [*TINY, *CPU]))
    Checkpointer(str(run / "models"), RunFolder.CHECKPOINTS).save(
        "model_final.pth", {"model": model.state_dict(), "iteration": 6}
    )
    return run


def _files(folder):
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_eval_only_with_a_changed_architecture_key_is_one_line(datasets_root, tmp_path):
    run = _run_folder(tmp_path)
    before = _files(run)
    argv = ["opmask.cli.train", "--config-file", SHAPES_OPMASK, "--output", str(run)]
    proc = run_cli([*argv, "--eval-only", *TINY, *CPU, *NARROW], datasets_root, str(tmp_path))
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "load_state_dict" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    checkpoint = re.escape(str(run / "models" / "model_final.pth"))
    assert len(errors) == 1, proc.stderr
    assert re.fullmatch("opmask-train: error: " + MISMATCH.format(checkpoint), errors[0]), errors
    assert all(p.read_bytes() == data for p, data in before.items())
    assert not (run / "inference").exists()


def test_diagnose_names_the_mismatch_and_the_missing_test_set(shapes_env, tmp_path, capsys):
    run = _run_folder(tmp_path, *NARROW)  # config.yaml edited after training
    before = _files(run)
    assert diagnose([str(run)]) == 1
    err = capsys.readouterr().err
    checkpoint = re.escape(str(run / "models" / "model_final.pth"))
    assert re.fullmatch("opmask-diagnose: error: " + MISMATCH.format(checkpoint) + "\n", err), err
    assert _files(run) == before

    (run / "config.yaml").write_text(
        load_config(SHAPES_OPMASK, [*TINY, *CPU, "DATASETS.TEST", "()"]).dump()
    )
    assert diagnose([str(run)]) == 1
    assert capsys.readouterr().err == (
        f"opmask-diagnose: error: {run}/config.yaml: DATASETS.TEST is empty (the diagnostic runs "
        "on the run's first test set)\n"
    )
    assert diagnose([str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err == (
        f"opmask-diagnose: error: {tmp_path}/nope: no config.yaml (not a run folder of "
        "opmask-train)\n"
    )
    assert not (run / "inference").exists()
