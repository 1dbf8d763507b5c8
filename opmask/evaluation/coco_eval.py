"""COCO evaluation with the partially supervised split: bbox AP, mask AP, mask AP on the strong
(mask-supervised) and on the weak (box-only) classes — the paper's headline number — and
per-class AP. Predictions and results are written under ``inference/`` as JSON."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
from typing import Callable

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..data.coco import mask_to_rle
from ..utils import comm
from ..utils.fs import atomic_write_bytes
from ..utils.table import format_table as _format_table

logger = logging.getLogger(__name__)

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
EVALUATORS = ("pycocotools", "faster_coco_eval")  # TEST.EVALUATOR


def coco_backend(evaluator: str) -> tuple[type, type]:
    """``(COCO, COCOeval)`` classes of the ``TEST.EVALUATOR`` backend. faster_coco_eval (the
    ``faster-coco-eval`` package, C++) gives pycocotools' numbers (tests/evaluation) faster."""
    if evaluator == "pycocotools":
        return COCO, COCOeval
    if evaluator == "faster_coco_eval":
        from faster_coco_eval import COCO as FastCOCO
        from faster_coco_eval import COCOeval_faster

        return FastCOCO, COCOeval_faster
    raise ValueError(f"TEST.EVALUATOR must be one of {EVALUATORS}, got {evaluator!r}")


def predictions_to_coco(output: dict, image_id, category_id_of: Callable[[int], int]) -> list[dict]:
    """One image's model output -> COCO result entries (boxes xywh, masks as RLE at 0.5);
    ``category_id_of``: model label -> category id (``DatasetInfo.category_id``)."""
    boxes = output["boxes"].detach().cpu().numpy()
    scores = output["scores"].detach().cpu().tolist()
    labels = output["labels"].detach().cpu().tolist()
    masks = output.get("masks")
    masks = (masks[:, 0] >= 0.5).cpu().numpy() if masks is not None else None
    results = []
    for i, (box, score, label) in enumerate(zip(boxes, scores, labels)):
        x0, y0, x1, y1 = (float(v) for v in box)
        entry = {
            "image_id": image_id,
            "category_id": category_id_of(label),
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "score": float(score),
        }
        if masks is not None:
            entry["segmentation"] = mask_to_rle(masks[i])
        results.append(entry)
    return results


@torch.no_grad()
def infer(model, batch: list[dict]) -> list[dict]:
    """The model's outputs on one batch of ``DatasetMapper`` test inputs, run in eval mode
    without gradients (the caller's mode is restored): what evaluation turns into COCO results,
    and what ``opmask.tools.predict`` shows."""
    was_training = model.training
    model.eval()
    try:
        return model(batch)
    finally:
        model.train(was_training)


def run_inference(model, loader, category_id_of: Callable[[int], int]) -> list[dict]:
    """COCO results of every rank's shard, in rank order, on the main process; [] elsewhere."""
    results, start = [], time.perf_counter()
    for i, batch in enumerate(loader):
        for x, out in zip(batch, infer(model, batch)):
            results += predictions_to_coco(out, x["image_id"], category_id_of)
        if (i + 1) % 50 == 0:
            logger.info(
                "Inference %d/%d images, %.3f s/img",
                i + 1,
                len(loader),
                (time.perf_counter() - start) / (i + 1),
            )
    return [r for part in comm.gather_objects(results) for r in part]


def _coco_eval(gt: COCO, dt: COCO | None, iou_type: str, cat_ids=None, evaluator=COCOeval):
    """Summary metrics (percent) and the COCOeval object; zeros when nothing was predicted."""
    if dt is None:
        return {k: 0.0 for k in METRICS}, None
    ev = evaluator(gt, dt, iou_type)
    if cat_ids is not None:
        ev.params.catIds = list(cat_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(s) * 100 if s >= 0 else float("nan") for s in ev.stats[:6]]
    return dict(zip(METRICS, stats)), ev


def _per_class_ap(ev: COCOeval | None, gt: COCO) -> dict[str, float]:
    if ev is None:
        return {c["name"]: 0.0 for c in gt.loadCats(gt.getCatIds())}
    precision = ev.eval["precision"]  # (T, R, K, A, M)
    out = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        out[gt.loadCats(int(cat_id))[0]["name"]] = (
            float(np.mean(p) * 100) if p.size else float("nan")
        )
    return out


def evaluate_results(
    gt_json: str, results: list[dict], strong_ids: list[int], evaluator: str = "pycocotools"
) -> dict:
    """COCOeval of ``results`` against ``gt_json``: tasks bbox, segm, segm_strong, segm_weak;
    ``evaluator``: the backend (``coco_backend``)."""
    coco_cls, eval_cls = coco_backend(evaluator)
    has_masks = not results or "segmentation" in results[0]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = coco_cls(gt_json)
        # loadRes adds keys to each result (a box polygon as "segmentation", area, id) and COCOeval
        # replaces segmentations by RLE with bytes: copies keep the caller's results JSON-clean
        dt = gt.loadRes([dict(r) for r in results]) if results else None
    weak_ids = sorted(set(gt.getCatIds()) - set(strong_ids))
    out, per_class = {}, {}
    for task, iou, cats in (
        ("bbox", "bbox", None),
        ("segm", "segm", None),
        ("segm_strong", "segm", strong_ids),
        ("segm_weak", "segm", weak_ids),
    ):
        if task != "bbox" and not has_masks:
            continue
        if cats is not None and not cats:
            continue
        out[task], ev = _coco_eval(gt, dt, iou, cats, eval_cls)
        if task in ("bbox", "segm"):
            per_class[task] = _per_class_ap(ev, gt)
    out["per_class"] = per_class
    return out


def format_table(results: dict) -> str:
    """``results`` (of ``evaluate_results``) as a table: one row per task, one column per metric."""
    rows = [[t, *(results[t][m] for m in METRICS)] for t in results if t != "per_class"]
    return _format_table(["task", *METRICS], rows, [12] + [8] * len(METRICS), fmt=".2f")


def evaluate(
    model,
    loader,
    *,
    gt_json: str,
    category_id_of: Callable[[int], int],
    strong_ids: list[int],
    outputs: tuple[str, str] | None,
    evaluator: str = "pycocotools",
) -> dict:
    """Run inference, evaluate on the main process, print the table; ``outputs``: the files
    (detections in COCO results format, metrics) the main process writes, or None."""
    start = time.perf_counter()
    results = run_inference(model, loader, category_id_of)
    if not comm.is_main_process():
        return {}
    t_eval = time.perf_counter()
    metrics = evaluate_results(gt_json, results, strong_ids, evaluator)
    now = time.perf_counter()
    metrics["time_seconds"] = {"total": now - start, evaluator: now - t_eval}
    if outputs:
        detections_file, metrics_file = outputs
        os.makedirs(os.path.dirname(detections_file), exist_ok=True)
        atomic_write_bytes(detections_file, json.dumps(results).encode())
        atomic_write_bytes(metrics_file, json.dumps(metrics, indent=1, sort_keys=True).encode())
    logger.info(
        "Evaluation on %s (%d detections):\n%s",
        gt_json,
        len(results),
        format_table({k: v for k, v in metrics.items() if k != "time_seconds"}),
    )
    return metrics
