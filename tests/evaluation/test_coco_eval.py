import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from opmask.data.coco import mask_to_rle
from opmask.evaluation.coco_eval import evaluate_results, format_table


def _noisy_predictions(gt_json, seed=0):
    """GT turned into predictions: shifted boxes, eroded masks, random scores, some misses."""
    rng = np.random.default_rng(seed)
    coco = COCO(gt_json)
    preds = []
    for a in coco.anns.values():
        if rng.random() < 0.2:
            continue
        m = coco.annToMask(a)
        if rng.random() < 0.5:
            m = np.roll(m, int(rng.integers(-3, 4)), axis=1)
        x, y, w, h = a["bbox"]
        d = rng.normal(0, 2, 4)
        preds.append(
            {
                "image_id": a["image_id"],
                "category_id": a["category_id"],
                "bbox": [x + d[0], y + d[1], max(1, w + d[2]), max(1, h + d[3])],
                "score": float(rng.random()),
                "segmentation": mask_to_rle(m),
            }
        )
    return preds


def _direct(gt_json, preds, iou, cats=None):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_json)
        ev = COCOeval(gt, gt.loadRes(preds), iou)
        if cats is not None:
            ev.params.catIds = cats
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[:6] * 100


def test_numbers_equal_pycocotools_overall_strong_weak(datasets_root):
    gt_json = f"{datasets_root}/shapes/val/annotations.json"
    strong = json.load(open(gt_json))["opmask"]["strong_category_ids"]
    weak = json.load(open(gt_json))["opmask"]["weak_category_ids"]
    preds = _noisy_predictions(gt_json)
    res = evaluate_results(gt_json, preds, strong)
    for task, iou, cats in (
        ("bbox", "bbox", None),
        ("segm", "segm", None),
        ("segm_strong", "segm", strong),
        ("segm_weak", "segm", weak),
    ):
        direct = _direct(gt_json, preds, iou, cats)
        ours = [res[task][k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")]
        np.testing.assert_allclose(ours, np.where(direct < 0, np.nan, direct), equal_nan=True)
    assert 20 < res["segm"]["AP"] < 100  # non-trivial, so the comparison means something
    assert set(res["per_class"]["segm"]) == {
        c["name"] for c in json.load(open(gt_json))["categories"]
    }
    assert "segm_weak" in format_table(res)


def test_no_predictions_gives_zero_ap(datasets_root):
    res = evaluate_results(f"{datasets_root}/shapes/val/annotations.json", [], [1, 2])
    assert res["segm_weak"]["AP"] == 0.0 and res["bbox"]["AP"] == 0.0


@pytest.mark.parametrize("seed", [1, 2])
def test_per_class_ap_matches_precision_mean(datasets_root, seed):
    gt_json = f"{datasets_root}/shapes/val/annotations.json"
    res = evaluate_results(gt_json, _noisy_predictions(gt_json, seed), [1])
    vals = [v for v in res["per_class"]["segm"].values() if not np.isnan(v)]
    # COCO's overall AP is the mean of per-class APs over classes present in GT
    assert abs(np.mean(vals) - res["segm"]["AP"]) < 1e-6


def _all_numbers(res: dict) -> dict:
    out = {f"{t}/{k}": v for t, m in res.items() if t != "per_class" for k, v in m.items()}
    out.update({f"{t}/{c}": v for t, m in res["per_class"].items() for c, v in m.items()})
    return out


@pytest.mark.parametrize("gt", ["shapes", "cocolike"])
def test_faster_coco_eval_gives_pycocotools_numbers(datasets_root, tmp_path, gt):
    """TEST.EVALUATOR faster_coco_eval: every task's six numbers and every per-class AP equal
    pycocotools' to 1e-4 (percent), on the shapes set and on a COCO-like set with crowd
    regions, RLE ground truth, images without annotations and COCO's sparse category ids."""
    from opmask.data.cocolike import write_coco_like

    if gt == "shapes":
        gt_json, strong = f"{datasets_root}/shapes/val/annotations.json", [1, 2]
    else:
        gt_json, strong = write_coco_like(str(tmp_path / "ds"), 40, seed=2), [1, 2, 3, 4, 5]
    for seed in (0, 1):
        preds = _noisy_predictions(gt_json, seed)
        ref = _all_numbers(evaluate_results(gt_json, preds, strong))
        fast = _all_numbers(evaluate_results(gt_json, preds, strong, "faster_coco_eval"))
        assert fast.keys() == ref.keys() and len(ref) > 30
        np.testing.assert_allclose(
            [fast[k] for k in ref], list(ref.values()), atol=1e-4, rtol=0, equal_nan=True
        )
    empty = evaluate_results(gt_json, [], strong, "faster_coco_eval")
    assert empty["bbox"]["AP"] == 0.0


def test_unknown_evaluator_is_refused(datasets_root):
    with pytest.raises(ValueError, match="TEST.EVALUATOR must be one of"):
        evaluate_results(f"{datasets_root}/shapes/val/annotations.json", [], [1], "detectron")


def test_box_only_predictions_evaluate_bbox_only_and_stay_json_clean(datasets_root):
    """MODEL.MASK_ON False: no segm tasks, and the predictions can still be written as JSON (they
    used to come back holding pycocotools' box polygons and RLE bytes)."""
    gt_json = f"{datasets_root}/shapes/val/annotations.json"
    preds = [
        {k: v for k, v in p.items() if k != "segmentation"} for p in _noisy_predictions(gt_json, 0)
    ]
    before = json.dumps(preds)
    res = evaluate_results(gt_json, preds, [1])
    assert set(res) == {"bbox", "per_class"} and res["bbox"]["AP"] > 0
    assert json.dumps(preds) == before


def test_infer_runs_in_eval_mode_and_restores_the_callers_mode(datasets_root):
    """``infer``, what evaluation and ``opmask-predict`` both run on a batch: eval-mode outputs
    without gradients (the same as calling the model in eval mode), the model left as it was."""
    import torch
    from PIL import Image

    from opmask.config import load_config
    from opmask.data.mapper import DatasetMapper
    from opmask.evaluation.coco_eval import infer
    from opmask.modeling import build_model

    from ..conftest import SHAPES_OPMASK, TINY

    cfg = load_config(SHAPES_OPMASK, [*TINY, "MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    mapper = DatasetMapper(is_train=False, min_sizes=[96], max_size=160, image_format="RGB")
    image = f"{datasets_root}/shapes/val/images/000001.png"
    with Image.open(image) as im:
        w, h = im.size
    batch = [mapper({"file_name": image, "height": h, "width": w, "image_id": 1})]
    (out,) = infer(model, batch)
    assert model.training and not out["scores"].requires_grad and len(out["boxes"]) > 0
    with torch.no_grad():
        (ref,) = model.eval()(batch)
    assert all(torch.equal(out[k], ref[k]) for k in ("boxes", "scores", "labels", "masks"))
