"""The GT-box diagnostic: how well a model segments when boxes and classes are given.

Mask AP mixes detection and segmentation errors. Given the ground-truth boxes (and GT classes for
the prior), only the mask head is judged. For the strong and the weak classes separately it
reports the mean mask IoU (prediction >= 0.5 vs GT mask), the mean IoU of the OMP alone
thresholded at 0.5 (OPMask only: how much the prior already knows), and the box head's
classification accuracy on the GT boxes.
On a run folder: ``opmask-diagnose RUN_DIR`` (``opmask.tools.diagnose``).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from ..utils.table import format_table as _format_table

NAMES = (
    ("mask_iou", "mask IoU"),
    ("omp_iou", "OMP >= 0.5 IoU"),
    ("cls_acc", "classification accuracy"),
)


def mask_iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Pairwise-aligned IoU of two (N, H, W) boolean stacks: (N,); an empty union counts 0."""
    inter = (pred & gt).flatten(1).sum(1)
    union = (pred | gt).flatten(1).sum(1)
    return inter / union.clamp(min=1)


def gt_box_diagnostics(model, dicts: list[dict], mapper, strong_labels) -> dict[str, float]:
    """Means over all GT instances of ``dicts``, keyed ``{mask_iou,omp_iou,cls_acc}_{strong,weak}``
    (``omp_iou_*`` only for models with a prior; a split without instances is left out).

    ``mapper`` must give ``instances`` with (N, H, W) masks (``is_train=True``, no flip,
    ``mask_format="bitmask"``); ``strong_labels``
    are model labels (1..K) of the mask-supervised classes.
    """
    values = defaultdict(list)
    model.eval()
    for d in dicts:
        x = mapper(d)
        inst = x["instances"]
        if len(inst["boxes"]) == 0:
            continue
        out = model.segment_given_boxes(x["image"], inst["boxes"], inst["labels"])
        gt = inst["masks"].bool()
        per = {
            "mask_iou": mask_iou(out["masks"].cpu() >= 0.5, gt),
            "cls_acc": (out["class_logits"].argmax(1).cpu() == inst["labels"]).float(),
        }
        if out["prior"] is not None:
            per["omp_iou"] = mask_iou(out["prior"].cpu() >= 0.5, gt)
        for i, label in enumerate(inst["labels"].tolist()):
            split = "strong" if label in strong_labels else "weak"
            for key, v in per.items():
                values[f"{key}_{split}"].append(float(v[i]))
    return {k: float(np.mean(v)) for k, v in sorted(values.items())}


def format_table(res: dict[str, float]) -> str:
    """The diagnostics ``res`` as a table: one row per measure, strong and weak columns."""
    rows = [
        [name, res.get(f"{key}_strong"), res.get(f"{key}_weak")]
        for key, name in NAMES
        if f"{key}_strong" in res or f"{key}_weak" in res
    ]
    return _format_table(["GT boxes", "strong", "weak"], rows, [26, 8, 8], fmt=".3f")
