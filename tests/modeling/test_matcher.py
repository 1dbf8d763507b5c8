"""Our ``Matcher`` against torchvision's ``_utils.Matcher`` as the RoI heads used it (one IoU
threshold, no low-quality matches): the matched indices and bands must agree bit for bit.

torchvision's private matcher is imported here, in the test only, as the reference ours replaced
in ``opmask.modeling.sampling``; this test pins that the switch changed nothing.
"""

import pytest
import torch
from torchvision.models.detection import _utils as tv_utils
from torchvision.ops import box_iou

from opmask.modeling.matcher import Matcher


def _ours_as_torchvision(iou: torch.Tensor, thresh: float) -> torch.Tensor:
    """Our (matches, labels) in torchvision's encoding: -1 below, -2 between the thresholds."""
    matches, labels = Matcher([thresh, thresh], [0, -1, 1])(iou)
    out = matches.clone()
    out[labels == 0] = tv_utils.Matcher.BELOW_LOW_THRESHOLD
    out[labels == -1] = tv_utils.Matcher.BETWEEN_THRESHOLDS
    return out


def _boxes(g: torch.Generator, n: int) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * 100
    wh = torch.rand(n, 2, generator=g) * 60 + 1
    return torch.cat([xy, xy + wh], 1)


def _cases():
    """(name, (G, R) float32 IoU matrix) pairs covering the edge cases."""
    g = torch.Generator().manual_seed(0)
    for i, (ng, nr) in enumerate([(1, 1), (1, 50), (3, 7), (5, 300), (20, 1000), (40, 17)]):
        gt = _boxes(g, ng)
        # proposals: jittered copies of the GT (high IoU) and random boxes (low IoU)
        near = gt[torch.randint(ng, (nr,), generator=g)] + torch.randn(nr, 4, generator=g) * 4
        props = torch.where(torch.rand(nr, 1, generator=g) < 0.5, near, _boxes(g, nr))
        yield f"random{i}", box_iou(gt, torch.cat([props, gt]))
    # ties: IoU on a coarse grid, many equal values across GT rows and exactly on the threshold
    yield "ties", torch.randint(0, 5, (6, 400), generator=g).float() / 8
    yield "all_equal", torch.full((4, 30), 0.5)
    yield "zeros", torch.zeros(3, 40)
    zero_rows = torch.rand(5, 60, generator=g)
    zero_rows[[0, 2, 4]] = 0  # GT that overlaps nothing
    yield "zero_rows", zero_rows
    zero_cols = torch.rand(4, 60, generator=g)
    zero_cols[:, ::3] = 0  # proposals that overlap no GT
    yield "zero_cols", zero_cols
    # degenerate (zero-area) boxes: torchvision's box_iou gives 0/0 = NaN for them
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 5.0, 5.0]])
    props = torch.tensor([[5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 10.0, 10.0], [2.0, 2.0, 9.0, 9.0]])
    yield "degenerate_nan", box_iou(gt, props)
    yield "boundaries", torch.tensor([[0.5, 0.49999997, 0.50000006, 0.0, 1.0, 0.25]])


@pytest.mark.parametrize("thresh", [0.5, 0.3, 0.0, 1.0])
def test_same_as_torchvision_matcher_bit_for_bit(thresh):
    for name, iou in _cases():
        expected = tv_utils.Matcher(thresh, thresh, allow_low_quality_matches=False)(iou.clone())
        got = _ours_as_torchvision(iou.clone(), thresh)
        assert got.dtype == expected.dtype == torch.int64, name
        assert torch.equal(got, expected), name


def test_empty_gt_or_proposals():
    """torchvision's refuses an empty matrix (so the sampler keeps its own no-GT branch); ours
    puts every proposal in the lowest band."""
    for shape in [(0, 5), (3, 0), (0, 0)]:
        with pytest.raises(ValueError):
            tv_utils.Matcher(0.5, 0.5)(torch.zeros(shape))
        matches, labels = Matcher([0.5, 0.5], [0, -1, 1])(torch.zeros(shape))
        assert matches.tolist() == [0] * shape[1] and labels.tolist() == [0] * shape[1]
