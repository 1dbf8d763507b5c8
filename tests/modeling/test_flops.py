"""FLOPs per stage (fvcore) against hand-computed golden values of the paper's heads."""

from __future__ import annotations

import os

import pytest

from opmask.config import load_config
from opmask.modeling import build_model
from opmask.modeling.flops import stage_macs

from ..conftest import REPO


def _paper(name: str):
    cfg = load_config(os.path.join(REPO, "configs", name), ["MODEL.DEVICE", "cpu"])
    return build_model(cfg)


@pytest.fixture(scope="module")
def opmask_macs():
    return stage_macs(_paper("opmask_R50_FPN_130k.yaml"), height=64, width=96, box_rois=3,
                      mask_rois=2)  # fmt: skip


def test_cam_box_head_is_the_papers_2_4_gflop_per_roi(opmask_macs):
    # 4 convs 3x3 on 7x7: 256->512->1024->1024->1024; + cls_score (81) and bbox_pred (324)
    convs = 49 * 9 * (256 * 512 + 512 * 1024 + 1024 * 1024 + 1024 * 1024)
    predictor = 1024 * (81 + 324)
    per_roi = opmask_macs["box_head"] / 3
    assert per_roi == pytest.approx(convs + predictor, rel=1e-3)  # + norms and pooling
    assert 2 * per_roi / 1e9 == pytest.approx(2.43, abs=0.01)  # the "2.4 GFLOP per RoI"


def test_mask_head_and_rpn_head_golden(opmask_macs):
    # CAM mask head: 7 convs 256->256 on 14x14, deconv 2x2 256->256 to 28x28, 1x1 predictor
    per_roi = 196 * 9 * 256 * 256 * 7 + 196 * 4 * 256 * 256 + 784 * 256
    assert opmask_macs["mask_head"] / 2 == pytest.approx(per_roi, rel=1e-3)
    # RPN head: 3x3 conv 256->256 + 1x1 (3 objectness + 12 deltas) on p2..p6 of a 64x96 input
    cells = sum((64 // s) * (96 // s) for s in (4, 8, 16, 32)) + 1 * 2  # p6: stride 64, ceil
    assert opmask_macs["rpn_head"] == pytest.approx(cells * 256 * (9 * 256 + 15), rel=1e-3)
    assert opmask_macs["total"] == pytest.approx(
        sum(v for k, v in opmask_macs.items() if k != "total")
    )


def test_baseline_box_head_golden():
    macs = stage_macs(_paper("mask_rcnn_ca_R50_FPN_130k.yaml"), height=64, width=64, box_rois=1,
                      mask_rois=0)  # fmt: skip
    assert macs["box_head"] == pytest.approx(256 * 49 * 1024 + 1024 * 1024 + 1024 * 405, rel=1e-3)
    assert macs["mask_head"] == 0 and "omp" not in macs
