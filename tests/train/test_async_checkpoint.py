"""Asynchronous checkpoints: the same bytes as a synchronous save at the same step although
training changes the tensors during the write; kill -9 mid-write leaves the previous one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from opmask.config import load_config
from opmask.modeling import build_model
from opmask.run.folder import RunFolder
from opmask.train.checkpoint import Checkpointer, CheckpointError, cpu_snapshot
from opmask.train.solver import build_lr_scheduler, build_optimizer
from tests import warm
from tests.conftest import REPO, SHAPES_OPMASK, TINY


def _step(model, optimizer, scheduler, seed: int) -> None:
    """One optimizer step with made-up gradients (fills the momentum buffers)."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.randn(p.shape, generator=g)
    optimizer.step()
    scheduler.step()


def _state(model, optimizer, scheduler, it: int) -> dict:
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "iteration": it,
        "meta": {"world_size": 1, "config": "x", "time": 1.5},
    }


def test_async_checkpoint_is_bitwise_the_synchronous_one(tmp_path):
    cfg = load_config(SHAPES_OPMASK, TINY)
    torch.manual_seed(0)
    model = build_model(cfg)
    optimizer, scheduler = build_optimizer(cfg, model), None
    scheduler = build_lr_scheduler(cfg, optimizer)
    _step(model, optimizer, scheduler, 1)
    sync = Checkpointer(str(tmp_path / "sync"), RunFolder.CHECKPOINTS)
    sync.save("model_0000001.pth", _state(model, optimizer, scheduler, 1))
    background = Checkpointer(str(tmp_path / "async"), RunFolder.CHECKPOINTS)
    background.save_async("model_0000001.pth", _state(model, optimizer, scheduler, 1))
    for seed in (2, 3):  # training goes on: weights and momenta change in place
        _step(model, optimizer, scheduler, seed)
    background.wait()
    names = ["model_0000001.pth", "model_0000001.pth.sha256", "last_checkpoint"]
    for name in names:
        a = (tmp_path / "sync" / name).read_bytes()
        assert a == (tmp_path / "async" / name).read_bytes(), name
    assert sorted(os.listdir(tmp_path / "async")) == sorted(names)  # no fragment left


def test_snapshot_copies_and_keeps_sharing():
    w = torch.arange(6.0).view(2, 3)
    state = {"a": w, "b": [w, 3], "c": ("x", torch.ones(2))}
    snap = cpu_snapshot(state)
    w += 1
    assert snap["a"].tolist() == [[0, 1, 2], [3, 4, 5]] and snap["b"][0] is snap["a"]
    assert snap["b"][1] == 3 and snap["c"][0] == "x" and isinstance(snap["c"], tuple)


def test_a_failed_background_write_is_raised_by_the_next_wait(tmp_path):
    (tmp_path / "models").write_text("a file where the folder should be")
    ckpt = Checkpointer(str(tmp_path / "models"), RunFolder.CHECKPOINTS)
    ckpt.save_async("model_0000001.pth", {"model": {}, "iteration": 1})
    with pytest.raises(CheckpointError, match="background checkpoint write failed"):
        ckpt.wait()
    ckpt.wait()  # reported once


CHILD = textwrap.dedent(
    """
    import sys, time, torch
    from opmask.train.checkpoint import Checkpointer
    from opmask.run.folder import RunFolder
    ckpt = Checkpointer(sys.argv[1], RunFolder.CHECKPOINTS)
    ckpt.save("model_0000001.pth", {"model": {"w": torch.ones(3)}, "iteration": 1})
    big = {"model": {"w": torch.ones(3), "big": torch.rand(60_000_000)}, "iteration": 3}
    ckpt.save_async("model_0000003.pth", big)
    print("STARTED", flush=True)
    time.sleep(60)
    """
)


@pytest.mark.parametrize("moment", ["serialising", "writing"])
def test_kill_9_during_an_async_write_leaves_the_previous_checkpoint(tmp_path, moment):
    folder = tmp_path / "models"
    child = warm.Popen(
        [sys.executable, "-c", CHILD, str(folder)],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    assert child.stdout.readline().strip() == "STARTED"
    deadline = time.time() + 60
    while moment == "writing" and not any(
        n.startswith(".tmp-model_0000003") for n in os.listdir(folder)
    ):
        assert time.time() < deadline, "the write never started"
        time.sleep(0.001)
    assert not (folder / "model_0000003.pth").exists()  # the kill lands before the rename
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert (folder / "last_checkpoint").read_text() == "model_0000001.pth"
    path, state = Checkpointer(str(folder), RunFolder.CHECKPOINTS).load_latest_valid()
    assert os.path.basename(path) == "model_0000001.pth" and state["iteration"] == 1
