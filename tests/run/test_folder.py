"""RunFolder: every path of a run folder, metrics.json read past a torn last line, attempts.jsonl
written and read back in launch/job.py's format, the last iteration and the newest checkpoint."""

from __future__ import annotations

import json
import os

import pytest
import torch

from opmask.run.folder import RunFolder
from opmask.train import events as ev
from opmask.train.checkpoint import CheckpointError


def test_paths(tmp_path):
    run = RunFolder(tmp_path)
    assert run.path == str(tmp_path)
    expected = {
        run.config: "config.yaml",
        run.lock: "run.lock",
        run.log(): "log.txt",
        run.log(3): "log.txt.rank3",
        run.metrics: "metrics.json",
        run.tensorboard: "tensorboard",
        run.models: "models",
        run.last_checkpoint_file: "models/last_checkpoint",
        run.inference(): "inference",
        run.inference("shapes_val"): "inference/shapes_val",
        run.results("shapes_val"): "inference/shapes_val/results.json",
        run.predictions("v"): "inference/v/coco_instances_results.json",
        run.gt_box_diagnostics("v"): "inference/v/gt_box_diagnostics.json",
        run.export(): "export",
        run.export("m.pth"): "export/m.pth",
        run.attempts: "attempts.jsonl",
        run.submission: "submission.json",
        run.slurm: "slurm",
    }
    for path, rel in expected.items():
        assert path == os.path.join(str(tmp_path), rel)
    assert not os.listdir(tmp_path)  # paths only: nothing is created
    assert not run.is_run()
    (tmp_path / "config.yaml").write_text("SEED: 1\n")
    assert run.is_run()


def test_metrics_keys_and_torn_last_line(tmp_path):
    run = RunFolder(tmp_path)
    assert run.read_metrics() == []
    train = {ev.ITERATION: 0, ev.TOTAL_LOSS: 1.5, ev.LR: 0.01, ev.ETA_SECONDS: 3.0}
    evaluation = {ev.ITERATION: 1, ev.WEAK_MASK_AP: 12.5, ev.STRONG_MASK_AP: 30.0}
    with open(run.metrics, "w", encoding="utf-8") as f:
        f.write(json.dumps(train) + "\n" + json.dumps(evaluation) + "\n")
        f.write('{"iteration": 2, "total_lo')  # killed mid-write
    assert run.read_metrics() == [train, evaluation]
    assert ev.WEAK_MASK_AP == "segm_weak/AP" and ev.eval_key("bbox", "AP") == ev.BOX_AP


def test_metrics_written_by_the_event_writer_are_read_back(tmp_path):
    from opmask.train.events import EventWriter

    run = RunFolder(tmp_path)
    w = EventWriter(run.metrics, run.tensorboard, start_iter=0, max_iter=2)
    w.log_train(0, {"loss_cls": 1.0, "loss_mask": 0.5}, 0.01, 0.1, 0.01, console=False)
    w.log_eval(1, {"segm_weak": {"AP": 7.0}, "per_class": {"x": 1}})
    w.close()
    records = RunFolder(tmp_path).read_metrics()
    assert records[0][ev.ITERATION] == 0 and records[0][ev.TOTAL_LOSS] == 1.5
    assert records[1] == {ev.ITERATION: 1, ev.WEAK_MASK_AP: 7.0}
    assert os.path.isdir(RunFolder(tmp_path).tensorboard)


def _state(it: int) -> dict:
    return {"model": {"w": torch.full((2,), float(it))}, "iteration": it}


def test_last_iteration_and_latest_checkpoint(tmp_path):
    run = RunFolder(tmp_path)
    assert run.last_iteration() is None and run.latest_checkpoint() is None
    ckpt = run.checkpointer()
    ckpt.save("model_0000009.pth", _state(9))
    ckpt.save("model_0000019.pth", _state(19))
    assert run.last_iteration() == 19
    path, state = run.latest_checkpoint()
    assert path == os.path.join(run.models, "model_0000019.pth") and state["iteration"] == 19
    with open(run.last_checkpoint_file, encoding="utf-8") as f:
        assert f.read().strip() == "model_0000019.pth"
    ckpt.save("model_final.pth", _state(20))
    assert run.last_iteration() is None  # final: not a periodic checkpoint
    for name in os.listdir(run.models):
        if name.endswith(".pth"):
            with open(os.path.join(run.models, name), "wb") as f:
                f.write(b"garbage")
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        run.latest_checkpoint()


def test_read_results(tmp_path):
    run = RunFolder(tmp_path)
    assert run.read_results() == {}
    os.makedirs(run.inference("b_val"))
    os.makedirs(run.inference("a_val"))  # no results.json: skipped
    with open(run.results("b_val"), "w", encoding="utf-8") as f:
        json.dump({"segm": {"AP": 3.0}}, f)
    assert run.read_results() == {"segm": {"AP": 3.0}}
    assert run.read_results("b_val") == {"segm": {"AP": 3.0}}
    assert run.read_results("a_val") == {}
