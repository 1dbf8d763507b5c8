"""Detectron2's grid_sample paste: exact shapes at every box size, bounded memory."""

import math

import pytest
import torch
import torch.nn.functional as F

from opmask.modeling import mask_paste
from opmask.modeling.mask_paste import GPU_MEM_LIMIT, num_chunks, paste_masks_in_image

M = 28


A = 0.8  # the ellipse's semi-axes, as a fraction of the box's half sides


def _ellipse_mask() -> torch.Tensor:
    """(M, M) probabilities of an ellipse centred in the RoI with semi-axes A (box = 1):
    0.5 + 2 (1 - r) at each cell centre, clamped to [0, 1], r the normalised radius.

    The margin keeps the shape off the box edge: there Detectron2's grid_sample reads zeros
    beyond the outermost cell centres (half a cell), which erodes shapes that touch the edge;
    a mask of ones still pastes exactly the box (test_probabilities_and_batched_boxes)."""
    c = (torch.arange(M, dtype=torch.float64) + 0.5) / M * 2 - 1  # cell centres in [-1, 1]
    r = torch.sqrt(c[:, None] ** 2 + c[None, :] ** 2) / A
    return (0.5 + 2 * (1 - r)).clamp(0, 1).float()


def _exact_ellipse(box, shape) -> torch.Tensor:
    """(H, W) bool: pixel centres inside the ellipse of semi-axes A x the half sides of ``box``."""
    x0, y0, x1, y1 = box
    ys = torch.arange(shape[0], dtype=torch.float64)[:, None] + 0.5
    xs = torch.arange(shape[1], dtype=torch.float64)[None, :] + 0.5
    u = (xs - (x0 + x1) / 2) / ((x1 - x0) / 2 * A)
    v = (ys - (y0 + y1) / 2) / ((y1 - y0) / 2 * A)
    return u**2 + v**2 <= 1


def _iou(a, b):
    return ((a & b).sum() / (a | b).sum()).item()


@pytest.mark.parametrize("side", [8, 12, 16, 24, 32, 48, 64, 96, 128, 200, 300, 400])
def test_pasted_ellipse_matches_the_exact_ellipse_at_every_size(side):
    shape = (460, 520)
    box = (17.3, 23.6, 17.3 + side * 1.2, 23.6 + side)  # not on the pixel grid, not square
    pasted = paste_masks_in_image(_ellipse_mask()[None], torch.tensor([box]), shape)
    assert pasted.dtype == torch.bool and pasted.shape == (1, *shape)
    assert _iou(pasted[0], _exact_ellipse(box, shape)) >= 0.995


def test_probabilities_and_batched_boxes():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 30.0, 20.0]])
    out = paste_masks_in_image(torch.ones(2, 1, M, M), boxes, (40, 50), threshold=None)
    assert out.dtype == torch.float32 and out.shape == (2, 40, 50)
    assert out[0, 5, 5] == 1 and out[0, 30, 30] == 0 and out[0, 0, 0] > 0.5
    # a box edge at x = 10: pixel 9 (centre 9.5) samples inside, pixel 10 (10.5) outside
    assert out[0, 5, 9] >= 0.5 > out[0, 5, 10]
    assert paste_masks_in_image(torch.zeros(0, M, M), torch.zeros(0, 4), (7, 9)).shape == (0, 7, 9)


def test_cpu_matches_the_uncropped_paste():
    """The CPU path samples only each box's window; the result equals sampling everywhere."""
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(5, 1, M, M, generator=g)
    xy = torch.rand(5, 2, generator=g) * 60
    boxes = torch.cat([xy, xy + torch.rand(5, 2, generator=g) * 40 + 1], 1)
    fast = paste_masks_in_image(masks, boxes, (90, 110), threshold=None)
    full, _ = mask_paste._paste_chunk(masks, boxes, 90, 110, crop=False)
    torch.testing.assert_close(fast, full)


def test_chunks_bound_memory():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert num_chunks(100, 800, 1333, cpu) == 100  # one mask (and one box window) at a time
    assert num_chunks(100, 800, 1333, gpu) == 1  # 426 MB of output in one chunk
    assert num_chunks(1000, 800, 1333, gpu) == math.ceil(1000 * 800 * 1333 * 4 / GPU_MEM_LIMIT)
    assert num_chunks(3, 10**5, 10**5, gpu) == 3  # never more chunks than masks


def test_100_detections_on_a_full_size_image_sample_one_box_window_at_a_time(monkeypatch):
    """Every grid_sample call covers one detection's box window, never the 100 full images."""
    calls = []
    original = F.grid_sample

    def recording(inp, grid, **kw):
        calls.append(tuple(grid.shape))
        return original(inp, grid, **kw)

    monkeypatch.setattr(mask_paste.F, "grid_sample", recording)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(100, 2, generator=g) * torch.tensor([1200.0, 700.0])
    boxes = torch.cat([xy, xy + torch.rand(100, 2, generator=g) * 120 + 4], 1)
    out = paste_masks_in_image(torch.rand(100, 1, M, M, generator=g), boxes, (800, 1333))
    assert out.shape == (100, 800, 1333) and out.dtype == torch.bool  # 107 MB, 1 byte a pixel
    assert len(calls) == 100
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    for (n, h, w, two), bw, bh in zip(calls, widths, heights):
        assert n == 1 and two == 2 and h <= bh + 4 and w <= bw + 4  # floor - 1 .. ceil + 1
