"""opmask-predict: overlays and one COCO results JSON (AP equal to the evaluator's), panels, EXIF,
progress, and its errors (one line, exit 1, nothing written; unreadable inputs named, exit 1)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from opmask.cli.predict import main
from opmask.data.build import build_test_loader
from opmask.data.catalog import load_datasets, strong_ids_from_cfg
from opmask.evaluation.coco_eval import evaluate, evaluate_results
from opmask.tools.predict import Predictor
from opmask.tools.predict_files import RESULTS, GroundTruth, read_rgb
from opmask.train.vis import MASK_ALPHA, colour_of, compose, draw_detections, draw_priors

from ..tools.test_predict import make_run


@pytest.fixture(scope="module")
def tiny(datasets_root, tmp_path_factory):
    """(run folder, cfg, model, val dicts, val info)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPMASK_DATASETS", datasets_root)
        run, cfg, model = make_run(tmp_path_factory.mktemp("predict_cli"))
        dicts, info = load_datasets(["shapes_val"], index=False)
    return run, cfg, model, dicts, info


def _err_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_overlays_and_json_whose_ap_is_the_evaluators(tiny, shapes_env, tmp_path, capsys):
    run, cfg, model, dicts, info = tiny
    out = tmp_path / "pred"
    args = [str(run), "--input", "shapes_val", "--output", str(out)]
    assert main([*args, "--confidence-threshold", "0"]) == 0
    captured = capsys.readouterr()
    assert f"{len(dicts)}/{len(dicts)} images" in captured.err and "ETA" in captured.err
    names = sorted(os.path.basename(d["file_name"]) for d in dicts)
    assert sorted(os.listdir(out)) == sorted([RESULTS, *names])  # the inputs' names, as .png
    gt_json = info.json_file
    coco = COCO(gt_json)
    dt = coco.loadRes(str(out / RESULTS))  # pycocotools reads it
    assert set(dt.getImgIds()) <= set(coco.getImgIds()) and len(dt.anns) > 0
    with open(out / RESULTS) as f:
        results = json.load(f)
    assert {r["category_id"] for r in results} <= set(info.category_ids)
    strong = strong_ids_from_cfg(cfg, info)
    ours = evaluate_results(gt_json, results, strong)
    theirs = evaluate(
        model,
        build_test_loader(cfg, dicts),
        gt_json=gt_json,
        category_id_of=info.category_id,
        strong_ids=strong,
        outputs=None,
    )
    for task in ("bbox", "segm", "segm_strong", "segm_weak", "per_class"):
        np.testing.assert_equal(ours[task], theirs[task])  # NaN (no small objects) == NaN
    # the seeded untrained model: bbox AP ~0.02, mask APs 0 (its masks are bit-for-bit the
    # evaluator's: tests/tools/test_predict.py)
    assert ours["bbox"]["AP"] > 0


def test_overlay_png_is_coloured_where_the_mask_is(tiny, shapes_env, tmp_path):
    run, *_, dicts, _ = tiny
    path = dicts[0]["file_name"]
    image = read_rgb(path)
    every = Predictor.from_run(str(run), score_threshold=0.0)(image)
    sides = every.boxes[:, 2:] - every.boxes[:, :2]
    k = int(np.argmax((sides > 20).all(axis=1)))  # the best detection with a box over 20 x 20
    top = float(every.scores[k])
    out = tmp_path / "one"
    args = [str(run), "--input", path, "--output", str(out), "--confidence-threshold", str(top)]
    assert main(args) == 0
    png = np.asarray(Image.open(out / os.path.basename(path)).convert("RGB"))
    h, w = image.shape[:2]
    panel = png[:h, :w].astype(int)
    dets = Predictor.from_run(str(run), score_threshold=top)(image)
    assert len(dets) == k + 1
    changed = (panel != image).any(axis=2)
    lines = np.zeros((h, w), bool)  # box outlines and captions
    for bx0, by0, bx1, by1 in dets.boxes.astype(int):
        lines[max(by0 - 2, 0) : by1 + 3, max(bx0 - 2, 0) : bx1 + 3] = True
        lines[max(by0 + 3, 0) : by1 - 2, bx0 + 3 : bx1 - 2] = False
        lines[max(by0 - 2, 0) : by0 + 16, max(bx0 - 2, 0) :] = True
    masks = dets.masks
    assert changed[~masks.any(axis=0) & ~lines].sum() == 0  # nothing drawn elsewhere
    assert changed[masks.any(axis=0)].all()  # every mask pixel coloured
    only_k = masks[k] & ~masks[:k].any(axis=0) & ~lines
    assert only_k.sum() > 20
    colour = np.array(colour_of(dets.labels[k], dets.weak[k]))
    blend = image[only_k] * (1 - MASK_ALPHA) + colour * MASK_ALPHA
    assert np.abs(panel[only_k] - blend).max() <= 1  # the class colour at alpha MASK_ALPHA
    assert np.array_equal(png[h:], np.asarray(compose([png[:h, :w]]))[h:])  # the legend line
    assert (png[h:] < 128).any()


def test_show_prior_and_gt_write_their_panels(tiny, shapes_env, tmp_path):
    run, *_, dicts, info = tiny
    path = dicts[1]["file_name"]
    image = read_rgb(path)
    out = tmp_path / "panels"
    args = [str(run), "--input", path, "--output", str(out), "--confidence-threshold", "0"]
    assert main([*args, "--show-prior", "--gt", info.json_file]) == 0
    png = np.asarray(Image.open(out / os.path.basename(path)).convert("RGB"))
    h, w = image.shape[:2]
    predictor = Predictor.from_run(str(run), score_threshold=0.0)
    (dets,) = predictor.predict([image], with_prior=True)
    assert len(dets) > 0
    truth = GroundTruth(info.json_file, predictor).detections(path, (h, w))
    assert len(truth) > 0
    panels = [draw_detections(image, dets), draw_priors(image, dets)]
    panels.append(draw_detections(image, truth, scores=False))
    expected = np.asarray(compose(panels))
    assert png.shape == expected.shape and np.array_equal(png, expected)
    prior_panel = png[:h, w + 4 : 2 * w + 4].astype(int)
    hot = dets.priors.max(axis=0) > 0.5
    red = prior_panel[hot, 0] > prior_panel[hot, 1]  # the prior is red (but box outlines)
    assert hot.sum() > 0 and red.mean() > 0.8


def test_exif_jpeg_and_its_upright_png_give_the_same_results(tiny, shapes_env, tmp_path):
    run, *_, dicts, _ = tiny
    stored = read_rgb(dicts[2]["file_name"])[:, :72]
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "a.jpg", "JPEG", quality=95, exif=exif.tobytes())
    Image.fromarray(read_rgb(str(tmp_path / "a.jpg"))).save(tmp_path / "b.png")
    for name in ("a.jpg", "b.png"):
        args = [str(run), "--input", str(tmp_path / name), "--confidence-threshold", "0"]
        assert main([*args, "--output", str(tmp_path / name[0])]) == 0
    a, b = (json.loads((tmp_path / k / RESULTS).read_text()) for k in "ab")
    assert a == b and len(a) > 0
    assert Image.open(tmp_path / "a" / "a.png").size[1] == 72 + 16  # upright, and the legend


def test_unreadable_input_is_named_and_skipped_exit_1(tiny, shapes_env, tmp_path, capsys):
    run, *_, dicts, _ = tiny
    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    good = [d["file_name"] for d in dicts[:2]]
    out = tmp_path / "out"
    args = [str(run), "--input", good[0], str(notes), good[1], "--output", str(out)]
    assert main(args) == 1
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "skipped" in line] == [
        f"opmask-predict: skipped {notes}: not a readable image "
        "(not an image file PIL can identify)"
    ]
    assert err[-1].startswith("opmask-predict: error: 1 of 3 inputs could not be read")
    assert sorted(os.listdir(out)) == sorted([RESULTS, *(os.path.basename(g) for g in good)])


def test_bad_inputs_are_one_line_exit_1_nothing_written(tiny, shapes_env, tmp_path, capsys):
    run, *_, dicts, _ = tiny
    img = dicts[0]["file_name"]
    out = tmp_path / "out"
    empty = tmp_path / "empty_run"
    empty.mkdir()
    (empty / "config.yaml").write_text((run / "config.yaml").read_text())
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    cases = [
        ([str(tmp_path / "nope"), "--input", img, "--output", str(out)], "no such run folder"),
        ([str(empty), "--input", img, "--output", str(out)], "no valid checkpoint"),
        ([str(run), "--input", str(tmp_path / "x.png"), "--output", str(out)], "no such file"),
        ([str(run), "--input", img, "--output", str(blocker / "out")], "cannot write in"),
        ([str(run), "--input", img, "--output", str(blocker)], "is not a folder"),
        ([str(blocker), "--input", img, "--output", str(out)], "need --config-file"),
    ]
    for args, words in cases:
        assert main(args) == 1, words
        err = _err_line(capsys)
        assert err.startswith("opmask-predict: error: ") and words in err, err
        assert not out.exists() and blocker.read_text() == "x"
    assert sorted(os.listdir(empty)) == ["config.yaml"]


def test_existing_output_needs_overwrite(tiny, shapes_env, tmp_path, capsys):
    run, *_, dicts, _ = tiny
    img = dicts[0]["file_name"]
    out = tmp_path / "out"
    args = [str(run), "--input", img, "--output", str(out), "--confidence-threshold", "0"]
    assert main(args) == 0
    before = {n: (out / n).read_bytes() for n in os.listdir(out)}
    os.utime(out / RESULTS, (1, 1))
    capsys.readouterr()
    assert main([*args[:-1], "0.2"]) == 1
    err = _err_line(capsys)
    assert "pass --overwrite" in err and os.path.getmtime(out / RESULTS) == 1
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == before
    assert main([*args[:-1], "0.2", "--overwrite"]) == 0
    assert (out / RESULTS).read_bytes() != before[RESULTS]


def test_help_documents_exit_codes_and_a_bad_flag_is_exit_2(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    assert "exit codes: 0 all written; 1 bad input" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main(["RUN", "--output", "x"])
    assert done.value.code == 2
    err = _err_line(capsys)
    assert err.startswith("opmask-predict: error: ") and "--input" in err
    for bad in ("-0.1", "1.5", "nan", "high"):
        with pytest.raises(SystemExit) as done:
            main(["RUN", "--input", "x.png", "--output", "x", "--confidence-threshold", bad])
        assert done.value.code == 2
        err = _err_line(capsys)
        assert "--confidence-threshold" in err and "[0, 1]" in err, err


def test_max_size_shrinks_the_panels_not_the_results(tiny, shapes_env, tmp_path):
    run, *_, dicts, _ = tiny
    path = dicts[0]["file_name"]
    h, w = read_rgb(path).shape[:2]
    args = [str(run), "--input", path, "--confidence-threshold", "0"]
    assert main([*args, "--output", str(tmp_path / "full")]) == 0
    assert main([*args, "--output", str(tmp_path / "small"), "--max-size", "48"]) == 0
    s = 48 / max(h, w)
    small = Image.open(tmp_path / "small" / os.path.basename(path))
    assert small.size[1] == round(h * s) + 16  # the panel, then the legend's line
    full, shrunk = ((tmp_path / k / RESULTS).read_text() for k in ("full", "small"))
    assert full == shrunk


def test_batches_of_several_images_write_every_image(tiny, shapes_env, tmp_path):
    """--batch-size 4 pads images of two shapes into one batch (scores may move in the last
    digits, so only the files and image ids are compared with batches of one)."""
    run, *_, dicts, _ = tiny
    args = [str(run), "--input", "shapes_val", "--confidence-threshold", "0"]
    assert main([*args, "--output", str(tmp_path / "b4"), "--batch-size", "4"]) == 0
    assert main([*args, "--output", str(tmp_path / "b1")]) == 0
    assert sorted(os.listdir(tmp_path / "b4")) == sorted(os.listdir(tmp_path / "b1"))
    runs = [json.loads((tmp_path / k / RESULTS).read_text()) for k in ("b1", "b4")]
    ids = [{r["image_id"] for r in results} for results in runs]
    assert ids[0] == ids[1] == {d["image_id"] for d in dicts}


def test_show_prior_of_a_baseline_run_is_refused(tiny, shapes_env, tmp_path, capsys):
    """The baseline's mask head gets no object mask prior: one line, exit 1, nothing written."""
    from opmask.config import load_config
    from opmask.modeling import build_model
    from opmask.run.folder import RunFolder
    from opmask.train.checkpoint import Checkpointer

    from ..conftest import SHAPES_BASELINE, TINY

    run = tmp_path / "baseline"
    run.mkdir()
    cfg = load_config(SHAPES_BASELINE, [*TINY, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    (run / "config.yaml").write_text(cfg.dump())
    model = build_model(cfg)
    state = {"model": model.state_dict(), "iteration": 1}
    Checkpointer(str(run / "models"), RunFolder.CHECKPOINTS).save("model_final.pth", state)
    img, out = tiny[3][0]["file_name"], tmp_path / "out"
    assert main([str(run), "--input", img, "--output", str(out), "--show-prior"]) == 1
    assert "has no object mask prior" in _err_line(capsys) and not out.exists()
    assert main([str(run), "--input", img, "--output", str(out)]) == 0  # without it: fine
