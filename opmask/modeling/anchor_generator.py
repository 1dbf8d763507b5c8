"""Anchors with Detectron2 v0.6's ``DefaultAnchorGenerator`` semantics.

Cell anchors are not rounded; each level has a fixed stride (P6: 64, whatever the image size);
anchor centres sit at ``(i + offset) * stride``; order: location-major (row by row), then the
level's cell anchors, sizes outer and aspect ratios inner.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


def cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> torch.Tensor:
    """(len(sizes) * len(aspect_ratios), 4) xyxy anchors centred at 0; ratio = height / width."""
    out = []
    for size in sizes:
        for ratio in aspect_ratios:
            w = math.sqrt(size * size / ratio)
            h = ratio * w
            out.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(out, dtype=torch.float32)


def _per_level(values, n: int, name: str) -> list[list[float]]:
    """Detectron2's broadcast: a flat list or one list serves every level."""
    values = [list(v) for v in values] if isinstance(values[0], (list, tuple)) else [list(values)]
    if len(values) == 1:
        values = values * n
    if len(values) != n:
        raise ValueError(f"ANCHOR_GENERATOR.{name}: {len(values)} lists for {n} feature levels")
    return values


class AnchorGenerator(nn.Module):
    """Anchors of every feature level.

    Args:
        sizes: per level (or one for all) the anchor sizes in input pixels (sqrt of the area).
        aspect_ratios: per level (or one for all) the height/width ratios.
        strides: stride of each level in input pixels.
        offset: centre of the first anchor, in strides from the image corner, in [0, 1).
    """

    def __init__(
        self,
        *,
        sizes: Sequence,
        aspect_ratios: Sequence,
        strides: Sequence[int],
        offset: float = 0.0,
    ):
        super().__init__()
        if not 0.0 <= offset < 1.0:
            raise ValueError(f"ANCHOR_GENERATOR.OFFSET must be in [0, 1), got {offset}")
        n = len(strides)
        sizes, ratios = _per_level(sizes, n, "SIZES"), _per_level(aspect_ratios, n, "ASPECT_RATIOS")
        self.strides, self.offset = list(strides), float(offset)
        for i, (s, r) in enumerate(zip(sizes, ratios)):
            self.register_buffer(f"cell_{i}", cell_anchors(s, r), persistent=False)

    @property
    def num_anchors(self) -> list[int]:
        """Anchors per location, per level."""
        return [len(self._cells(i)) for i in range(len(self.strides))]

    def _cells(self, i: int) -> torch.Tensor:
        return getattr(self, f"cell_{i}")

    def _grid(self, size: tuple[int, int], i: int) -> torch.Tensor:
        """(H * W * A, 4) anchors of level ``i`` for a (H, W) feature map."""
        stride, cells = self.strides[i], self._cells(i)
        start = self.offset * stride
        kw = {"dtype": torch.float32, "device": cells.device}
        xs = torch.arange(start, size[1] * stride, step=stride, **kw)
        ys = torch.arange(start, size[0] * stride, step=stride, **kw)
        sy, sx = torch.meshgrid(ys, xs, indexing="ij")
        shifts = torch.stack((sx.reshape(-1), sy.reshape(-1)) * 2, dim=1)  # (H*W, 4)
        return (shifts[:, None, :] + cells[None, :, :]).reshape(-1, 4)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Feature maps (B, C, H_l, W_l) per level -> anchors (H_l * W_l * A_l, 4) per level."""
        if len(features) != len(self.strides):
            raise ValueError(f"{len(features)} feature maps for {len(self.strides)} strides")
        return [self._grid(tuple(f.shape[-2:]), i) for i, f in enumerate(features)]
