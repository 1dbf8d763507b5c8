"""Collapse detector (issue 11): after a short training on each synthetic family, OPMask's CAM box
head must call more than 5 % of the ground-truth boxes by an object class, not background for all.

A tiny setting of the shapes configs, trained by the real loop (``opmask.train.loop.train``) and
measured through the GT-box diagnostic. Issue 11's diagnosis: early in training most sampled RoIs
are background, so every head first learns the class prior and calls every GT box background; a
sound head is leaving that phase after these 30 iterations (the shares measured on each family:
docs/benchmarks.md; slow: about 10 s per family, 1 thread)."""

from __future__ import annotations

import pytest
import torch

from opmask.config import load_config
from opmask.data.build import build_gt_box_mapper
from opmask.data.catalog import load_datasets, strong_ids_from_cfg
from opmask.data.shapes import generate
from opmask.evaluation.gt_boxes import gt_box_diagnostics
from opmask.run.folder import RunFolder
from opmask.train.loop import train

from ..conftest import SHAPES_OPMASK

ITERS = 30
SETTING = [
    "MODEL.FPN.OUT_CHANNELS", "32",
    "MODEL.ROI_BOX_HEAD.CONV_DIM", "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "32",
    "MODEL.ROI_MASK_HEAD.NUM_CONV", "2",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16",
    "INPUT.MIN_SIZE_TRAIN", "(96,)",
    "INPUT.MIN_SIZE_TEST", "96",
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.MAX_ITER", str(ITERS),
    "SOLVER.WARMUP_ITERS", "10",
    "SOLVER.STEPS", f"({ITERS - 5},)",
    "DATALOADER.NUM_WORKERS", "0",
    "SEED", "0",
    "DATASETS.TEST", "()",  # the measurement below is the test's; no COCO evaluation
    "VIS_PERIOD", "0",
]  # fmt: skip


def _train_briefly(cfg, run_dir: str):
    """The model after ``ITERS`` steps of the real training loop (``opmask-train``'s)."""
    trained = {}
    train(cfg, RunFolder(run_dir), resume=False, after_step=lambda it, m, *_: trained.update(m=m))
    return trained["m"]


@torch.no_grad()
def _gt_box_predictions(model, cfg, dicts, strong) -> torch.Tensor:
    """Predicted labels (0 = background) of the box head on every GT box of ``dicts``, as the
    GT-box diagnostic (``opmask.evaluation.gt_boxes``) makes the box head see them."""
    mapper = build_gt_box_mapper(cfg)
    preds = []
    hook = model.box_predictor.register_forward_hook(lambda m, i, o: preds.append(o[0].argmax(1)))
    try:
        gt_box_diagnostics(model, dicts, mapper, strong)
    finally:
        hook.remove()
    return torch.cat(preds)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["hue", "texture", "shape", "oriented"])
def test_cam_box_head_does_not_call_every_gt_box_background(family, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    generate(
        str(tmp_path / "shapes"), seed=11, num_train=12, num_val=1, image_size=96, family=family
    )
    monkeypatch.setenv("OPMASK_DATASETS", str(tmp_path))
    cfg = load_config(SHAPES_OPMASK, SETTING)
    dicts, info = load_datasets(cfg.DATASETS.TRAIN)
    model = _train_briefly(cfg, str(tmp_path / "run"))
    strong = set(info.labels(strong_ids_from_cfg(cfg, info)))
    preds = _gt_box_predictions(model, cfg, dicts, strong)
    called = float((preds > 0).float().mean())
    assert called > 0.05, f"{family}: background for {(preds == 0).sum()} of {len(preds)} GT boxes"
