"""Anchors against golden values written from Detectron2 v0.6's DefaultAnchorGenerator formulas:
cell anchor (size s, ratio r = h/w): w = sqrt(s^2 / r), h = r w, centred at 0, not rounded;
anchor k of location (y, x) on a level of stride S: cell k + ((x + OFFSET) S, (y + OFFSET) S)."""

import math

import pytest
import torch

from opmask.config import load_config
from opmask.modeling.anchor_generator import AnchorGenerator, cell_anchors
from opmask.modeling.build import build_rpn

from ..conftest import SHAPES_OPMASK

STRIDES = [4, 8, 16, 32, 64]
SIZES = [[32], [64], [128], [256], [512]]


def _generator(offset=0.0):
    return AnchorGenerator(
        sizes=SIZES, aspect_ratios=[[0.5, 1.0, 2.0]], strides=STRIDES, offset=offset
    )


def _features(h, w):
    """Feature maps of the FPN for an (h, w) padded input: P2-P5 at h/4..h/32, P6 = ceil(P5/2)."""
    sizes = [(h // s, w // s) for s in STRIDES[:4]]
    sizes.append((math.ceil(sizes[-1][0] / 2), math.ceil(sizes[-1][1] / 2)))
    return [torch.zeros(1, 1, *hw) for hw in sizes]


def test_cell_anchors_are_not_rounded_and_ordered_sizes_then_ratios():
    got = cell_anchors([32, 64], [0.5, 1.0, 2.0])
    a, b = 32 / math.sqrt(2), 16 / math.sqrt(2)  # 22.627417, 11.313708
    want = torch.tensor(
        [
            [-a, -b, a, b],  # size 32, ratio 0.5: 45.25 x 22.63
            [-16, -16, 16, 16],
            [-b, -a, b, a],
            [-2 * a, -2 * b, 2 * a, 2 * b],  # size 64, ratio 0.5
            [-32, -32, 32, 32],
            [-2 * b, -2 * a, 2 * b, 2 * a],
        ]
    )
    torch.testing.assert_close(got, want)
    assert got[0, 2].item() == pytest.approx(22.627417, abs=1e-5)  # torchvision rounds to 23


# (padded h, w) -> per level (H, W); the last anchor is cell 2 (ratio 2) at ((W-1) S, (H-1) S).
GOLDEN = {
    (800, 1216): [(200, 304), (100, 152), (50, 76), (25, 38), (13, 19)],
    (480, 640): [(120, 160), (60, 80), (30, 40), (15, 20), (8, 10)],
}
LAST_CENTRES = {  # (x, y) of the last location per level, = ((W-1) S, (H-1) S)
    (800, 1216): [(1212, 796), (1208, 792), (1200, 784), (1184, 768), (1152, 768)],
    (480, 640): [(636, 476), (632, 472), (624, 464), (608, 448), (576, 448)],
}


@pytest.mark.parametrize("hw", list(GOLDEN))
def test_golden_counts_first_and_last_anchor_per_level(hw):
    anchors = _generator()(_features(*hw))
    for level, (a, (fh, fw), (cx, cy), size) in enumerate(
        zip(anchors, GOLDEN[hw], LAST_CENTRES[hw], [s[0] for s in SIZES])
    ):
        assert a.shape == (fh * fw * 3, 4), level
        long, short = size / math.sqrt(2) / 1, size / math.sqrt(2) / 2  # half sides of ratio 0.5
        torch.testing.assert_close(a[0], torch.tensor([-long, -short, long, short]))
        want_last = torch.tensor([cx - short, cy - long, cx + short, cy + long])
        torch.testing.assert_close(a[-1], want_last)


@pytest.mark.parametrize("hw", list(GOLDEN))
def test_p6_stride_is_64_whatever_the_padded_size(hw):
    """torchvision derives P6's stride as image // grid (60 at 480 and 800 px); it is 64."""
    p6 = _generator()(_features(*hw))[4]
    fh, fw = GOLDEN[hw][4]
    centres = ((p6[:, :2] + p6[:, 2:]) / 2).view(fh, fw, 3, 2)[:, :, 1]  # (H, W, 2)
    assert torch.equal(centres[0, 1] - centres[0, 0], torch.tensor([64.0, 0.0]))
    assert torch.equal(centres[1, 0] - centres[0, 0], torch.tensor([0.0, 64.0]))


def test_order_is_location_major_row_by_row_then_cell_anchors():
    anchors = _generator(offset=0.5)(_features(480, 640))[1]  # P3, stride 8, (60, 80)
    cells = cell_anchors([64], [0.5, 1.0, 2.0])
    y, x = 7, 13
    k = (y * 80 + x) * 3
    shift = torch.tensor([(x + 0.5) * 8, (y + 0.5) * 8] * 2)
    torch.testing.assert_close(anchors[k : k + 3], cells + shift)


def test_offset_moves_the_first_centre_to_half_a_stride():
    a = _generator(offset=0.5)(_features(480, 640))
    for level, stride in enumerate(STRIDES):
        c = (a[level][1, :2] + a[level][1, 2:]) / 2
        assert c.tolist() == [stride / 2, stride / 2]
    with pytest.raises(ValueError, match=r"OFFSET must be in \[0, 1\)"):
        _generator(offset=1.0)


def test_broadcast_and_level_count_errors():
    one = AnchorGenerator(sizes=[32, 64], aspect_ratios=[1.0], strides=[4, 8])  # flat: all levels
    assert one.num_anchors == [2, 2]
    with pytest.raises(ValueError, match="SIZES: 3 lists for 2 feature levels"):
        AnchorGenerator(sizes=[[1], [2], [3]], aspect_ratios=[1.0], strides=[4, 8])


def test_build_rpn_uses_config_strides_sizes_and_offset():
    cfg = load_config(SHAPES_OPMASK, ["MODEL.ANCHOR_GENERATOR.OFFSET", "0.5"])
    gen = build_rpn(cfg, 8).anchor_generator
    assert gen.strides == STRIDES and gen.offset == 0.5
    assert gen.num_anchors == [3] * 5
