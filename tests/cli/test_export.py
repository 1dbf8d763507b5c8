"""opmask-export: a run's checkpoint written in Detectron2's names; errors are one line, exit 1."""

import pickle

import torch

from opmask.cli.export import main
from opmask.config import load_config
from opmask.engine.checkpoint import Checkpointer
from opmask.modeling import build_model
from opmask.modeling.weights import load_weights, safe_load_pickle

from ..conftest import SHAPES_OPMASK, TINY, run_cli


def _run_folder(tmp_path):
    """A run folder as opmask-train leaves it: config.yaml and models/model_final.pth."""
    run = tmp_path / "run"
    run.mkdir()
    cfg = load_config(SHAPES_OPMASK, [*TINY, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    (run / "config.yaml").write_text(cfg.dump())
    torch.manual_seed(3)
    model = build_model(cfg)
    Checkpointer(str(run / "models")).save(
        "model_final.pth", {"model": model.state_dict(), "iteration": 6}
    )
    return run, cfg, model


def test_export_writes_a_detectron2_checkpoint(tmp_path):
    run, cfg, model = _run_folder(tmp_path)
    proc = run_cli(["opmask.cli.export", "--format", "detectron2", str(run)], "", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = run / "export" / "model_final_detectron2.pth"
    assert str(out) in proc.stdout and out.is_file()
    d2 = torch.load(out, weights_only=True)["model"]
    assert "roi_heads.box_head.cls_score.weight" in d2  # the official OPMask code's names
    assert "proposal_generator.rpn_head.objectness_logits.weight" in d2
    cls = model.box_predictor.cls_score.weight
    assert torch.equal(d2["roi_heads.box_head.cls_score.weight"][-1], cls[0])  # background last
    fresh = build_model(cfg)
    report = load_weights(fresh, str(out))
    assert report.missing == [] and report.unexpected == []
    assert torch.equal(fresh.mask_head.predictor.weight, model.mask_head.predictor.weight)
    assert list((run / "models").glob("*detectron2*")) == []  # never among our checkpoints

    pkl = tmp_path / "zoo.pkl"
    assert main(["--format", "detectron2", str(run), "--output", str(pkl)]) == 0
    data = safe_load_pickle(str(pkl))  # numpy arrays only
    assert data["__author__"] == "opmask" and data["model"].keys() == d2.keys()
    with open(pkl, "rb") as f:
        assert (
            pickle.load(f)["model"]["backbone.fpn_lateral2.weight"]
            == d2["backbone.fpn_lateral2.weight"].numpy()
        ).all()


def test_export_errors_are_one_line_exit_1(tmp_path, capsys):
    run, _, _ = _run_folder(tmp_path)
    for f in (run / "models").iterdir():
        f.unlink()
    cases = ((tmp_path / "nope", "no config.yaml"), (tmp_path, "no config.yaml"))
    for target, words in (*cases, (run, "no valid checkpoint")):
        assert main(["--format", "detectron2", str(target)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("opmask-export: error:") and words in err and err.count("\n") == 1
    assert not (run / "export").exists()
    proc = run_cli(["opmask.cli.export", "--format", "onnx", str(run)], "", ".")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr  # a bad command line
