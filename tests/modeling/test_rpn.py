"""The RPN against hand computations with Detectron2 v0.6's rules."""

import math

import pytest
import torch
import torch.nn.functional as F

from opmask.config import load_config
from opmask.modeling.anchor_generator import AnchorGenerator
from opmask.modeling.build import build_rpn
from opmask.modeling.matcher import Matcher, pairwise_iou, subsample_labels
from opmask.modeling.rpn import RPN, StandardRPNHead, find_top_rpn_proposals
from opmask.modeling.sampling import RoISampler

from ..conftest import SHAPES_OPMASK

LOGIT = 0.7
DELTA = [0.1, -0.2, 0.3, 0.05]


def _rpn(batch_size=256, beta=0.0, loss_weight=1.0, reg_weight=1.0) -> RPN:
    """One level of stride 16 with one 32x32 anchor per location, centres at 8, 24, 40, 56; a
    head whose conv is zero so every anchor gets logit LOGIT and deltas DELTA (the biases)."""
    head = StandardRPNHead(4, 1)
    torch.nn.init.zeros_(head.objectness_logits.weight)
    torch.nn.init.zeros_(head.anchor_deltas.weight)
    torch.nn.init.constant_(head.objectness_logits.bias, LOGIT)
    with torch.no_grad():
        head.anchor_deltas.bias.copy_(torch.tensor(DELTA))
    return RPN(
        head=head,
        anchor_generator=AnchorGenerator(sizes=[32], aspect_ratios=[1.0], strides=[16], offset=0.5),
        iou_thresholds=[0.3, 0.7],
        batch_size_per_image=batch_size,
        positive_fraction=0.5,
        bbox_reg_weights=(1.0, 1.0, 1.0, 1.0),
        smooth_l1_beta=beta,
        loss_weight=loss_weight,
        bbox_reg_loss_weight=reg_weight,
        pre_nms_topk=(100, 100),
        post_nms_topk=(50, 50),
        nms_thresh=0.7,
    )


def _losses(rpn, images=2):
    """Image 0 has GT [8, 8, 40, 48]; the others none. 64x64 images, a 4x4 feature map."""
    rpn.train()
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 48.0]])}]
    targets += [{"boxes": torch.zeros(0, 4)} for _ in range(images - 1)]
    feats = [torch.randn(images, 4, 4, 4)]
    _, losses = rpn(feats, [(64, 64)] * images, targets)
    return losses


# By hand, for GT [8, 8, 40, 48] (32 x 40, centre (24, 28)) and the 16 anchors:
#   anchor centred (24, 24): IoU 1024/1280 = 0.8 -> positive;
#   (24, 40): IoU 768/1536 = 0.5 -> ignored; the other 14: IoU <= 512/1792 = 0.29 -> negative.
#   positive's target deltas (dx, dy, dw, dh) = (0, 4/32, log 1, log(40/32)).
TARGET = [0.0, 0.125, 0.0, math.log(40 / 32)]
L1 = sum(abs(d - t) for d, t in zip(DELTA, TARGET))  # 0.898144
BCE_POS, BCE_NEG = F.softplus(torch.tensor(-LOGIT)).item(), F.softplus(torch.tensor(LOGIT)).item()


def test_losses_are_l1_and_bce_sums_over_batch_size_per_image_times_images():
    losses = _losses(_rpn(batch_size=256))
    norm = 256 * 2
    assert losses["loss_rpn_loc"].item() == pytest.approx(L1 / norm, rel=1e-5)
    cls = BCE_POS + (14 + 16) * BCE_NEG  # image 1: all 16 anchors negative
    assert losses["loss_rpn_cls"].item() == pytest.approx(cls / norm, rel=1e-5)
    assert L1 == pytest.approx(0.898144, abs=1e-6)


def test_normaliser_does_not_depend_on_how_many_anchors_were_sampled():
    one = _losses(_rpn(batch_size=256), images=1)
    assert one["loss_rpn_loc"].item() == pytest.approx(L1 / 256, rel=1e-5)
    assert one["loss_rpn_cls"].item() == pytest.approx((BCE_POS + 14 * BCE_NEG) / 256, rel=1e-5)


def test_loss_weights_and_smooth_l1_beta():
    w = _losses(_rpn(loss_weight=2.0, reg_weight=0.5))
    base = _losses(_rpn())
    assert w["loss_rpn_cls"].item() == pytest.approx(2 * base["loss_rpn_cls"].item(), rel=1e-6)
    assert w["loss_rpn_loc"].item() == pytest.approx(base["loss_rpn_loc"].item(), rel=1e-6)
    beta = 0.5
    smooth = sum(
        0.5 * (d - t) ** 2 / beta if abs(d - t) < beta else abs(d - t) - 0.5 * beta
        for d, t in zip(DELTA, TARGET)
    )
    got = _losses(_rpn(beta=beta))["loss_rpn_loc"].item()
    assert got == pytest.approx(smooth / 512, rel=1e-5)


def test_sampling_caps_positives_and_fills_with_negatives():
    torch.manual_seed(0)
    labels = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0, -1, -1])
    pos, neg = subsample_labels(labels, 4, 0.25, 0)
    assert len(pos) == 1 and len(neg) == 3
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all()


def test_an_images_own_generator_decides_its_sample_not_the_global_rng():
    labels = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0, -1, -1] * 20)

    def draw(global_seed: int) -> tuple[list, list]:
        torch.manual_seed(global_seed)  # another process's global RNG state
        pos, neg = subsample_labels(labels, 16, 0.25, 0, torch.Generator().manual_seed(7))
        return pos.tolist(), neg.tolist()

    assert draw(0) == draw(1)
    pos, neg = draw(0)
    assert len(pos) == 4 and len(neg) == 12 and (labels[neg] == 0).all()
    other = subsample_labels(labels, 16, 0.25, 0, torch.Generator().manual_seed(8))
    assert (pos, neg) != (other[0].tolist(), other[1].tolist())


def test_roi_sampling_of_an_image_does_not_depend_on_its_batch():
    """The same image samples the same RoIs alone or with other images (as on 1 or 2 ranks),
    positives first as in Detectron2."""
    g = torch.Generator().manual_seed(0)
    images = []
    for i in range(3):
        gt = torch.tensor([[10.0, 10.0, 60.0, 60.0], [70.0, 20.0, 120.0, 90.0]]) + i
        xy = torch.rand(300, 2, generator=g) * 100
        props = torch.cat([xy, xy + 10 + torch.rand(300, 2, generator=g) * 50], 1)
        images.append((props, {"boxes": gt, "labels": torch.tensor([1, 2]), "seed": 100 + i}))

    def sample(chosen):
        targets = [dict(t, generator=torch.Generator().manual_seed(t["seed"])) for _, t in chosen]
        return RoISampler(iou_thresh=0.5, batch_size=64, positive_fraction=0.25)(
            [p for p, _ in chosen], targets
        )

    together = sample(images)
    torch.manual_seed(123)  # the global RNG plays no part
    alone = [sample([x])[0] for x in images]
    for a, b in zip(together, alone):
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.labels, b.labels)
        fg = (a.labels > 0).int()
        assert fg.sum() > 0 and torch.equal(fg, fg.sort(descending=True).values)


def test_matcher_bands_and_low_quality_matches_with_ties():
    iou = torch.tensor(
        [
            [0.10, 0.50, 0.50, 0.80, 0.00],  # GT 0: best 0.8
            [0.20, 0.40, 0.40, 0.05, 0.29],  # GT 1: best 0.4, tied at columns 1 and 2
        ]
    )
    matches, labels = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)(iou)
    assert matches.tolist() == [1, 0, 0, 0, 1]
    assert labels.tolist() == [0, 1, 1, 1, 0]
    _, strict = Matcher([0.3, 0.7], [0, -1, 1])(iou)
    assert strict.tolist() == [0, -1, -1, 1, 0]
    m, lab = Matcher([0.3, 0.7], [0, -1, 1], True)(torch.zeros(0, 3))  # no GT: all negative
    assert m.tolist() == [0, 0, 0] and lab.tolist() == [0, 0, 0]


def test_find_top_proposals_golden():
    """Per level top-k, non-finite dropped, clipped, empty dropped, NMS within a level only."""
    level0 = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # score 5
            [1.0, 0.0, 11.0, 10.0],  # score 4: IoU 0.82 with the first -> suppressed
            [-5.0, 20.0, 30.0, 90.0],  # score 3: clipped to (0, 20, 30, 50)
            [60.0, 0.0, 70.0, 10.0],  # score 2.5: outside (w 40) -> clipped empty, dropped
            [20.0, 0.0, 25.0, 5.0],  # score 1: beyond pre_nms_topk 4
        ]
    )
    level1 = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # score 4.5: same box as level 0's best, other level -> kept
            [float("nan"), 0.0, 5.0, 5.0],  # score 9: not finite -> dropped
            [5.0, 5.0, 15.0, 15.0],  # score 0.5
        ]
    )
    scores = [torch.tensor([[5.0, 4.0, 3.0, 2.5, 1.0]]), torch.tensor([[4.5, 9.0, 0.5]])]
    boxes, logits = find_top_rpn_proposals(
        [level0[None], level1[None]],
        scores,
        [(50, 40)],
        nms_thresh=0.7,
        pre_nms_topk=4,
        post_nms_topk=3,
    )
    want = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [0.0, 20.0, 30.0, 50.0]])
    torch.testing.assert_close(boxes[0], want)
    assert logits[0].tolist() == [5.0, 4.5, 3.0]


def test_forward_eval_and_state_dict_names():
    rpn = _rpn().eval()
    boxes, losses = rpn([torch.randn(2, 4, 4, 4)], [(64, 64), (60, 50)])
    assert losses == {} and len(boxes) == 2
    assert (boxes[1][:, 2] <= 50).all() and (boxes[1][:, 3] <= 60).all()
    assert sorted(rpn.state_dict()) == [
        "head.anchor_deltas.bias",
        "head.anchor_deltas.weight",
        "head.conv.bias",
        "head.conv.weight",
        "head.objectness_logits.bias",
        "head.objectness_logits.weight",
    ]


def test_build_rpn_reads_the_detectron2_keys():
    cfg = load_config(
        SHAPES_OPMASK,
        ["MODEL.RPN.SMOOTH_L1_BETA", "0.1", "MODEL.RPN.LOSS_WEIGHT", "2.0"]
        + ["MODEL.RPN.BBOX_REG_LOSS_WEIGHT", "0.5", "MODEL.PROPOSAL_GENERATOR.MIN_SIZE", "1"]
        + ["MODEL.RPN.BBOX_REG_WEIGHTS", "(1.0, 2.0, 3.0, 4.0)"],
    )
    rpn = build_rpn(cfg, 8)
    assert rpn.smooth_l1_beta == 0.1 and rpn.loss_weights == (2.0, 1.0)
    assert rpn.min_box_size == 1 and rpn.box2box.weights == (1.0, 2.0, 3.0, 4.0)
    assert rpn.batch_size_per_image == cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE


def test_pairwise_iou_zero_for_empty_boxes():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 5.0, 9.0]])  # the second has no area
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [5.0, 5.0, 5.0, 9.0]])
    torch.testing.assert_close(pairwise_iou(a, b), torch.tensor([[50 / 150, 0.0], [0.0, 0.0]]))
