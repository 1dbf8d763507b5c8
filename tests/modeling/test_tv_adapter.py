"""Pins the torchvision internals we rely on; if torchvision moves them, this fails first."""

import torch
import torchvision

from opmask.modeling import tv_adapter as tv


def test_pinned_version_family():
    major, minor = (int(x) for x in torchvision.__version__.split(".")[:2])
    assert (major, minor) >= (0, 16)


def test_box_coder_round_trip():
    coder = tv.BoxCoder((10.0, 10.0, 5.0, 5.0))
    props = torch.tensor([[10.0, 10.0, 50.0, 40.0]])
    gt = torch.tensor([[12.0, 8.0, 55.0, 44.0]])
    deltas = coder.encode([gt], [props])[0]
    torch.testing.assert_close(coder.decode(deltas, [props]).reshape(-1, 4), gt)


def test_matcher_constants():
    assert tv.Matcher.BELOW_LOW_THRESHOLD == -1 and tv.Matcher.BETWEEN_THRESHOLDS == -2
