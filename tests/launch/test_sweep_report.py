"""opmask-sweep collect's PNG, status --watch, and a 2-point sweep on the real test cluster
whose HParams TensorBoard's own reader lists with their metrics."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

import yaml
from PIL import Image
from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams import metadata as hp_metadata
from tensorboard.util.tensor_util import make_ndarray

from opmask_launch import sweep
from opmask_launch.sweep_report import CLEAR, COLORS
from tests.conftest import REPO, SHAPES_OPMASK, TINY
from tests.launch.conftest import wait_final

SMALL = {k: v for k, v in zip(TINY[0::2], TINY[1::2]) if k != "VIS_PERIOD"}


def _sweep(args, cwd, env=None, **kw):
    return subprocess.run(
        [sys.executable, "-m", "opmask_launch.sweep", *args],
        cwd=cwd,
        env=dict(os.environ, PYTHONPATH=REPO, **(env or {})),
        text=True,
        timeout=120,
        **kw,
    )


def _fake_finished_sweep(folder, weak_aps):
    """A sweep folder as a finished sweep leaves it: manifest, metrics.json, results.json."""
    points = []
    for i, ap in enumerate(weak_aps):
        run = folder / "runs" / f"p{i}"
        (run / "inference" / "val").mkdir(parents=True)
        losses = [
            {"iteration": it, "total_loss": 3.0 - it * (0.2 + 0.1 * i), "eta_seconds": 8.0 - it}
            for it in range(8)
        ]
        (run / "metrics.json").write_text("".join(json.dumps(m) + "\n" for m in losses))
        res = {"bbox": {"AP": 10.0}, "segm": {"AP": 9.0}, "segm_weak": {"AP": ap}}
        (run / "inference" / "val" / "results.json").write_text(json.dumps(res))
        cfg = "SOLVER:\n  MAX_ITER: 8\n"
        points.append(
            {"index": i, "exp_id": f"p{i}", "overrides": {"SEED": i}, "run_dir": str(run)}
            | {"cfg": cfg, "job_ids": []}
        )
    (folder / "sweep.json").write_text(json.dumps({"name": "t", "points": points}))


def test_collect_writes_a_png_comparing_the_points(tmp_path):
    _fake_finished_sweep(tmp_path, [12.5, 25.0])
    proc = _sweep(["collect", str(tmp_path)], REPO, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    csv_rows = (tmp_path / "results.csv").read_text().splitlines()
    assert csv_rows[0] == "point,exp_id,SEED,bbox_AP,segm_AP,segm_strong_AP,segm_weak_AP"
    assert csv_rows[2] == "1,p1,1,10.00,9.00,-,25.00" and "| 1 | p1 | 1 |" in proc.stdout
    img = Image.open(tmp_path / "results.png").convert("RGB")
    assert img.size == (1070, 442)
    colours = {c for _, c in img.getcolors(maxcolors=1 << 16)}
    assert COLORS[0] in colours and COLORS[1] in colours  # a bar and a curve per point
    # the second point's bar (AP 25) is twice as tall as the first's (AP 12.5)
    heights = [
        sum(img.getpixel((x, y)) == COLORS[i] for y in range(img.size[1]))
        for i, x in ((0, 50 + 46 + 20), (1, 50 + 230 + 46 + 20))
    ]
    assert heights[1] == 290 and abs(heights[0] - 145) <= 1, heights


def test_collect_skips_damaged_metrics_and_names_a_damaged_results_file(tmp_path, capsys):
    """metrics.json records without an iteration or with a NaN loss are left out of the curves;
    a results.json that is not JSON, or has no number as an AP: one line naming the run folder,
    exit 1, the earlier results files kept as they were."""
    _fake_finished_sweep(tmp_path, [12.5, 25.0])
    run1 = tmp_path / "runs" / "p1"
    with open(run1 / "metrics.json", "a") as f:
        f.write('{"total_loss": 1.0}\n{"iteration": 9, "total_loss": NaN}\n')
    assert sweep.main(["collect", str(tmp_path)]) == 0
    capsys.readouterr()
    before = {n: (tmp_path / n).read_bytes() for n in ("results.csv", "results.md", "results.png")}
    results = run1 / "inference" / "val" / "results.json"
    for text, why in (
        (
            "{broken",
            "cannot be read (Expecting property name enclosed in double quotes: line 1 "
            "column 2 (char 1))",
        ),
        ('{"segm_weak": {"AP": "high"}}', "has no number as segm_weak AP ({'AP': 'high'})"),
        ("[]", "is not a JSON object"),
    ):
        results.write_text(text)
        assert sweep.main(["collect", str(tmp_path)]) == 1
        err = capsys.readouterr().err
        assert err == f"opmask-sweep: error: run folder {run1}: its results.json {why}\n"
    assert {n: (tmp_path / n).read_bytes() for n in before} == before


def test_status_watch_redraws_in_place_until_no_point_is_active(tmp_path):
    _fake_finished_sweep(tmp_path, [1.0])
    main, child = pty.openpty()
    proc = _sweep(["status", str(tmp_path), "--watch", "0.1"], REPO, stdout=child)
    os.close(child)
    out = os.read(main, 65536).decode()
    os.close(main)
    assert proc.returncode == 0
    assert out.startswith(CLEAR) and "NOT_SUBMITTED" in out and "8/8" in out  # one frame: final


def test_two_point_sweep_shows_both_in_tensorboard_hparams(slurm, datasets_root, tmp_path):
    spec = {
        "name": "hp",
        "config": SHAPES_OPMASK,
        "overrides": SMALL | {"VIS_PERIOD": 0, "SOLVER.MAX_ITER": 2, "SOLVER.CHECKPOINT_PERIOD": 5},
        "grid": {"SOLVER.BASE_LR": [0.01, 0.02]},
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "sw"
    env = {"OPMASK_DATASETS": datasets_root}
    proc = _sweep(
        ["submit", str(tmp_path / "sweep.yaml"), "--output", str(out)],
        str(tmp_path),
        env,
        capture_output=True,
    )
    assert proc.returncode == 0, proc.stderr
    for p in json.loads((out / "sweep.json").read_text())["points"]:
        assert wait_final(p["job_ids"][0], timeout=600)[-1] == "COMPLETED"
    assert _sweep(["collect", str(out)], str(tmp_path), env, capture_output=True).returncode == 0
    assert (out / "results.png").stat().st_size > 0
    mux = EventMultiplexer()
    mux.AddRunsFromDirectory(str(out))  # what `tensorboard --logdir sweeps/NAME` reads
    mux.Reload()
    found = {}
    for run, tags in mux.PluginRunToTagToContent(hp_metadata.PLUGIN_NAME).items():
        start = hp_metadata.parse_session_start_info_plugin_data(
            tags[hp_metadata.SESSION_START_INFO_TAG]
        )
        experiment = hp_metadata.parse_experiment_plugin_data(tags[hp_metadata.EXPERIMENT_TAG])
        metrics = {m.name.tag for m in experiment.metric_infos}
        assert metrics == {"bbox/AP", "segm/AP", "segm_strong/AP", "segm_weak/AP"}
        values = {t: float(make_ndarray(mux.Tensors(run, t)[-1].tensor_proto)) for t in metrics}
        found[start.hparams["SOLVER.BASE_LR"].number_value] = values
        assert start.hparams["SOLVER.MAX_ITER"].number_value == 2
    assert sorted(found) == [0.01, 0.02]  # both points, each with its four final metrics
    for values in found.values():
        assert all(0.0 <= v <= 100.0 for v in values.values())
