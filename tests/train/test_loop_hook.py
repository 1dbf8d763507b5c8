"""The training loop's ``after_step(iteration, model, batch, losses)`` hook: called once per
optimizer step, with the step's own iteration number, input batch and losses, also when a run
resumes."""

from __future__ import annotations

import torch

from opmask.config import load_config
from opmask.run.folder import RunFolder
from opmask.train.loop import train

from ..conftest import SHAPES_OPMASK, TINY

NO_EVAL = ["DATASETS.TEST", "()", "VIS_PERIOD", "0"]
LOSSES = ["loss_box_reg", "loss_cls", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"]


def _train(run: RunFolder, max_iter: int, resume: bool) -> list[tuple]:
    cfg = load_config(SHAPES_OPMASK, TINY + NO_EVAL + ["SOLVER.MAX_ITER", str(max_iter)])
    seen = []

    def after_step(it, model, batch, losses):
        assert model.training  # the module itself, not a DDP wrapper, between steps
        seen.append(
            (it, [x["image_id"] for x in batch], {k: float(v.detach()) for k, v in losses.items()})
        )

    train(cfg, run, resume=resume, after_step=after_step)
    return seen


def test_after_step_sees_every_iteration_once_with_its_batch_and_losses(shapes_env, tmp_path):
    run = RunFolder(str(tmp_path / "run"))
    first = _train(run, 2, resume=False)
    resumed = _train(run, 3, resume=True)
    seen = first + resumed
    assert [it for it, _, _ in first] == [0, 1]
    assert [it for it, _, _ in resumed] == [2]
    assert all(len(ids) == 2 for _, ids, _ in seen)  # SOLVER.IMS_PER_BATCH images per step
    metrics = run.read_metrics()
    assert [m["iteration"] for m in metrics] == [0, 1, 2]
    for (it, _, losses), m in zip(seen, metrics):  # the losses the loop logged for that step
        assert sorted(losses) == LOSSES
        assert [losses[k] for k in LOSSES] == [m[k] for k in LOSSES], it
        assert torch.isclose(torch.tensor(sum(losses.values())), torch.tensor(m["total_loss"]))
