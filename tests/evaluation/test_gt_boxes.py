import json

import numpy as np
import pytest
import torch

from opmask.config import load_config
from opmask.data.catalog import load_datasets
from opmask.data.mapper import DatasetMapper
from opmask.evaluation.gt_boxes import gt_box_diagnostics, mask_iou
from opmask.modeling import build_model
from opmask.modeling.mask_paste import paste_masks_in_image

from ..conftest import SHAPES_BASELINE, SHAPES_OPMASK, TINY, run_cli


def test_mask_iou_golden():
    a = torch.zeros(3, 4, 4, dtype=torch.bool)
    b = torch.zeros(3, 4, 4, dtype=torch.bool)
    a[0, :2], b[0, 1:3] = True, True  # 4 shared of 12
    a[1], b[1] = True, True
    torch.testing.assert_close(mask_iou(a, b), torch.tensor([1 / 3, 1.0, 0.0]))


class _AllForeground(torch.nn.Module):
    def forward(self, x, prior=None):  # (N, C, 14, 14) -> (N, 1, 28, 28) of +20 logits
        return x.new_full((len(x), 1, 28, 28), 20.0)


@pytest.mark.parametrize("config", [SHAPES_OPMASK, SHAPES_BASELINE])
def test_all_foreground_mask_head_scores_the_box_fill(shapes_env, config):
    """A mask head that fills every box scores, per instance, the IoU of the pasted box fill with
    the GT mask, averaged per split; the OMP key exists exactly for OPMask; all values in [0, 1]."""
    cfg = load_config(config, TINY)
    dicts, _ = load_datasets(cfg.DATASETS.TEST)
    model = build_model(cfg)
    model.mask_head = _AllForeground()
    mapper = DatasetMapper(
        is_train=True, min_sizes=[96], max_size=240, image_format="RGB", mask_format="bitmask"
    )
    strong = {1, 2, 4, 8}
    res = gt_box_diagnostics(model, dicts, mapper, strong)
    want = {"strong": [], "weak": []}
    for d in dicts:
        inst = mapper(d)["instances"]
        for box, label, gt in zip(inst["boxes"], inst["labels"].tolist(), inst["masks"].bool()):
            ones = torch.ones(1, 1, 28, 28)  # the box fill as inference pastes it
            rect = paste_masks_in_image(ones, box[None], gt.shape)[0]
            split = "strong" if label in strong else "weak"
            want[split].append(mask_iou(rect[None], gt[None]).item())
    assert want["strong"] and want["weak"]
    for split in ("strong", "weak"):
        assert res[f"mask_iou_{split}"] == pytest.approx(np.mean(want[split]), abs=1e-6)
    assert ("omp_iou_weak" in res) == (config == SHAPES_OPMASK)
    assert set(res) >= {"cls_acc_strong", "cls_acc_weak"}
    assert all(0 <= v <= 1 for v in res.values())


@pytest.mark.slow
def test_cli_writes_json_next_to_the_evaluation(shapes_env, tmp_path):
    run = tmp_path / "run"
    train = run_cli(
        ["opmask.cli.train", "--config-file", SHAPES_OPMASK, "--output", str(run), *TINY],
        shapes_env,
        str(tmp_path),
    )
    assert train.returncode == 0, train.stderr[-2000:]
    proc = run_cli(["opmask.cli.diagnose", str(run)], shapes_env, str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "mask IoU" in proc.stdout and "OMP >= 0.5 IoU" in proc.stdout
    found = list(run.glob("inference/*/gt_box_diagnostics.json"))
    assert len(found) == 1
    data = json.loads(found[0].read_text())
    assert data["checkpoint"].endswith("model_final.pth") and "mask_iou_weak" in data
    missing = run_cli(["opmask.cli.diagnose", str(tmp_path / "nope")], shapes_env, ".")
    assert missing.returncode == 1 and "error:" in missing.stderr
    assert "Traceback" not in missing.stderr
