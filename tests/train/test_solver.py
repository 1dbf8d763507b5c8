"""Gradient clipping as Detectron2 v0.6 (``detectron2/solver/build.py``), on fixed gradients."""

from __future__ import annotations

import pytest
import torch

from opmask.config import get_cfg, load_config
from opmask.train.solver import clip_gradients, lr_factor
from tests.conftest import SHAPES_OPMASK


def _params():
    """Two parameters: gradient norms 2.5 and 10 (global norm sqrt(106.25) = 10.3078)."""
    a = torch.nn.Parameter(torch.zeros(2))
    b = torch.nn.Parameter(torch.zeros(2, 2))
    a.grad = torch.tensor([1.5, 2.0])
    b.grad = torch.tensor([[6.0, 8.0], [0.0, 0.0]])
    return [a, b]


def _clip(clip_type: str):
    cfg = get_cfg()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = clip_type
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 5.0
    params = _params()
    clip_gradients(cfg, params)
    return [p.grad for p in params]


def test_norm_clips_each_parameter_separately():
    """Detectron2 0.6 calls ``clip_grad_norm_(p, CLIP_VALUE, NORM_TYPE)`` per parameter: the
    parameter under the threshold keeps its gradient bit for bit, the other is scaled by
    5 / (10 + 1e-6) on its own."""
    a, b = _clip("norm")
    assert torch.equal(a, torch.tensor([1.5, 2.0]))
    assert b.flatten().tolist() == pytest.approx([2.9999997, 3.9999996, 0.0, 0.0], rel=1e-6)
    assert b.norm() <= 5.0


def test_full_model_clips_the_global_norm():
    """One factor 5 / (sqrt(106.25) + 1e-6) = 0.4850712 for every parameter."""
    a, b = _clip("full_model")
    assert a.tolist() == pytest.approx([0.7276068, 0.9701424], rel=1e-6)
    assert b.flatten().tolist() == pytest.approx([2.9104272, 3.8805696, 0.0, 0.0], rel=1e-6)
    assert torch.cat([a, b.flatten()]).norm() == pytest.approx(5.0, rel=1e-6)


def test_value_clips_each_element():
    a, b = _clip("value")
    assert torch.equal(a, torch.tensor([1.5, 2.0]))
    assert torch.equal(b, torch.tensor([[5.0, 5.0], [0.0, 0.0]]))


def test_disabled_leaves_gradients():
    cfg = get_cfg()
    params = _params()
    clip_gradients(cfg, params)
    assert torch.equal(params[1].grad, torch.tensor([[6.0, 8.0], [0.0, 0.0]]))


def test_shapes_demo_clips_the_global_norm():
    """The demo configs were tuned with the global norm; they keep it under its own name."""
    cfg = load_config(SHAPES_OPMASK, [])
    assert cfg.SOLVER.CLIP_GRADIENTS.ENABLED
    assert cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE == "full_model"


def test_step_inside_the_warmup_lowers_the_line_end():
    """Detectron2 v0.6 (``WarmupParamScheduler``): linear from WARMUP_FACTOR x the iteration-0
    value (0.001) to the value at WARMUP_ITERS (0.1, after the step at 5), then the steps."""
    kw = dict(steps=(5,), gamma=0.1, warmup_iters=10, warmup_factor=0.001)
    got = [lr_factor(it, **kw) for it in (0, 2, 4, 6, 8, 10, 11)]
    assert got == pytest.approx([0.001, 0.0208, 0.0406, 0.0604, 0.0802, 0.1, 0.1], rel=1e-12)
    constant = [lr_factor(it, warmup_method="constant", **kw) for it in (0, 6, 9, 10)]
    assert constant == pytest.approx([0.001, 0.001, 0.001, 0.1], rel=1e-12)


def test_warmup_without_a_step_inside():
    """The usual case: 0.001 x (1 - it/1000) + it/1000, then x0.1 at each step."""
    kw = dict(steps=(60000, 80000), gamma=0.1, warmup_iters=1000, warmup_factor=0.001)
    got = [lr_factor(it, **kw) for it in (0, 500, 999, 1000, 59999, 60000, 80000)]
    assert got == pytest.approx([0.001, 0.5005, 0.999001, 1.0, 1.0, 0.1, 0.01], rel=1e-12)
