"""Pins the torchvision internals we rely on; if torchvision moves them, this fails first."""

import torch
import torchvision

from opmask.modeling import tv_adapter as tv


def test_pinned_version_family():
    major, minor = (int(x) for x in torchvision.__version__.split(".")[:2])
    assert (major, minor) >= (0, 16)


def test_exports_only_the_backbone_plumbing():
    """Matching and box coding are ours (tests/modeling/test_matcher.py, test_box_regression.py)."""
    assert sorted(tv.__all__) == [
        "BackboneWithFPN",
        "FrozenBatchNorm2d",
        "ImageList",
        "LastLevelMaxPool",
    ]
    assert not hasattr(tv, "Matcher") and not hasattr(tv, "BoxCoder")


def test_image_list_and_frozen_batch_norm():
    images = tv.ImageList(torch.zeros(2, 3, 8, 8), [(8, 6), (5, 8)])
    assert images.image_sizes == [(8, 6), (5, 8)] and images.tensors.shape == (2, 3, 8, 8)
    bn = tv.FrozenBatchNorm2d(3)
    x = torch.randn(1, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(bn(x), x / (1 + bn.eps) ** 0.5)
