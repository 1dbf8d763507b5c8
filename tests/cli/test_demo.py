import json

import pytest

from ..conftest import TINY, run_cli

TASKS = ("bbox", "segm", "segm_strong", "segm_weak")


@pytest.mark.slow
def test_demo_trains_both_models_and_writes_the_comparison(datasets_root, tmp_path):
    out = tmp_path / "demo"
    head = ["opmask.cli.demo", "--output", str(out), "--seed", "3"]
    # both from scratch (the shared first stage: the user-dataset test below)
    args = [*head, "--pretrain-iters", "0", *TINY]
    first = run_cli(args, datasets_root, str(tmp_path))
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    for model in ("baseline", "opmask"):
        # the summary holds exactly what each run's own evaluation wrote
        run_results = json.loads(
            (out / model / "inference" / "shapes_val" / "results.json").read_text()
        )
        assert summary[model] == {t: run_results[t]["AP"] for t in TASKS}
        assert (out / model / "models" / "model_final.pth").is_file()
    for model in ("baseline", "opmask"):  # the GT-box diagnostic of each run, as written there
        written = out / model / "inference" / "shapes_val" / "gt_box_diagnostics.json"
        diag = json.loads(written.read_text())
        assert summary["gt_boxes"][model] == {k: v for k, v in diag.items() if k != "checkpoint"}
        assert f"{diag['mask_iou_weak']:.3f}" in first.stdout
    assert "omp_iou_weak" in summary["gt_boxes"]["opmask"]
    table = first.stdout[first.stdout.index("model ") :]
    assert "weak mask AP" in table and "gain" in table
    gain = next(line for line in table.splitlines() if line.startswith("gain")).split()
    assert float(gain[4]) == round(
        summary["opmask"]["segm_weak"] - summary["baseline"]["segm_weak"], 2
    )

    again = run_cli(args, datasets_root, str(tmp_path))  # finished runs are reused, not retrained
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["opmask"] == summary["opmask"]
    log = again.stderr + again.stdout  # both runs resume at their end: no step is repeated
    assert log.count("Starting training from iteration 6 of 6") == 2
    assert "iter: " not in log

    # the same folder with the shared first stage: refused before anything is trained or written
    other = run_cli([*head, "--pretrain-iters", "2", *TINY], datasets_root, str(tmp_path))
    assert other.returncode == 1 and other.stderr.count("\n") == 1, other.stderr[-3000:]
    assert f"{out / 'baseline'} was made with MODEL.WEIGHTS ''" in other.stderr
    assert "give another --output" in other.stderr and not (out / "pretrain").exists()


def test_demo_refuses_data_made_with_another_seed(datasets_root, tmp_path):
    proc = run_cli(
        ["opmask.cli.demo", "--output", str(tmp_path / "d"), "--seed", "0"],
        datasets_root,
        str(tmp_path),
    )
    assert proc.returncode == 1
    assert "generated with seed 3, not --seed 0" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "d").exists()


def _user_dataset(root, family="texture", declare_split=True):
    """A generated dataset used as a user's own COCO files: (train spec, val spec)."""
    from opmask.data.shapes import generate

    generate(str(root), seed=5, num_train=8, num_val=4, image_size=96, family=family)
    if not declare_split:
        for split in ("train", "val"):
            path = root / split / "annotations.json"
            data = json.loads(path.read_text())
            del data["opmask"]
            path.write_text(json.dumps(data))
    return tuple(f"{root}/{s}/annotations.json:{root}/{s}/images" for s in ("train", "val"))


def _refused(capsys, tmp_path, argv, message):
    from opmask.cli.demo import main

    out = tmp_path / "never"
    assert main(["--output", str(out), *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("opmask-demo: error:")
    assert not out.exists()


def test_demo_refuses_bad_dataset_specs(tmp_path, capsys, shapes_env):
    train, val = _user_dataset(tmp_path / "tex")
    _refused(capsys, tmp_path, ["--train", train], "--train and --val go together")
    _refused(
        capsys,
        tmp_path,
        ["--train", "a.txt:b", "--val", val],
        "expected ANNOTATIONS.json:IMAGE_DIR",
    )
    missing = f"{tmp_path}/tex/train/annotations.json:{tmp_path}/nowhere"
    _refused(capsys, tmp_path, ["--train", missing, "--val", val], "nowhere not found")
    gone = f"{tmp_path}/none.json:{tmp_path}/tex/train/images"
    _refused(capsys, tmp_path, ["--train", gone, "--val", val], "annotation file not found")
    for bad, why in (("1,x", "comma-separated category ids"), ("1,1", "repeated")):
        _refused(capsys, tmp_path, ["--train", train, "--val", val, "--strong-ids", bad], why)


def test_demo_refuses_user_data_without_split_and_other_families(tmp_path, capsys, monkeypatch):
    train, val = _user_dataset(tmp_path / "plain", "shape", declare_split=False)
    _refused(capsys, tmp_path, ["--train", train, "--val", val], "give --strong-ids")
    monkeypatch.setenv("OPMASK_DATASETS", str(tmp_path / "root"))
    _user_dataset(tmp_path / "root" / "shapes", "texture")  # built-in location, other family
    _refused(capsys, tmp_path, ["--seed", "5"], "is of the 'texture' family")


def test_the_shared_first_stage_is_the_default_recipe():
    from opmask.cli.demo import parser

    assert parser().parse_args([]).pretrain_iters == 300  # README's numbers are of this recipe


@pytest.mark.slow
def test_demo_on_a_user_dataset_with_a_shared_pretrained_backbone(tmp_path):
    """--train/--val/--strong-ids run the same recipe on any COCO files; --pretrain-iters trains
    the shared first stage once and starts both models from its backbone + FPN."""
    train, val = _user_dataset(tmp_path / "tex")
    out = tmp_path / "demo"
    args = ["opmask.cli.demo", "--output", str(out), "--train", train, "--val", val]
    args += ["--strong-ids", "1,2,4,8", "--pretrain-iters", "2", *TINY]
    proc = run_cli(args, str(tmp_path / "unused"), str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["gt_boxes"]) == {"baseline", "opmask"}
    assert "weak mask AP" in proc.stdout and "strong mask IoU" in proc.stdout
    assert (out / "pretrain" / "backbone.pth").is_file()
    import torch

    body = torch.load(out / "pretrain" / "backbone.pth", weights_only=True)["model"]
    assert body and all(k.startswith("backbone.") for k in body)
    import yaml

    for model in ("baseline", "opmask"):
        cfg = yaml.safe_load((out / model / "config.yaml").read_text())
        assert cfg["MODEL"]["WEIGHTS"] == str(out / "pretrain" / "backbone.pth")
        assert cfg["EXP"]["STRONG_CATEGORY_IDS"] == [1, 2, 4, 8]


def test_demo_help_shows_how_to_run_another_family():
    """The help's examples are commands that work: the family exists and the flags are real."""
    from opmask.cli.demo import parser
    from opmask.data.shapes import FAMILIES

    text = parser().format_help()
    assert "opmask-data shapes --family oriented" in text and "oriented" in FAMILIES
    examples = text.split("examples:")[1]
    flags = {a for action in parser()._actions for a in action.option_strings}
    used = {w for w in examples.split() if w.startswith("--")}
    assert used - {"--family"} <= flags and {"--train", "--val", "--seed"} <= used
