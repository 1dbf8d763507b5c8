"""The predictor computes what the run's evaluation computes; overlays colour the mask pixels;
EXIF orientation is applied; the object mask prior is exposed without changing the outputs."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from opmask.config import load_config
from opmask.data.build import build_test_loader
from opmask.data.catalog import load_datasets
from opmask.evaluation.coco_eval import run_inference
from opmask.modeling import build_model
from opmask.modeling.weights import detectron2_file
from opmask.run.folder import RunFolder
from opmask.tools.predict import Predictor
from opmask.tools.predict_files import Progress, read_rgb
from opmask.train.checkpoint import Checkpointer

from ..conftest import SHAPES_OPMASK, TINY

SEED = 3


def make_run(folder):
    """A run folder as opmask-train leaves it (config.yaml, models/model_final.pth) holding the
    seeded untrained tiny OPMask model: its scores (~1/9 per class) pass SCORE_THRESH_TEST, so
    every image has detections. Returns (run folder, cfg, model)."""
    run = folder / "run"
    run.mkdir()
    cfg = load_config(SHAPES_OPMASK, [*TINY, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    (run / "config.yaml").write_text(cfg.dump())
    torch.manual_seed(SEED)
    model = build_model(cfg).eval()
    Checkpointer(str(run / "models"), RunFolder.CHECKPOINTS).save(
        "model_final.pth", {"model": model.state_dict(), "iteration": 6}
    )
    return run, cfg, model


@pytest.fixture(scope="module")
def tiny(datasets_root, tmp_path_factory):
    """(run folder, cfg, model, val dicts, val info, predictor at threshold 0)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPMASK_DATASETS", datasets_root)
        run, cfg, model = make_run(tmp_path_factory.mktemp("predict"))
        dicts, info = load_datasets(["shapes_val"], index=False)
        predictor = Predictor.from_run(str(run), score_threshold=0.0)
    return run, cfg, model, dicts, info, predictor


def _entries_equal(a: list[dict], b: list[dict]):
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x == y  # image_id, category_id, bbox, score and the mask's RLE, bit for bit


def test_predictor_gives_the_evaluators_detections(tiny):
    run, cfg, model, dicts, info, predictor = tiny
    evaluated = run_inference(model, build_test_loader(cfg, dicts), info.category_id)
    predicted = []
    for d in dicts:
        image = read_rgb(d["file_name"])
        (out,) = predictor.outputs([image])
        predicted += predictor.coco_results(out, d["image_id"])
        dets = predictor(image)  # the 3-line API: same numbers as plain arrays
        mine = [r for r in evaluated if r["image_id"] == d["image_id"]]
        assert len(dets) == len(mine) > 0
        xywh = np.concatenate([dets.boxes[:, :2], dets.boxes[:, 2:] - dets.boxes[:, :2]], 1)
        np.testing.assert_allclose(xywh, [r["bbox"] for r in mine], atol=1e-4)
        np.testing.assert_array_equal(dets.scores, np.float32([r["score"] for r in mine]))
        assert dets.category_ids.tolist() == [r["category_id"] for r in mine]
        assert dets.class_names == [info.thing_classes[c - 1] for c in dets.labels]
        masks = np.stack([mask_utils.decode(r["segmentation"]) for r in mine]).astype(bool)
        np.testing.assert_array_equal(dets.masks, masks)
        assert dets.masks.shape[1:] == image.shape[:2]
    _entries_equal(predicted, evaluated)


def test_weak_flags_follow_the_runs_split(tiny):
    *_, info, predictor = tiny
    strong = set(info.dataset_strong_ids)  # EXP.PS "dataset": the shapes file declares its split
    assert predictor.strong_ids == strong and 0 < len(strong) < len(info.category_ids)
    dets = predictor(read_rgb(tiny[3][0]["file_name"]))
    assert dets.weak.tolist() == [c not in strong for c in dets.category_ids]
    assert dets.weak.any() and not dets.weak.all()


def test_threshold_keeps_the_evaluators_detections_above_it(tiny, shapes_env):
    run, *_, dicts, _, predictor = tiny
    image = read_rgb(dicts[0]["file_name"])
    everything = predictor(image)
    cut = float(np.median(everything.scores))
    above = Predictor.from_run(str(run), score_threshold=cut)(image)
    keep = everything.scores >= cut
    np.testing.assert_array_equal(above.boxes, everything.boxes[keep])
    np.testing.assert_array_equal(above.masks, everything.masks[keep])


def test_detectron2_export_predicts_the_same(tiny, tmp_path, shapes_env):
    run, cfg, model, dicts, _, predictor = tiny
    data, _ = detectron2_file(model, pkl=False)
    weights = tmp_path / "d2.pth"
    weights.write_bytes(data)
    other = Predictor.from_weights(str(run / "config.yaml"), str(weights), score_threshold=0.0)
    image = read_rgb(dicts[1]["file_name"])
    a, b = predictor(image), other(image)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.masks, b.masks)


def test_prior_is_exposed_without_changing_the_outputs(tiny):
    *_, dicts, _, predictor = tiny
    image = read_rgb(dicts[2]["file_name"])
    plain = predictor(image)
    (dets,) = predictor.predict([image], with_prior=True)
    np.testing.assert_array_equal(dets.boxes, plain.boxes)
    np.testing.assert_array_equal(dets.scores, plain.scores)
    np.testing.assert_array_equal(dets.masks, plain.masks)
    assert dets.priors.shape == dets.masks.shape and dets.priors.dtype == np.float32
    assert dets.priors.min() >= 0 and dets.priors.max() <= 1 and dets.priors.max() > 0.5
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]] + 0.5  # pixel centres
    for (x0, y0, x1, y1), prior in zip(dets.boxes, dets.priors):
        cell_x, cell_y = (x1 - x0) / 14, (y1 - y0) / 14  # one cell of the 14 x 14 prior
        far = (xx < x0 - cell_x) | (xx > x1 + cell_x) | (yy < y0 - cell_y) | (yy > y1 + cell_y)
        assert (prior[far] == 0).all()  # pasted into its box


@pytest.mark.parametrize("orientation,rotate", [(3, 2), (6, -1)])
def test_exif_rotated_jpeg_gives_the_pre_rotated_images_detections(
    tiny, tmp_path, orientation, rotate
):
    *_, dicts, _, predictor = tiny
    stored = read_rgb(dicts[3]["file_name"])[:, :80]  # not square: the rotation shows
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, "JPEG", quality=95, exif=exif.tobytes())
    with Image.open(path) as im:
        decoded = np.asarray(im.convert("RGB"))  # the stored pixels, orientation ignored
    upright = np.ascontiguousarray(np.rot90(decoded, k=rotate))  # what a viewer shows
    image = read_rgb(str(path))
    np.testing.assert_array_equal(image, upright)
    a, b = predictor(image), predictor(upright)
    assert len(a) > 0
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert a.masks.shape[1:] == upright.shape[:2]
    assert not np.array_equal(image, decoded)  # the orientation was applied


def test_progress_lines_every_n_images_or_seconds():
    stream, now = io.StringIO(), [0.0]
    p = Progress(10, "opmask-predict", stream, every_s=5.0, every_n=4, clock=lambda: now[0])
    for done in range(1, 11):
        now[0] += 1.0 if done != 2 else 6.0  # image 2 took 6 s
        p.update(done)
    lines = stream.getvalue().splitlines()
    assert [line.split(" ")[1] for line in lines] == ["2/10", "4/10", "8/10", "10/10"]
    assert lines[0] == "opmask-predict: 2/10 images, 3.50 s/image, ETA 0m28s"
    assert lines[-1].endswith("ETA 0m00s")


def test_inputs_expand_folders_globs_annotation_files_and_dataset_names(shapes_env, tmp_path):
    from opmask.tools.predict import PredictError
    from opmask.tools.predict_files import expand_inputs, overlay_names

    val = f"{shapes_env}/shapes/val"
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("b.PNG", "a.jpg", "notes.txt"):
        (folder / name).write_bytes(b"x")
    (folder / "sub").mkdir()
    (tmp_path / "a.png").write_bytes(b"x")
    items = expand_inputs([str(folder), str(tmp_path / "*.png"), str(folder / "a.jpg")])
    assert [i.path for i in items] == [
        str(folder / "a.jpg"),
        str(folder / "b.PNG"),
        str(tmp_path / "a.png"),
    ]  # image files of the folder, sorted; the glob; a path given twice counts once
    overlay_names(items)
    assert [i.name for i in items] == ["a.png", "b.png", "a_2.png"]
    for spec in ("shapes_val", f"{val}/annotations.json:{val}/images"):
        items = expand_inputs([spec])
        assert [i.image_id for i in items] == [1, 2, 3, 4, 5, 6]
        assert items[0].path == f"{val}/images/000001.png"
    bare = expand_inputs([f"{val}/annotations.json"])  # names relative to the file's folder
    assert bare[0].path == f"{val}/000001.png"
    for spec, words in (
        (str(tmp_path / "nope.png"), "no such file or folder"),
        (str(tmp_path / "*.gif"), "matches no file"),
        (str(folder / "notes.txt") + ".json:x", "cannot read it"),
    ):
        with pytest.raises(PredictError, match=words):
            expand_inputs([spec])
    (tmp_path / "bad.json").write_text('{"images": [{"id": 1}]}')
    with pytest.raises(PredictError, match="not a COCO annotation file"):
        expand_inputs([str(tmp_path / "bad.json")])
