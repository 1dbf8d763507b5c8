"""Box <-> delta transform with Detectron2 v0.6's ``Box2BoxTransform`` semantics: the one box
coder of the model (the RPN's anchors and the RoI heads' proposals).

Encode and decode match torchvision's ``_utils.BoxCoder`` bit for bit in float32
(tests/modeling/test_box_regression.py)."""

from __future__ import annotations

import math
from typing import Sequence

import torch

# Detectron2's clamp of dw, dh before exp(): boxes grow at most 1000/16 times per decode.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class Box2BoxTransform:
    """(dx, dy, dw, dh) of Faster R-CNN, scaled by ``weights`` (wx, wy, ww, wh).

    Widths are ``x1 - x0`` (no +1); centres ``x0 + 0.5 w``. Decoding runs in float32 and clamps
    dw, dh at ``scale_clamp``.
    """

    def __init__(self, weights: Sequence[float], scale_clamp: float = DEFAULT_SCALE_CLAMP):
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = scale_clamp

    @staticmethod
    def _centres(boxes: torch.Tensor):
        w = boxes[:, 2] - boxes[:, 0]
        h = boxes[:, 3] - boxes[:, 1]
        return boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h, w, h

    def get_deltas(self, src: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(R, 4) deltas that take ``src`` (R, 4) boxes to ``target`` (R, 4) boxes."""
        sx, sy, sw, sh = self._centres(src)
        tx, ty, tw, th = self._centres(target)
        wx, wy, ww, wh = self.weights
        return torch.stack(
            (
                wx * (tx - sx) / sw,
                wy * (ty - sy) / sh,
                ww * torch.log(tw / sw),
                wh * torch.log(th / sh),
            ),
            dim=1,
        )

    def apply_deltas(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Decode ``deltas`` (R, 4k) against ``boxes`` (R, 4): (R, 4k) float32 boxes."""
        deltas = deltas.float()
        cx, cy, w, h = self._centres(boxes.to(deltas.dtype))
        wx, wy, ww, wh = self.weights
        dx, dy = deltas[:, 0::4] / wx, deltas[:, 1::4] / wy
        dw = (deltas[:, 2::4] / ww).clamp(max=self.scale_clamp)
        dh = (deltas[:, 3::4] / wh).clamp(max=self.scale_clamp)
        px, py = dx * w[:, None] + cx[:, None], dy * h[:, None] + cy[:, None]
        pw, ph = torch.exp(dw) * w[:, None], torch.exp(dh) * h[:, None]
        out = torch.stack((px - 0.5 * pw, py - 0.5 * ph, px + 0.5 * pw, py + 0.5 * ph), dim=-1)
        return out.reshape(deltas.shape)
