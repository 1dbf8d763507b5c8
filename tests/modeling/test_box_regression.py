"""Our ``Box2BoxTransform`` against torchvision's ``_utils.BoxCoder`` (the RoI heads' former box
coder): encode and decode must agree bit for bit in float32, edge cases included.

torchvision's private coder is imported here, in the test only, as the reference ours replaced in
``opmask.modeling.sampling`` / ``postprocess``; this test pins that the switch changed nothing.
"""

import math

import pytest
import torch
from torchvision.models.detection import _utils as tv_utils

from opmask.modeling.box_regression import DEFAULT_SCALE_CLAMP, Box2BoxTransform

WEIGHTS = [(10.0, 10.0, 5.0, 5.0), (1.0, 1.0, 1.0, 1.0), (10.0, 5.0, 2.5, 1.0)]
SIZES = [1, 3, 7, 8, 15, 16, 17, 31, 33, 100, 1001]  # odd lengths: vector loops and their tails


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape, dtype and bits (NaN included, which ``torch.equal`` calls unequal)."""
    return (
        a.shape == b.shape
        and a.dtype == b.dtype
        and torch.equal(a.view(-1).view(torch.int32), b.view(-1).view(torch.int32))
    )


def _boxes(g: torch.Generator, n: int, degenerate: bool = False) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * 800 - 100
    wh = torch.rand(n, 2, generator=g) ** 3 * 500 + 0.01
    if degenerate:
        wh[::5, 0] = 0  # zero width: encode divides by 0
        wh[1::7, 1] = 0
    return torch.cat([xy, xy + wh], 1)


def test_scale_clamp_is_torchvisions():
    assert DEFAULT_SCALE_CLAMP == tv_utils.BoxCoder((1.0, 1.0, 1.0, 1.0)).bbox_xform_clip
    assert DEFAULT_SCALE_CLAMP == math.log(1000.0 / 16)


@pytest.mark.parametrize("weights", WEIGHTS)
def test_encode_same_as_torchvision_bit_for_bit(weights):
    g = torch.Generator().manual_seed(1)
    tv, ours = tv_utils.BoxCoder(weights), Box2BoxTransform(weights)
    for n in SIZES:
        for degenerate in (False, True):
            # as sampling.box_targets: per image lists, concatenated
            gt = [_boxes(g, n, degenerate), _boxes(g, 5)]
            props = [_boxes(g, n, degenerate), _boxes(g, 5)]
            expected = torch.cat(tv.encode(gt, props))
            got = ours.get_deltas(torch.cat(props), torch.cat(gt))
            assert _bits_equal(got, expected), (n, degenerate)
    # a proposal equal to its GT box encodes to exact zeros
    b = _boxes(g, 9)
    assert torch.equal(ours.get_deltas(b, b), torch.zeros(9, 4))


def _deltas(g: torch.Generator, n: int, k: int) -> torch.Tensor:
    d = torch.randn(n, 4 * k, generator=g)
    d[::3] *= 50  # huge dw, dh: beyond log(1000/16) after dividing by the weights
    d[1::11, 2::4] = DEFAULT_SCALE_CLAMP * 5  # exactly at the clamp for ww = 5
    d[2::13, 3::4] = float("inf")
    d[3::13, 2::4] = float("-inf")
    d[4::17, 0::4] = float("nan")
    return d


@pytest.mark.parametrize("weights", WEIGHTS)
def test_decode_same_as_torchvision_bit_for_bit(weights):
    """torchvision's ``decode(deltas, list)`` is (R, K, 4); ours is (R, 4K), viewed the same."""
    g = torch.Generator().manual_seed(2)
    tv, ours = tv_utils.BoxCoder(weights), Box2BoxTransform(weights)
    for n in SIZES:
        for k in (1, 2, 9, 81):
            boxes = [_boxes(g, n, degenerate=True), _boxes(g, 3)]
            deltas = _deltas(g, n + 3, k)
            expected = tv.decode(deltas, boxes)
            assert expected.shape == (n + 3, k, 4)
            got = ours.apply_deltas(deltas, torch.cat(boxes)).view(n + 3, k, 4)
            assert _bits_equal(got, expected), (n, k)


def test_decode_of_no_boxes():
    """No proposals: torchvision's decode returns (0, 4K) unreshaped; ours (0, 4K) too."""
    tv, ours = tv_utils.BoxCoder(WEIGHTS[0]), Box2BoxTransform(WEIGHTS[0])
    deltas, boxes = torch.zeros(0, 12), torch.zeros(0, 4)
    assert _bits_equal(ours.apply_deltas(deltas, boxes), tv.decode(deltas, [boxes]))
