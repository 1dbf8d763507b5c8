"""TensorBoard RoI pictures (image crop | OMP | mask | GT under a caption: class, strong/weak)
and prediction overlays (masks where the model predicts them, weak classes in cool colours)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from opmask.train.vis import (
    CAPTION,
    MASK_ALPHA,
    PANEL,
    STRONG_COLOURS,
    WEAK_COLOURS,
    Detections,
    draw_detections,
    roi_triptychs,
)


def _extras(prior: bool = True) -> tuple[dict, list[torch.Tensor]]:
    """Two images; image 1 has a pure red (BGR 0,0,255) square at x 16..48, y 8..40."""
    img0 = torch.zeros(3, 64, 64)
    img1 = torch.zeros(3, 64, 80)
    img1[2, 8:40, 16:48] = 255.0
    boxes0 = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 20.0, 20.0]])
    boxes1 = torch.tensor([[16.0, 8.0, 48.0, 40.0], [0.0, 0.0, 8.0, 8.0]])
    mask = torch.zeros(2, 1, 28, 28)
    mask[1, 0, :, 14:] = 1.0  # right half
    gt = torch.zeros(2, 28, 28)
    gt[1, :14] = 1.0  # top half
    extras = {
        "mask": mask,
        "gt": gt,
        "prior": torch.full((2, 1, 14, 14), 0.5) if prior else None,
        "labels": torch.tensor([2, 1]),
        "strong": torch.tensor([True, False]),
        # foreground: image 0's second RoI (label 2), image 1's first (label 1)
        "samples": [(boxes0, torch.tensor([0, 2])), (boxes1, torch.tensor([1, 0]))],
    }
    return extras, [img0, img1]


def test_columns_show_the_crop_the_prior_the_mask_and_the_gt():
    extras, images = _extras()
    shots = roi_triptychs(extras, 4, images, ["circle", "square"], bgr=True)
    assert [t for t, _ in shots] == ["image_omp_mask_gt/roi0", "image_omp_mask_gt/roi1"]
    img = shots[1][1]
    assert img.shape == (3, CAPTION + PANEL, 4 * PANEL)
    crop, omp, mask, gt = (img[:, CAPTION:, i * PANEL : (i + 1) * PANEL] for i in range(4))
    # the crop is the red square, shown as RGB red (channels flipped from BGR)
    inner = crop[:, 8:-8, 8:-8]
    assert torch.allclose(inner[0], torch.ones_like(inner[0])) and inner[1:].abs().max() == 0
    assert torch.allclose(omp, torch.full_like(omp, 0.5))
    assert mask[:, :, : PANEL // 2].max() == 0 and mask[:, :, PANEL // 2 :].min() == 1
    assert gt[:, : PANEL // 2].min() == 1 and gt[:, PANEL // 2 :].max() == 0
    assert shots[0][1][:, CAPTION:, :PANEL].max() == 0  # image 0 is black


def test_caption_names_the_class_and_whether_it_is_strong():
    extras, images = _extras()
    strong, weak = (img[:, :CAPTION] for _, img in roi_triptychs(extras, 4, images, ["a", "a"]))
    assert strong.max() > 0.9 and weak.max() > 0.9  # white text on black
    extras["labels"] = torch.tensor([1, 1])
    same_class = roi_triptychs(extras, 4, images, ["a", "a"])
    # same name, strong vs weak: the captions differ; same name and kind: identical
    assert not torch.equal(same_class[0][1][:, :CAPTION], same_class[1][1][:, :CAPTION])
    extras["strong"] = torch.tensor([False, False])
    both_weak = roi_triptychs(extras, 4, images, ["a", "a"])
    assert torch.equal(both_weak[0][1][:, :CAPTION], both_weak[1][1][:, :CAPTION])


def test_baseline_and_missing_images_give_black_columns():
    extras, _ = _extras(prior=False)
    (_, img), _ = roi_triptychs(extras, 2, None, None)
    assert img[:, CAPTION:, : 2 * PANEL].max() == 0  # no crop, no OMP
    assert roi_triptychs({"mask": torch.zeros(0, 1, 28, 28)}, 4) == []


def _one(mask, box, weak: bool) -> Detections:
    return Detections(
        boxes=np.float32([box]),
        scores=np.float32([0.9]),
        labels=np.int64([1]),
        category_ids=np.int64([1]),
        class_names=["disc"],
        weak=np.array([weak]),
        masks=mask[None],
    )


@pytest.mark.parametrize("weak", [False, True])
def test_overlay_colours_the_mask_pixels_only(weak):
    image = np.full((64, 80, 3), 100, np.uint8)
    yy, xx = np.mgrid[:64, :80]
    mask = (yy - 40) ** 2 + (xx - 40) ** 2 < 15**2  # a disc inside the box below
    out = draw_detections(image, _one(mask, [20, 20, 60, 60], weak))
    colour = np.array((WEAK_COLOURS if weak else STRONG_COLOURS)[1])
    changed = (out != image).any(axis=2)
    inner = mask.copy()
    inner[:38] = False  # the caption's rows
    expected = np.round(100 * (1 - MASK_ALPHA) + colour * MASK_ALPHA)
    assert np.abs(out[inner].astype(int) - expected).max() <= 1
    outside = np.ones(mask.shape, bool)
    outside[18:62, 18:62] = False  # the box and its outline
    outside[18:38, :] = False  # the caption may run to the right of the box
    assert changed[outside].sum() == 0
    ring = np.zeros(mask.shape, bool)  # inside the box, away from the disc and the outline
    ring[40:57, 23:26] = True
    assert not (ring & mask).any() and changed[ring].sum() == 0
    assert changed[20, 20:60].all()  # the box's top edge
