"""Collapse detector (issue 11): after a short training on each synthetic family, OPMask's CAM box
head must call more than 5 % of the ground-truth boxes by an object class, not background for all.

A tiny setting of the shapes configs. Issue 11's diagnosis: early in training most sampled RoIs
are background, so every head first learns the class prior and calls every GT box background; a
sound head is leaving that phase after these 30 iterations (the shares measured on each family:
docs/benchmarks.md; slow: about 25 s of CPU per family, 1 thread)."""

from __future__ import annotations

import pytest
import torch

from opmask.config import load_config
from opmask.data.build import build_train_loader, load_datasets, strong_ids_from_cfg
from opmask.data.mapper import DatasetMapper
from opmask.data.shapes import generate
from opmask.modeling import build_model
from opmask.train.solver import build_lr_scheduler, build_optimizer, clip_gradients

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
]  # fmt: skip


def _train_briefly(cfg, dicts, info):
    torch.manual_seed(0)
    strong = [info.category_ids.index(c) + 1 for c in strong_ids_from_cfg(cfg, info)]
    model = build_model(cfg, strong_classes=strong)
    opt = build_optimizer(cfg, model)
    sched = build_lr_scheduler(cfg, opt)
    loader = iter(build_train_loader(cfg, dicts, seed=0, rank=0, world_size=1, start_iter=0))
    model.train()
    for _ in range(ITERS):
        losses, _ = model(next(loader))
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        clip_gradients(cfg, [p for g in opt.param_groups for p in g["params"]])
        opt.step()
        sched.step()
    return model


@torch.no_grad()
def _gt_box_predictions(model, cfg, dicts) -> torch.Tensor:
    """Predicted labels (0 = background) of the box head on every GT box of ``dicts``."""
    mapper = DatasetMapper(
        is_train=True,
        min_sizes=[cfg.INPUT.MIN_SIZE_TEST],
        max_size=cfg.INPUT.MAX_SIZE_TEST,
        image_format=cfg.INPUT.FORMAT,
    )
    model.eval()
    preds = []
    for d in dicts:
        x = mapper(d)
        inst = x["instances"]
        if len(inst["boxes"]):
            out = model.segment_given_boxes(x["image"], inst["boxes"], inst["labels"])
            preds.append(out["class_logits"].argmax(1))
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
    model = _train_briefly(cfg, dicts, info)
    preds = _gt_box_predictions(model, cfg, dicts)
    called = float((preds > 0).float().mean())
    assert called > 0.05, f"{family}: background for {(preds == 0).sum()} of {len(preds)} GT boxes"
