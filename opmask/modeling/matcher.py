"""Anchor/proposal matching and label subsampling with Detectron2 v0.6's semantics: the one
matcher of the model (the RPN's anchors and the RoI heads' proposals).

With one threshold and no low-quality matches (the RoI heads) it matches torchvision's
``_utils.Matcher`` bit for bit (tests/modeling/test_matcher.py)."""

from __future__ import annotations

from typing import Sequence

import torch


class Matcher:
    """Assigns each prediction (column) its best GT (row) and a label by IoU band.

    ``thresholds`` [t1, .., tn] split [0, inf) into n+1 bands ``[t_i, t_i+1)`` labelled ``labels``
    (n+1 values, e.g. 0 = negative, -1 = ignore, 1 = positive). With
    ``allow_low_quality_matches`` every prediction whose IoU with some GT equals that GT's best
    IoU (ties included) is labelled 1, even below the top threshold.
    """

    def __init__(
        self,
        thresholds: Sequence[float],
        labels: Sequence[int],
        allow_low_quality_matches: bool = False,
    ):
        self.thresholds = [-float("inf"), *thresholds, float("inf")]
        if len(labels) != len(self.thresholds) - 1:
            n = len(thresholds)
            raise ValueError(f"Matcher: {n} thresholds need {n + 1} labels")
        self.labels = list(labels)
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``quality`` (G, R) IoU matrix -> matched GT index (R,) int64 and label (R,) int8."""
        if quality.numel() == 0:  # no GT (or no predictions): everything is the lowest band
            n = quality.shape[1]
            matches = quality.new_zeros((n,), dtype=torch.int64)
            return matches, quality.new_full((n,), self.labels[0], dtype=torch.int8)
        values, matches = quality.max(dim=0)
        labels = matches.new_ones(matches.shape, dtype=torch.int8)
        for label, low, high in zip(self.labels, self.thresholds[:-1], self.thresholds[1:]):
            labels[(values >= low) & (values < high)] = label
        if self.allow_low_quality_matches:
            best = quality.max(dim=1).values  # (G,)
            labels[torch.nonzero(quality == best[:, None], as_tuple=True)[1]] = 1
        return matches, labels


def subsample_labels(
    labels: torch.Tensor,
    num_samples: int,
    positive_fraction: float,
    bg_label: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random indices of at most ``num_samples * positive_fraction`` positives (label not -1 and
    not ``bg_label``) and negatives (``bg_label``) filling up to ``num_samples``.

    ``generator``: a CPU generator to draw from (the image's own, so that its sample does not
    depend on which other images share the batch or the process); None: the global RNG.
    """
    positive = torch.nonzero((labels != -1) & (labels != bg_label), as_tuple=True)[0]
    negative = torch.nonzero(labels == bg_label, as_tuple=True)[0]
    num_pos = min(positive.numel(), int(num_samples * positive_fraction))
    num_neg = min(negative.numel(), num_samples - num_pos)
    pos = positive[_first_of_permutation(positive.numel(), num_pos, labels.device, generator)]
    neg = negative[_first_of_permutation(negative.numel(), num_neg, labels.device, generator)]
    return pos, neg


def _first_of_permutation(n: int, k: int, device, generator) -> torch.Tensor:
    """The first ``k`` of a random permutation of ``range(n)``, on ``device``."""
    if generator is None:
        return torch.randperm(n, device=device)[:k]
    return torch.randperm(n, generator=generator)[:k].to(device, non_blocking=True)


def pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, M) IoU of boxes ``a`` (N, 4) and ``b`` (M, 4); 0 where they do not intersect (also
    for empty boxes, which would otherwise give 0/0)."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    wh = torch.min(a[:, None, 2:], b[None, :, 2:]) - torch.max(a[:, None, :2], b[None, :, :2])
    inter = wh.clamp(min=0).prod(dim=2)  # (N, M)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(inter > 0, inter / union, torch.zeros_like(inter))
