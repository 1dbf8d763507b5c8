import torch
from torchvision.models.detection.roi_heads import RoIHeads

from opmask.modeling.postprocess import detections_with_sources
from opmask.modeling.tv_adapter import BoxCoder


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
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
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
        torch.testing.assert_close(d["boxes"], b)
        torch.testing.assert_close(d["scores"], s)
        assert torch.equal(d["labels"], lab)
        # the source proposal, decoded with its own deltas for the detected class, is the box
        src = d["sources"]
        decoded = coder.decode(
            deltas[src].reshape(len(src), -1, 4)[torch.arange(len(src)), d["labels"]],
            [all_props[src]],
        ).reshape(-1, 4)
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
        BoxCoder((10.0, 10.0, 5.0, 5.0)),
        score_thresh=0.05,
        nms_thresh=0.5,
        detections_per_img=10,
    )
    assert out[0]["boxes"].shape == (0, 4) and out[0]["sources"].numel() == 0
