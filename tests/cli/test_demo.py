import json

from ..conftest import TINY, run_cli

TASKS = ("bbox", "segm", "segm_strong", "segm_weak")


def test_demo_trains_both_models_and_writes_the_comparison(datasets_root, tmp_path):
    out = tmp_path / "demo"
    args = ["opmask.cli.demo", "--out", str(out), "--data-seed", "3", *TINY]
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


def test_demo_refuses_data_made_with_another_seed(datasets_root, tmp_path):
    proc = run_cli(
        ["opmask.cli.demo", "--out", str(tmp_path / "d"), "--data-seed", "0"],
        datasets_root,
        str(tmp_path),
    )
    assert proc.returncode == 1
    assert "generated with seed 3, not --data-seed 0" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "d").exists()
