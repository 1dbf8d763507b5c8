"""End to end through ``opmask-train`` on the tiny synthetic dataset (real files, real readers)."""

from __future__ import annotations

import io
import json
import math
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from tests.conftest import SHAPES_OPMASK, TINY, run_cli

LOSSES = ["loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"]


def train_args(out_dir, *flags, opts=()):
    return [
        "opmask.cli.train",
        "--config-file",
        SHAPES_OPMASK,
        "--output",
        str(out_dir),
        *flags,
        *TINY,
        *opts,
    ]


@pytest.fixture(scope="module")
def tiny_run(datasets_root, tmp_path_factory):
    """One 6-iteration training run, evaluated after iterations 2 and 5: (run folder, completed
    process)."""
    work = tmp_path_factory.mktemp("run")
    run_dir = work / "run"
    proc = run_cli(train_args(run_dir, opts=["TEST.EVAL_PERIOD", "3"]), datasets_root, str(work))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir, proc


def _metrics(run_dir):
    with open(run_dir / "metrics.json") as f:
        return [json.loads(line) for line in f]


def test_run_folder_contents(tiny_run):
    run_dir, proc = tiny_run
    train = [m for m in _metrics(run_dir) if "total_loss" in m]
    assert [m["iteration"] for m in train] == list(range(6))
    for m in train:
        assert all(math.isfinite(m[k]) for k in LOSSES + ["total_loss", "lr", "eta_seconds"])
    evals = [m for m in _metrics(run_dir) if "segm_weak/AP" in m]
    assert evals and evals[-1]["iteration"] == 5
    models = run_dir / "models"
    assert (models / "model_0000002.pth").is_file() and (models / "model_final.pth").is_file()
    assert (models / "last_checkpoint").read_text() == "model_final.pth"
    res = json.loads((run_dir / "inference" / "shapes_val" / "results.json").read_text())
    assert {"bbox", "segm", "segm_strong", "segm_weak", "per_class"} <= set(res)
    assert (run_dir / "inference" / "shapes_val" / "coco_instances_results.json").is_file()
    assert "SEED: 1" in (run_dir / "config.yaml").read_text()
    log = (run_dir / "log.txt").read_text()
    assert "eta:" in log and "iter: 6/6" in log and "segm_weak" in log


def test_logged_lr_is_the_one_each_step_used(tiny_run):
    """Detectron2 logs ``lr`` before ``scheduler.step()``: iteration ``it`` shows the rate its
    optimizer step used. TINY: BASE_LR 0.01, linear warm-up over 2 iterations from factor 0.001
    (``0.001 * (1 - it / 2) + it / 2``), x0.1 from iteration 4."""
    lrs = [m["lr"] for m in _metrics(tiny_run[0]) if "total_loss" in m]
    assert lrs == pytest.approx([1e-5, 0.005005, 0.01, 0.01, 0.001, 0.001], rel=1e-12)


def test_tensorboard_reader_sees_scalars_and_omp_images(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tiny_run[0] / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {
        "total_loss",
        "lr",
        "time",
        "data_time",
        "bbox/AP",
        "segm/AP",
        "segm_strong/AP",
        "segm_weak/AP",
        *LOSSES,
    } <= scalars
    assert [e.step for e in acc.Scalars("total_loss")] == list(range(6))
    images = acc.Tags()["images"]
    assert "image_omp_mask_gt/roi0" in images
    shots = acc.Images("image_omp_mask_gt/roi0")
    assert [s.step for s in shots] == [0, 2, 4]  # VIS_PERIOD 2
    assert shots[0].width == 4 * (shots[0].height - 14)  # caption over crop | OMP | mask | GT


def test_tensorboard_shows_the_predictions_on_the_same_images_at_each_evaluation(
    tiny_run, shapes_env
):
    """EXP.VIS_PREDICTIONS (default 4): the first test images with the model's predictions, at
    every evaluation; the last equals the overlay drawn again from the final checkpoint."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from opmask.config import load_config
    from opmask.data.build import build_test_mapper
    from opmask.data.catalog import load_datasets, strong_ids_from_cfg
    from opmask.run.folder import RunFolder
    from opmask.train.vis import prediction_overlays

    run = RunFolder(tiny_run[0])
    acc = EventAccumulator(run.tensorboard, size_guidance={"images": 0})
    acc.Reload()
    cfg = load_config(run.config)
    dicts, info = load_datasets(cfg.DATASETS.TEST)
    shown = dicts[:4]
    tags = [f"predictions/{d['image_id']}" for d in shown]
    assert sorted(t for t in acc.Tags()["images"] if t.startswith("predictions/")) == sorted(tags)
    model, _, _ = run.load_model(cfg)  # model_final: what the last evaluation saw
    again = prediction_overlays(
        model, shown, build_test_mapper(cfg), info, strong_ids_from_cfg(cfg, info)
    )
    for tag, d, expected in zip(tags, shown, again):
        shots = acc.Images(tag)
        assert [s.step for s in shots] == [2, 5]
        png = np.asarray(Image.open(io.BytesIO(shots[-1].encoded_image_string)).convert("RGB"))
        assert png.shape == (d["height"], d["width"], 3)
        assert np.array_equal(png, expected.permute(1, 2, 0).numpy())


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tensorboard_server_serves_the_scalar_series(tiny_run):
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(tiny_run[0] / "tensorboard"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--load_fast",
            "false",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?run=.&tag=total_loss"
        deadline, series = time.time() + 60, None
        while time.time() < deadline and series is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    series = json.loads(r.read())
            except OSError:
                time.sleep(0.5)
        assert series is not None, "tensorboard did not answer"
        logged = {
            m["iteration"]: m["total_loss"] for m in _metrics(tiny_run[0]) if "total_loss" in m
        }
        assert [s[1] for s in series] == sorted(logged)
        assert all(abs(s[2] - logged[s[1]]) < 1e-4 * max(1, abs(s[2])) for s in series)
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_eval_only_reproduces_the_same_predictions_and_ap(tiny_run, datasets_root):
    run_dir, _ = tiny_run
    inf = run_dir / "inference" / "shapes_val"
    before = json.loads((inf / "results.json").read_text())
    preds_before = (inf / "coco_instances_results.json").read_bytes()
    proc = run_cli(train_args(run_dir, "--eval-only"), datasets_root, str(run_dir.parent))
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = json.loads((inf / "results.json").read_text())
    assert (inf / "coco_instances_results.json").read_bytes() == preds_before
    for task in ("bbox", "segm", "segm_strong", "segm_weak"):
        assert after[task] == before[task]


def test_nonfinite_loss_stops_with_iteration_and_terms(datasets_root, tmp_path):
    opts = [
        "SOLVER.BASE_LR",
        "1e12",
        "SOLVER.WARMUP_ITERS",
        "0",
        "SOLVER.CLIP_GRADIENTS.ENABLED",
        "False",
    ]
    proc = run_cli(train_args(tmp_path / "nan", opts=opts), datasets_root, str(tmp_path))
    assert proc.returncode == 3, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "non-finite loss at iteration" in err[0]
    assert all(f"{k}=" in err[0] for k in LOSSES)
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.fixture
def earlier_run(tmp_path):
    """A folder standing for an earlier run; tests check nothing in it changes."""
    run = tmp_path / "earlier"
    (run / "models").mkdir(parents=True)
    (run / "models" / "model_final.pth").write_bytes(b"weights")
    (run / "config.yaml").write_text("keep me")
    return run


def _snapshot(folder):
    return {
        p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize(
    "case,flags,opts,message",
    [
        ("missing config", ["--config-file", "nope.yaml"], [], "config file not found: nope.yaml"),
        (
            "unknown key",
            [],
            ["SOLVER.BASE_RL", "0.1"],
            "unknown config key SOLVER.BASE_RL; did you mean SOLVER.BASE_LR",
        ),
        (
            "bad value",
            [],
            ["SOLVER.MAX_ITER", "many"],
            "SOLVER.MAX_ITER expects int, got str 'many'",
        ),
        ("no dataset", [], ["DATASETS.TRAIN", "('nope_train',)"], "unknown dataset 'nope_train'"),
        ("exp-id reuse", ["--output", "{earlier}"], [], "already holds a run; pass --resume"),
        ("unwritable", ["--output", "{earlier}/config.yaml/run"], [], "is not writable"),
    ],
)
def test_bad_input_gives_one_clear_error(
    case, flags, opts, message, datasets_root, tmp_path, earlier_run
):
    before = _snapshot(earlier_run)
    flags = [a.replace("{earlier}", str(earlier_run)) for a in flags]
    # later flags win in argparse: the case's --config-file / --output override these
    args = train_args(tmp_path / "new", *flags, opts=opts)
    proc = run_cli(args, datasets_root, str(tmp_path))
    assert proc.returncode == 1, (case, proc.stderr[-2000:])
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("opmask-train: error:") and message in err[0], err
    assert "Traceback" not in proc.stdout + proc.stderr
    assert _snapshot(earlier_run) == before
