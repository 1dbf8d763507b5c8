"""The training loop's own host synchronisations: one per steady-state iteration (the finite
check, the checkpoint agreement and the logged scalars travel in one tensor)."""

from __future__ import annotations

import os
import sys

import torch

from opmask.config import load_config
from opmask.run.folder import RunFolder
from opmask.train.loop import train
from opmask.utils import comm

from ..conftest import SHAPES_OPMASK, TINY

ENGINE = os.path.dirname(os.path.abspath(comm.__file__))
SYNCING = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")


def _count_engine_syncs(monkeypatch) -> list:
    """Wrap the tensor methods that copy to the host; record those called from opmask/engine."""
    calls = []
    for name in SYNCING:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *a, _name=name, _orig=original, **k):
            caller = sys._getframe(1).f_code.co_filename
            if os.path.dirname(os.path.abspath(caller)) == ENGINE:
                calls.append((_name, os.path.basename(caller), sys._getframe(1).f_lineno))
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return calls


def test_one_host_sync_per_iteration(shapes_env, tmp_path, monkeypatch):
    cfg = load_config(
        SHAPES_OPMASK,
        TINY
        + ["SOLVER.MAX_ITER", "5", "VIS_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD", "1000"]
        + ["SOLVER.CLIP_GRADIENTS.ENABLED", "True", "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "norm"]
        + ["MODEL.DEVICE", "cpu", "SEED", "1"],
    )
    calls = _count_engine_syncs(monkeypatch)
    per_iteration = []

    def after_step(it, model, batch, losses):  # boundaries of the steady-state iterations
        per_iteration.append(list(calls))
        calls.clear()

    train(cfg, RunFolder(str(tmp_path / "run")), resume=False, after_step=after_step)
    steady = per_iteration[1:]  # the first one also holds set-up work
    assert len(steady) == 4
    for syncs in steady:
        assert syncs == [("tolist", "comm.py", syncs[0][2])], syncs
