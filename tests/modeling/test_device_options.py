"""MODEL.CHANNELS_LAST and MODEL.COMPILE change speed, never results (CPU, within tolerance);
SOLVER.TF32 / CUDNN_BENCHMARK reach torch's backend flags."""

from __future__ import annotations

import pytest
import torch

from opmask.config import load_config
from opmask.modeling import build_model
from opmask.train.backends import configure_backends

from ..conftest import SHAPES_OPMASK, TINY


def _outputs(*opts: str):
    cfg = load_config(SHAPES_OPMASK, TINY + ["MODEL.DEVICE", "cpu", *opts])
    torch.manual_seed(0)
    model = build_model(cfg, strong_classes=[1, 2]).eval()
    g = torch.Generator().manual_seed(1)
    image = torch.rand(3, 96, 128, generator=g) * 255
    with torch.no_grad():
        feats = model.backbone(model.preprocess([{"image": image}]).tensors)
        boxes = torch.tensor([[4.0, 8.0, 60.0, 70.0], [30.0, 20.0, 120.0, 90.0]])
        seg = model.segment_given_boxes(image, boxes, torch.tensor([1, 2]))
    return model, feats, seg


def test_channels_last_gives_the_same_outputs():
    _, ref_feats, ref = _outputs()
    model, feats, seg = _outputs("MODEL.CHANNELS_LAST", "True")
    conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    for k in ref_feats:
        torch.testing.assert_close(feats[k], ref_feats[k], rtol=1e-4, atol=1e-4)
    for k in ("masks", "class_logits", "prior"):
        torch.testing.assert_close(seg[k], ref[k], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_compile_gives_the_same_outputs_and_state_dict_names():
    ref_model, ref_feats, ref = _outputs()
    model, feats, seg = _outputs("MODEL.COMPILE", "True")
    assert model.backbone._compiled_call_impl is not None  # compiled in place
    assert model.state_dict().keys() == ref_model.state_dict().keys()  # checkpoints unchanged
    for k in ref_feats:
        torch.testing.assert_close(feats[k], ref_feats[k], rtol=1e-4, atol=1e-4)
    for k in ("masks", "class_logits", "prior"):
        torch.testing.assert_close(seg[k], ref[k], rtol=1e-4, atol=1e-4)


def test_backend_flags():
    try:
        configure_backends(cudnn_benchmark=True, tf32=False)
        assert torch.backends.cudnn.benchmark is True
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
        configure_backends(cudnn_benchmark=False, tf32=True)
        assert torch.backends.cudnn.benchmark is False
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"
        assert torch.backends.cudnn.conv.fp32_precision == "tf32"
    finally:
        configure_backends(cudnn_benchmark=False, tf32=True)
