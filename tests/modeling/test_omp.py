import torch
import torch.nn.functional as F

from opmask.modeling.omp import object_mask_prior


def _inputs(n=5, c=16, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(n, c, 7, 7, generator=g, requires_grad=True)
    weight = torch.randn(k + 1, c, generator=g, requires_grad=True)
    classes = torch.randint(0, k + 1, (n,), generator=g)
    return maps, weight, classes


def test_equals_conv_with_all_classes_then_select():
    maps, weight, classes = _inputs()
    out = object_mask_prior(maps, weight, classes, size=14)
    cams = F.conv2d(maps, weight[:, :, None, None])  # (N, K+1, 7, 7)
    cam = cams[torch.arange(len(classes)), classes][:, None]
    lo = cam.amin(dim=(2, 3), keepdim=True)
    hi = cam.amax(dim=(2, 3), keepdim=True)
    expected = F.interpolate(
        (cam - lo) / (hi - lo), size=(14, 14), mode="bilinear", align_corners=False
    )
    assert out.shape == (5, 1, 14, 14)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_range_is_zero_to_one_with_extremes_reached():
    maps, weight, classes = _inputs(n=8)
    out = object_mask_prior(maps, weight, classes, size=7)  # no resize: extremes kept
    assert out.min() >= 0 and out.max() <= 1
    flat = out.flatten(1)
    torch.testing.assert_close(flat.min(1).values, torch.zeros(8))
    torch.testing.assert_close(flat.max(1).values, torch.ones(8))


def test_constant_map_gives_zeros_not_nan():
    maps = torch.ones(3, 4, 7, 7)
    out = object_mask_prior(maps, torch.randn(2, 4), torch.tensor([0, 1, 1]))
    assert torch.isfinite(out).all()
    assert torch.equal(out, torch.zeros(3, 1, 14, 14))


def test_empty_batch():
    out = object_mask_prior(
        torch.zeros(0, 8, 7, 7), torch.randn(3, 8), torch.zeros(0, dtype=torch.long)
    )
    assert out.shape == (0, 1, 14, 14)


def test_gradient_reaches_maps_but_not_class_weights():
    maps, weight, classes = _inputs()
    (object_mask_prior(maps, weight, classes) * torch.randn(5, 1, 14, 14)).sum().backward()
    assert weight.grad is None
    assert maps.grad is not None and maps.grad.abs().sum() > 0
