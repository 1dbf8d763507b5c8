"""opmask-export: a run's checkpoint written in Detectron2's names; errors are one line, exit 1."""

import os
import pickle
import re

import torch

from opmask.cli.export import main
from opmask.config import load_config
from opmask.modeling import build_model
from opmask.modeling.weights import load_weights, safe_load_pickle
from opmask.run.folder import RunFolder
from opmask.train.checkpoint import Checkpointer

from ..conftest import SHAPES_OPMASK, TINY, run_cli


def _run_folder(tmp_path):
    """A run folder as opmask-train leaves it: config.yaml and models/model_final.pth."""
    run = tmp_path / "run"
    run.mkdir()
    cfg = load_config(SHAPES_OPMASK, [*TINY, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    (run / "config.yaml").write_text(cfg.dump())
    torch.manual_seed(3)
    model = build_model(cfg)
    Checkpointer(str(run / "models"), RunFolder.CHECKPOINTS).save(
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


def _snapshot(folder):
    """Every file under ``folder`` (symlinks not followed) and its bytes."""
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and not p.is_symlink()}


def test_export_never_writes_into_the_runs_own_files(tmp_path, capsys):
    """models/, config.yaml, metrics.json, logs, inference/: refused, also through a symlink or
    "..", also with --overwrite; the run folder is left byte for byte as it was."""
    run, _, _ = _run_folder(tmp_path)
    (run / "metrics.json").write_text('{"iteration": 0}\n')
    (tmp_path / "models_link").symlink_to(run / "models")
    (tmp_path / "innocent.pth").symlink_to(run / "models" / "model_final.pth")
    before = _snapshot(run)
    real = os.path.realpath(run)
    targets = [
        run / "models" / "model_final.pth",  # the run's own final checkpoint
        run / "models" / "model_0000009.pth",  # a new file in models/
        run / "models" / "last_checkpoint",
        run / "config.yaml",
        run / "metrics.json",
        run / "log.txt.rank1",
        run / "inference" / "shapes_val" / "results.json",
        run / "attempts.jsonl",
        tmp_path / "models_link" / "model_final.pth",  # through a symlinked folder
        tmp_path / "innocent.pth",  # a symlink to the checkpoint
        run / "export" / ".." / "models" / "model_final.pth",  # through ".."
    ]
    for out in targets:
        for extra in ([], ["--overwrite"]):
            assert main(["--format", "detectron2", str(run), "--output", str(out), *extra]) == 1
            err = capsys.readouterr().err
            assert err == (
                f"opmask-export: error: --output {out}: refusing to write into run folder "
                f"{real}'s own files (models/, config.yaml, metrics.json, logs, inference/ ...); "
                f"write it elsewhere, e.g. {real}/export/\n"
            ), out
    assert _snapshot(run) == before and not (run / "export").exists()
    assert os.path.realpath(tmp_path / "innocent.pth") == os.path.join(
        real, "models", "model_final.pth"
    )


def test_export_overwrites_an_existing_file_only_when_asked(tmp_path, capsys):
    run, _, _ = _run_folder(tmp_path)
    mine = tmp_path / "mine.pth"
    mine.write_bytes(b"keep me")
    argv = ["--format", "detectron2", str(run), "--output", str(mine)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err == f"opmask-export: error: --output {mine} exists; pass --overwrite to replace it\n"
    assert mine.read_bytes() == b"keep me"
    for out, words in (
        (tmp_path, f"--output {tmp_path} is a folder; name the file to write"),
        (tmp_path / "no" / "x.pth", f"--output {tmp_path / 'no' / 'x.pth'}: folder "),
    ):
        assert main(["--format", "detectron2", str(run), "--output", str(out)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"opmask-export: error: {words}") and err.count("\n") == 1
    assert not (tmp_path / "no").exists()
    assert main([*argv, "--overwrite"]) == 0
    assert "roi_heads.box_head.cls_score.weight" in torch.load(mine, weights_only=True)["model"]
    # the default output too: a second export refuses to replace the first one's file
    assert main(["--format", "detectron2", str(run)]) == 0
    default = run / "export" / "model_final_detectron2.pth"
    first = default.read_bytes()
    capsys.readouterr()
    assert main(["--format", "detectron2", str(run)]) == 1
    err = capsys.readouterr().err
    assert err.endswith(f"--output {default} exists; pass --overwrite to replace it\n")
    assert default.read_bytes() == first
    assert main(["--format", "detectron2", str(run), "--overwrite"]) == 0


def test_export_after_the_config_was_edited_names_the_mismatch(tmp_path, capsys):
    """A config.yaml edited after training (the mask head's width 32 -> 16): one line naming the
    first mismatched tensors and their shapes, exit 1, nothing written."""
    run, _, _ = _run_folder(tmp_path)
    opts = [*TINY, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.ROI_MASK_HEAD.CONV_DIM", "16"]
    (run / "config.yaml").write_text(load_config(SHAPES_OPMASK, opts).dump())
    assert main(["--format", "detectron2", str(run)]) == 1
    err = capsys.readouterr().err
    checkpoint = run / "models" / "model_final.pth"
    assert re.fullmatch(
        rf"opmask-export: error: checkpoint {re.escape(str(checkpoint))} does not match the "
        r"config: mask_head\.\S+ \(32, \d+, 3, 3\) in the checkpoint vs \(16, \d+, 3, 3\) in the "
        r"model; mask_head\.\S+ \(32,\) in the checkpoint vs \(16,\) in the model; \d+ more\n",
        err,
    ), err
    assert not (run / "export").exists()
