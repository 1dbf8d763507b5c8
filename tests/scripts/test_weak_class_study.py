"""scripts/weak_class_study.py: its pure helpers, and that measuring through the loop's hook
leaves training exactly as it is."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from opmask.config import load_config
from opmask.data.catalog import load_datasets, strong_ids_from_cfg
from opmask.run.folder import RunFolder
from opmask.train.loop import train

from ..conftest import REPO, SHAPES_OPMASK, TINY

_spec = importlib.util.spec_from_file_location(
    "weak_class_study", os.path.join(REPO, "scripts", "weak_class_study.py")
)
study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(study)

NO_EVAL = ["DATASETS.TEST", "()", "VIS_PERIOD", "0", "SOLVER.MAX_ITER", "3"]


def test_split_mean_leaves_out_background_and_empty_splits():
    assert study.split_mean({0: 9.0, 1: 1.0, 2: 2.0, 3: 6.0}, {1}) == {"strong": 1.0, "weak": 4.0}
    assert study.split_mean({0: 9.0, 1: 1.0}, {1}) == {"strong": 1.0, "weak": None}


def test_gt_logit_stats_per_split():
    logits = torch.tensor([[0.0, 2.0, 1.0], [0.0, 1.0, 3.0], [5.0, 0.0, 1.0]])  # (3, K+1), K = 2
    labels = torch.tensor([1, 2, 2])
    out = study.gt_logit_stats(logits, labels, {1})
    p_bg = logits.softmax(1)[:, 0]
    assert out["acc_strong"] == 1.0 and out["acc_weak"] == 0.5
    assert out["gt_logit_strong"] == 2.0 and out["gt_logit_weak"] == 2.0
    assert out["margin_strong"] == 1.0 and out["margin_weak"] == -1.0  # 3 - 1, 1 - 5
    assert out["p_bg_strong"] == round(float(p_bg[0]), 4)
    assert out["p_bg_weak"] == round(float(p_bg[1:].mean()), 4)


def test_row_norms():
    w = torch.tensor([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0]])
    assert study.row_norms(w, {1}) == {"w_norm_bg": 5.0, "w_norm_strong": 1.0, "w_norm_weak": 10.0}


def _params(run: RunFolder) -> dict:
    return run.latest_checkpoint()[1]["model"]


def test_probe_measures_without_changing_training(shapes_env, tmp_path):
    cfg = load_config(SHAPES_OPMASK, TINY + NO_EVAL)
    dicts, info = load_datasets(cfg.DATASETS.TRAIN)
    strong = set(info.labels(strong_ids_from_cfg(cfg, info)))
    probe = study.Probe(cfg, dicts[:2], strong, every=1, out_path=str(tmp_path / "study.jsonl"))
    detached = {}

    def measure(it, model, batch, losses):
        probe(it, model, batch, losses)
        if it == 2:  # the same split with the prior detached where it enters the mask head
            handle = torch.nn.modules.module.register_module_forward_pre_hook(study._detach_prior)
            try:
                detached.update(study.gradient_split(model, batch))
            finally:
                handle.remove()

    plain, probed = RunFolder(str(tmp_path / "plain")), RunFolder(str(tmp_path / "probed"))
    train(cfg, plain, resume=False)
    train(cfg, probed, resume=False, after_step=measure)
    keys = ["total_loss", "loss_cls", "loss_mask", "loss_box_reg", "loss_rpn_cls"]
    assert [[m[k] for k in keys] for m in plain.read_metrics()] == [
        [m[k] for k in keys] for m in probed.read_metrics()
    ]
    a, b = _params(plain), _params(probed)
    assert all(torch.equal(a[k], b[k]) for k in a)  # weights and BN statistics alike
    assert [r["iter"] for r in probe.rows] == [1, 2, 3]
    row = probe.rows[-1]
    assert row["grad_box_head_mask"] > 0 and row["grad_box_head_rest"] > 0
    assert row["grad_cls_score_mask"] == 0  # the OMP uses cls_score's weights detached
    assert detached["grad_box_head_mask"] == 0 and detached["grad_box_head_rest"] > 0
    assert {"acc_strong", "gt_logit_weak", "w_norm_weak", "cls_acc_strong"} <= set(row)
    assert len(open(tmp_path / "study.jsonl").readlines()) == 3


@pytest.mark.parametrize("value", ["0", "-3"])
def test_every_must_be_positive(value, capsys):
    with pytest.raises(SystemExit) as e:
        study.main(["--train", "a.json:b", "--val", "a.json:b", "--output", "x", "--every", value])
    assert e.value.code == 2
    assert "--every" in capsys.readouterr().err
