"""Model FLOPs per stage, counted by fvcore's ``FlopCountAnalysis`` on the real modules.

fvcore counts one fused multiply-add as one "flop"; we report multiply-accumulates (MAC) and
FLOPs = 2 x MAC, the convention of accelerator peak figures (and of MFU).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from .meta_arch import OPMask


class _Call(nn.Module):
    """fvcore traces a module; this one calls ``fn`` on the traced inputs."""

    def __init__(self, owner: nn.Module, fn):
        super().__init__()
        self.owner, self.fn = owner, fn

    def forward(self, *args):
        return self.fn(*args)


def _macs(owner: nn.Module, fn, *inputs: torch.Tensor) -> float:
    from fvcore.nn import FlopCountAnalysis  # imports torch.jit.script: a warning at import

    analysis = FlopCountAnalysis(_Call(owner, fn), inputs)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    return float(analysis.total())


@torch.no_grad()
def stage_macs(
    model: OPMask, *, height: int, width: int, box_rois: int, mask_rois: int
) -> dict[str, float]:
    """Forward multiply-accumulates of one image, per stage.

    Args:
        height, width: padded input size, e.g. 800 x 1344 (multiples of 32).
        box_rois: RoIs through the box head (training: ``ROI_HEADS.BATCH_SIZE_PER_IMAGE``).
        mask_rois: RoIs through the mask head (training: the foreground RoIs, at most
            ``BATCH_SIZE_PER_IMAGE x POSITIVE_FRACTION``).

    Returns:
        ``backbone``, ``rpn_head``, ``box_head`` (with the predictor), ``mask_head`` (0 without
        masks), ``omp`` (OPMask only) and ``total``, in MAC.
    """
    was_training = model.training
    model.eval()
    p = next(model.parameters())
    dev, dt = p.device, p.dtype
    image = torch.zeros(1, 3, height, width, device=dev, dtype=dt)
    feats = model.backbone(image)
    out = {"backbone": _macs(model.backbone, model.backbone, image)}
    rpn_in = [feats[f] for f in model.rpn_features]
    out["rpn_head"] = _macs(model.rpn.head, lambda *f: model.rpn.head(list(f)), *rpn_in)
    ch = rpn_in[0].shape[1]
    box_res = model.box_pooler.output_size
    box_x = torch.zeros(box_rois, ch, box_res, box_res, device=dev, dtype=dt)

    out["box_head"] = _macs(model, lambda x: model.box_predictor(model.box_head(x)[1]), box_x)
    out["mask_head"] = 0.0
    if model.mask_head is not None and mask_rois:
        res = model.mask_pooler.output_size
        mask_x = torch.zeros(mask_rois, ch, res, res, device=dev, dtype=dt)
        if model.use_prior:
            maps = model.box_head(box_x[:mask_rois])[0]  # (F, C', 7, 7)
            labels = torch.ones(mask_rois, dtype=torch.long, device=dev)
            rows = torch.arange(mask_rois, device=dev)
            out["omp"] = _macs(model, lambda m: model._prior(m, rows, labels), maps)
            prior = torch.zeros(mask_rois, 1, res, res, device=dev, dtype=dt)
            out["mask_head"] = _macs(model.mask_head, model.mask_head, mask_x, prior)
        else:
            out["mask_head"] = _macs(model.mask_head, model.mask_head, mask_x)
    out["total"] = sum(out.values())
    model.train(was_training)
    return out
