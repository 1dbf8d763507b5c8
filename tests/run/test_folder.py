"""RunFolder: every path of a run folder, metrics.json read past a torn last line, attempts.jsonl
written and read back in launch/job.py's format, the last iteration and the newest checkpoint."""

from __future__ import annotations

import ast
import json
import os
import pathlib

import pytest
import torch

from opmask.run.folder import RunFolder
from opmask.train import events as ev
from opmask.train.checkpoint import CheckpointError

ROOT = pathlib.Path(__file__).resolve().parents[2]


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


# String constants outside the owner that equal a layout name but are not about a run folder:
NOT_A_RUN_FOLDER = {
    ("launch/executor.py", "slurm"): "submitit's cluster name",
    ("launch/sweep.py", "slurm"): "the sweep folder's own submitit folder",
    ("opmask/utils/resources.py", "slurm"): "the shipped slurm/profiles folder",
}


def layout_names_outside_the_owner(root: pathlib.Path) -> list[str]:
    """``file:line 'text'`` of every string constant in the package, the launcher and the scripts
    (docstrings and messages with spaces aside) that spells a name of the run folder's layout
    (equal to one, or a path ending or starting with one) anywhere but ``opmask/run/folder.py``."""
    c = RunFolder.CHECKPOINTS
    names = {v for k, v in vars(RunFolder).items() if k.isupper() and isinstance(v, str)}
    names |= {c.final, c.pointer, c.periodic, c.periodic.partition("{")[0]}
    found = []
    paths = [*root.glob("opmask/**/*.py"), *root.glob("launch/*.py"), *root.glob("scripts/*.py")]
    for path in sorted(paths):
        rel = path.relative_to(root).as_posix()
        if rel == "opmask/run/folder.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            s = node.value if isinstance(node, ast.Constant) else None
            if not isinstance(s, str) or id(node) in docstrings or any(ch.isspace() for ch in s):
                continue
            parts = s.strip("/").split("/")
            spelled = s in names or parts[0] in names or parts[-1] in names
            if spelled and (rel, s) not in NOT_A_RUN_FOLDER:
                found.append(f"{rel}:{node.lineno} {s!r}")
    return sorted(found, key=lambda f: (f.split(":")[0], int(f.split(":")[1].split()[0])))


def test_no_layout_name_is_spelled_outside_the_owner():
    assert layout_names_outside_the_owner(ROOT) == []


def test_a_spelled_layout_name_is_found(tmp_path):
    (tmp_path / "opmask" / "train").mkdir(parents=True)
    (tmp_path / "opmask" / "train" / "bad.py").write_text(
        '"""models/model_final.pth in a docstring is fine."""\n'
        "import os\n"
        'A = os.path.join("run", "model_final.pth")\n'
        'B = "metrics.json is not read here"\n'
        'C = "models/last_checkpoint"\n'
    )
    found = layout_names_outside_the_owner(tmp_path)
    assert found == [
        "opmask/train/bad.py:3 'model_final.pth'",
        "opmask/train/bad.py:5 'models/last_checkpoint'",
    ]
