import torch
from torchvision.models.detection.roi_heads import RoIHeads

from opmask.modeling.box_regression import Box2BoxTransform
from opmask.modeling.postprocess import detections_with_sources, rescale_detections


def _inputs(seed=0, k=5, counts=(40, 25)):
    g = torch.Generator().manual_seed(seed)
    proposals = []
    for n in counts:
        xy = torch.rand(n, 2, generator=g) * 80
        wh = torch.rand(n, 2, generator=g) * 40 + 4
        proposals.append(torch.cat([xy, xy + wh], 1))
    total = sum(counts)
    logits = torch.randn(total, k + 1, generator=g) * 3
    deltas = torch.randn(total, (k + 1) * 4, generator=g) * 0.3
    return logits, deltas, proposals, [(100, 120), (90, 110)]


def test_matches_torchvision_postprocess_detections_and_tracks_sources():
    logits, deltas, proposals, sizes = _inputs()
    coder = Box2BoxTransform((10.0, 10.0, 5.0, 5.0))
    tv = RoIHeads(
        None,
        None,
        None,
        0.5,
        0.5,
        512,
        0.25,
        (10.0, 10.0, 5.0, 5.0),
        score_thresh=0.05,
        nms_thresh=0.5,
        detections_per_img=20,
    )
    tv_boxes, tv_scores, tv_labels = tv.postprocess_detections(logits, deltas, proposals, sizes)
    ours = detections_with_sources(
        logits,
        deltas,
        proposals,
        sizes,
        coder,
        score_thresh=0.05,
        nms_thresh=0.5,
        detections_per_img=20,
    )
    all_props = torch.cat(proposals)
    for i, (d, b, s, lab) in enumerate(zip(ours, tv_boxes, tv_scores, tv_labels)):
        assert len(b) > 0
        assert torch.equal(d["boxes"], b)  # bit for bit: the same decode, clip, NMS
        assert torch.equal(d["scores"], s)
        assert torch.equal(d["labels"], lab)
        # the source proposal, decoded with its own deltas for the detected class, is the box
        src = d["sources"]
        decoded = coder.apply_deltas(
            deltas[src].reshape(len(src), -1, 4)[torch.arange(len(src)), d["labels"]],
            all_props[src],
        )
        h, w = sizes[i]
        decoded[:, 0::2] = decoded[:, 0::2].clamp(0, w)
        decoded[:, 1::2] = decoded[:, 1::2].clamp(0, h)
        torch.testing.assert_close(decoded, d["boxes"])
        # and its softmax score for that class is the detection's score
        probs = logits[src].softmax(-1)[torch.arange(len(src)), d["labels"]]
        torch.testing.assert_close(probs, d["scores"])
    assert ours[1]["sources"].min() >= len(proposals[0])  # offsets into concatenated proposals


def test_no_proposals():
    out = detections_with_sources(
        torch.zeros(0, 3),
        torch.zeros(0, 12),
        [torch.zeros(0, 4)],
        [(10, 10)],
        Box2BoxTransform((10.0, 10.0, 5.0, 5.0)),
        score_thresh=0.05,
        nms_thresh=0.5,
        detections_per_img=10,
    )
    assert out[0]["boxes"].shape == (0, 4) and out[0]["sources"].numel() == 0


def _one_proposal_case(box_delta_rows, logit_rows, proposals):
    """Detections of hand-made logits/deltas (weights 1) on one 100x100 image."""
    return detections_with_sources(
        torch.tensor(logit_rows),
        torch.tensor(box_delta_rows),
        [torch.tensor(proposals)],
        [(100, 100)],
        Box2BoxTransform((1.0, 1.0, 1.0, 1.0)),
        score_thresh=0.05,
        nms_thresh=0.5,
        detections_per_img=10,
    )[0]


def test_detectron2_filters_no_small_box_filter_and_non_finite_rows_dropped():
    """Two classes. Proposal 0 is a 0.005-px box (torchvision's 1e-2 filter would drop it;
    Detectron2 keeps it); proposal 1 has an infinite delta (Detectron2 drops the whole row);
    proposal 2 is normal. Sources still index the original proposals."""
    zero = [0.0] * 12
    inf = [0.0] * 4 + [float("inf")] + [0.0] * 7
    logits = [[0.0, 5.0, 4.0], [0.0, 9.0, 0.0], [0.0, 4.5, 3.5]]  # p 0.728 0.268 / 0.725 0.267
    proposals = [[10.0, 10.0, 10.005, 30.0], [40.0, 40.0, 50.0, 50.0], [60.0, 60.0, 80.0, 90.0]]
    d = _one_proposal_case([zero, inf, zero], logits, proposals)
    assert d["sources"].tolist() == [0, 2, 0, 2]
    assert d["labels"].tolist() == [1, 1, 2, 2]
    torch.testing.assert_close(d["boxes"][0], torch.tensor(proposals[0]))
    p = torch.tensor(logits).softmax(1)
    torch.testing.assert_close(d["scores"], torch.stack([p[0, 1], p[2, 1], p[0, 2], p[2, 2]]))


def test_rescale_detections_scales_clips_and_drops_empty_boxes():
    det = {
        "boxes": torch.tensor([[10.0, 10.0, 20.0, 40.0], [99.0, 5.0, 100.0, 8.0], [-4.0, 0, 2, 6]]),
        "scores": torch.tensor([0.9, 0.8, 0.7]),
        "labels": torch.tensor([1, 2, 3]),
        "sources": torch.tensor([4, 5, 6]),
        "mask_probs": torch.rand(3, 1, 28, 28),
    }
    # network input 50x100 (h, w) -> original 100x150: scale x 1.5, y 2; then clip to 100x150
    out = rescale_detections(det, (50, 100), (100, 150))
    torch.testing.assert_close(
        out["boxes"],
        torch.tensor([[15.0, 20.0, 30.0, 80.0], [148.5, 10.0, 150.0, 16.0], [0.0, 0.0, 3.0, 12.0]]),
    )
    assert out["sources"].tolist() == [4, 5, 6] and out["mask_probs"].shape == (3, 1, 28, 28)
    det["boxes"][1] = torch.tensor([120.0, 5.0, 130.0, 8.0])  # entirely right of the image
    out = rescale_detections(det, (50, 100), (100, 150))
    assert out["sources"].tolist() == [4, 6] and out["labels"].tolist() == [1, 3]
    assert len(out["mask_probs"]) == 2
