import os

import numpy as np
import pytest
import torch
from torchvision.ops import roi_align

from opmask.config import load_config
from opmask.data.mapper import DatasetMapper
from opmask.modeling import build_model
from opmask.modeling.box_heads import CAMBoxHead
from opmask.modeling.poolers import ROIPooler

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOSSES = {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"}


def _batch(n=1, size=128):
    torch.manual_seed(0)
    out = []
    for i in range(n):
        masks = torch.zeros(2, size, size, dtype=torch.uint8)
        masks[0, 20:60, 30:90] = 1
        masks[1, 70:110, 10:50] = 1
        out.append(
            {
                "image": torch.rand(3, size, size) * 255,
                "height": size,
                "width": size,
                "image_id": i,
                "instances": {
                    "boxes": torch.tensor([[30.0, 20, 90, 60], [10.0, 70, 50, 110]]),
                    "labels": torch.tensor([1, 62]),
                    "masks": masks,
                    "has_mask": torch.tensor([True, True]),
                },
            }
        )
    return out


def test_r50_opmask_forward_backward_finite_losses():
    cfg = load_config(
        os.path.join(REPO, "configs", "opmask_R50_FPN_130k.yaml"),
        ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""],
    )
    model = build_model(cfg, strong_classes=[1])  # label 62 is weak
    model.train()
    losses, extras = model(_batch())
    assert set(losses) == LOSSES
    assert all(torch.isfinite(v) for v in losses.values())
    fg = len(extras["labels"])  # what the loop visualises: one row per foreground RoI
    assert fg > 0 and extras["prior"].shape == (fg, 1, 14, 14)
    assert extras["mask"].shape == (fg, 1, 28, 28) and extras["gt"].shape == (fg, 28, 28)
    assert 0 <= extras["prior"].min() and extras["prior"].max() <= 1
    sum(losses.values()).backward()
    grads = [p.grad for p in model.mask_head.parameters()]
    assert all(g is not None for g in grads)
    # the mask loss reaches the CAM box head through the OMP
    assert model.box_head.convs[0][0].weight.grad.abs().sum() > 0


def test_inference_returns_pasted_masks_and_uses_prior():
    cfg = load_config(
        os.path.join(REPO, "configs", "shapes", "opmask_R18_shapes.yaml"),
        ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"],
    )
    model = build_model(cfg).eval()
    assert model.use_prior
    batch = [{"image": torch.rand(3, 96, 128) * 255, "height": 192, "width": 256, "image_id": 0}]
    with torch.no_grad():
        out = model(batch)[0]
    d = len(out["boxes"])
    assert d > 0 and out["masks"].shape == (d, 1, 192, 256)
    assert out["boxes"][:, 2].max() <= 256 and out["boxes"][:, 3].max() <= 192
    assert ((out["masks"] >= 0) & (out["masks"] <= 1)).all()


def test_baseline_has_no_prior_and_trains_on_all_weak_batch():
    cfg = load_config(os.path.join(REPO, "configs", "shapes", "baseline_R18_shapes.yaml"))
    model = build_model(cfg, strong_classes=[1, 2])
    assert not model.use_prior
    batch = _batch()
    batch[0]["instances"]["labels"] = torch.tensor([5, 6])  # both weak
    model.train()
    losses, _ = model(batch)
    assert losses["loss_mask"].item() == 0.0
    losses["loss_mask"].backward()
    assert all(torch.count_nonzero(p.grad) == 0 for p in model.mask_head.parameters())


def test_cam_box_head_widths_double_up_to_conv_dim():
    head = CAMBoxHead(in_channels=256, num_conv=4, conv_dim=1024)
    widths = [seq[0].out_channels for seq in head.convs]
    assert widths == [512, 1024, 1024, 1024]
    maps, pooled = head(torch.randn(3, 256, 7, 7))
    assert maps.shape == (3, 1024, 7, 7) and pooled.shape == (3, 1024)


def test_pooler_is_aligned_roi_align_on_the_assigned_level():
    feats = [torch.randn(1, 4, 32, 32), torch.randn(1, 4, 16, 16)]
    pooler = ROIPooler(output_size=7, strides=[4, 8], aligned=True)
    small = torch.tensor([[4.0, 4.0, 40.0, 40.0]])  # sqrt(area) 36 -> level 2 (stride 4)
    out = pooler(feats, [small])
    rois = torch.tensor([[0.0, 4.0, 4.0, 40.0, 40.0]])
    torch.testing.assert_close(out, roi_align(feats[0], rois, 7, 0.25, 0, aligned=True))


@pytest.mark.parametrize("freeze_at,frozen", [(0, 0), (2, 2)])
def test_freeze_at(freeze_at, frozen):
    cfg = load_config(
        os.path.join(REPO, "configs", "shapes", "baseline_R18_shapes.yaml"),
        ["MODEL.BACKBONE.FREEZE_AT", str(freeze_at)],
    )
    body = build_model(cfg).backbone.fpn.body
    assert body.conv1.weight.requires_grad == (frozen == 0)
    assert body.layer1[0].conv1.weight.requires_grad == (frozen < 2)
    assert body.layer2[0].conv1.weight.requires_grad


@pytest.mark.parametrize("norm", ["", "BN", "GN"])
def test_fpn_norm_follows_every_fpn_conv(norm):
    cfg = load_config(
        os.path.join(REPO, "configs", "shapes", "baseline_R18_shapes.yaml"),
        ["MODEL.FPN.NORM", norm],
    )
    backbone = build_model(cfg).backbone.train()
    fpn = backbone.fpn.fpn
    norms = [b[1] for b in [*fpn.inner_blocks, *fpn.layer_blocks] if len(b) > 1]
    assert len(norms) == (0 if norm == "" else 8)  # 4 lateral + 4 output convs
    p2 = backbone(torch.rand(4, 3, 64, 64) * 100)["p2"]  # (4, 64, 16, 16)
    if norm == "BN":  # training-mode BN: each channel standardised over the batch
        torch.testing.assert_close(p2.mean(dim=(0, 2, 3)), torch.zeros(64), atol=1e-4, rtol=0)
        torch.testing.assert_close(p2.std(dim=(0, 2, 3)), torch.ones(64), atol=1e-2, rtol=0)


def test_mapper_output_feeds_model(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((50, 60, 3), np.uint8)).save(tmp_path / "a.png")
    d = {
        "file_name": str(tmp_path / "a.png"),
        "height": 50,
        "width": 60,
        "image_id": 1,
        "annotations": [],
    }
    x = DatasetMapper(is_train=True, min_sizes=[64], max_size=200)(d)
    assert x["image"].shape == (3, 64, 77) and x["instances"]["boxes"].shape == (0, 4)
