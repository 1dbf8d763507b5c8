import torch
import torch.nn.functional as F

from opmask.modeling.losses import fast_rcnn_losses, partially_supervised_mask_loss
from opmask.modeling.mask_heads import MaskRCNNConvUpsampleHead


def _head_and_logits(n, seed=0):
    torch.manual_seed(seed)
    head = MaskRCNNConvUpsampleHead(in_channels=8, num_conv=2, conv_dim=8)
    x = torch.randn(n, 8, 14, 14)
    return head, head(x)


def test_all_weak_rois_give_exact_zero_and_no_gradient():
    head, logits = _head_and_logits(4)
    gt = (torch.rand(4, 28, 28) > 0.5).float()
    loss = partially_supervised_mask_loss(logits, gt, torch.zeros(4, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    for p in head.parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) == 0


def test_mixed_batch_equals_loss_over_strong_rois_alone():
    _, logits = _head_and_logits(6, seed=1)
    gt = (torch.rand(6, 28, 28) > 0.5).float()
    strong = torch.tensor([True, False, True, False, False, True])
    loss = partially_supervised_mask_loss(logits, gt, strong)
    # independent computation: mean over pixels of the strong RoIs only
    p = torch.sigmoid(logits[[0, 2, 5], 0])
    t = gt[[0, 2, 5]]
    expected = -(t * torch.log(p) + (1 - t) * torch.log(1 - p)).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_weak_rois_get_no_gradient_in_mixed_batch():
    torch.manual_seed(2)
    logits = torch.randn(4, 1, 28, 28, requires_grad=True)
    gt = torch.ones(4, 28, 28)
    partially_supervised_mask_loss(logits, gt, torch.tensor([True, False, True, False])).backward()
    assert logits.grad[[1, 3]].abs().sum() == 0
    assert logits.grad[[0, 2]].abs().sum() > 0


def test_fast_rcnn_losses_golden():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    deltas = torch.zeros(3, 12)
    deltas[1, 4:8] = torch.tensor([0.5, -0.5, 0.0, 1.0])
    labels = torch.tensor([0, 1, 2])
    targets = torch.tensor([[9.0, 9, 9, 9], [0.0, 0, 0, 0], [1.0, 1, 1, 1]])
    out = fast_rcnn_losses(logits, deltas, labels, targets, beta=0.0)
    torch.testing.assert_close(out["loss_cls"], F.cross_entropy(logits, labels))
    # L1 over foreground RoIs 1 and 2 (background row 0 ignored), divided by 3 sampled RoIs
    torch.testing.assert_close(out["loss_box_reg"], torch.tensor((2.0 + 4.0) / 3))
