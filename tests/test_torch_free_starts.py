"""The launcher's commands, `opmask-data shapes` and every refusal before training do not import
torch (with torchvision, about 4.5 s of CPU per command on a 2-core machine): `opmask-sweep status`
on a login node, `opmask-submit --dry-run` and a mistyped key answer in well under a second."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import SHAPES_OPMASK

PROBE = """
import sys
{body}
print("TORCH", "torch" in sys.modules, "torchvision" in sys.modules)
"""


def _probe(body: str, tmp_path) -> tuple[str, str]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(body=body)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("TORCH")), "")
    return line, proc.stdout + proc.stderr


def test_the_command_modules_import_without_torch(tmp_path):
    line, out = _probe(
        "import opmask.cli.train, opmask_launch.submit, opmask_launch.sweep, opmask_launch.job\n"
        "import opmask.run.entry, opmask.run.folder, opmask.data.catalog, opmask.utils.comm",
        tmp_path,
    )
    assert line == "TORCH False False", out


@pytest.mark.parametrize(
    "opts, code, says",
    [
        (["SOLVER.BASE_RL", "0.1"], 1, "unknown config key SOLVER.BASE_RL"),
        (["DATASETS.TRAIN", "('nope.json:imgs',)"], 1, "annotation file not found: nope.json"),
        (["SOLVER.IMS_PER_BATCH", "3", "--num-gpus", "2"], 2, "--num-gpus comes after"),
    ],
    ids=["unknown key", "missing dataset", "flag after overrides"],
)
def test_opmask_train_refuses_without_importing_torch(tmp_path, opts, code, says):
    argv = ["--config-file", SHAPES_OPMASK, "--output", str(tmp_path / "run"), *opts]
    line, out = _probe(
        "from opmask.cli.train import main\n"
        f"try:\n    code = main({argv!r})\nexcept SystemExit as e:\n    code = e.code\n"
        "print('CODE', code)",
        tmp_path,
    )
    assert f"CODE {code}\n" in out, out
    assert says in out, out
    assert line == "TORCH False False", out
    assert not (tmp_path / "run").exists()


def test_a_run_folders_layout_and_records_read_without_torch(tmp_path):
    (tmp_path / "run" / "models").mkdir(parents=True)
    (tmp_path / "run" / "models" / "last_checkpoint").write_text("model_0000009.pth")
    (tmp_path / "run" / "metrics.json").write_text('{"iteration": 0, "total_loss": 1.5}\n')
    line, out = _probe(
        "from opmask.run.folder import RunFolder\n"
        "r = RunFolder('run')\n"
        "print('READ', r.last_iteration(), r.read_metrics())",
        tmp_path,
    )
    assert "READ 9 [{'iteration': 0, 'total_loss': 1.5}]" in out, out
    assert line == "TORCH False False", out


def test_submitting_an_evaluation_checks_the_checkpoints_without_torch(tmp_path):
    (tmp_path / "run" / "models").mkdir(parents=True)
    (tmp_path / "empty" / "models").mkdir(parents=True)
    (tmp_path / "run" / "models" / "model_final.pth").write_bytes(b"not read here")
    line, out = _probe(
        "from opmask_launch.submission import check_evaluable\n"
        "check_evaluable('run')\n"
        "try:\n    check_evaluable('empty')\nexcept Exception as e:\n    print('REFUSED', e)",
        tmp_path,
    )
    assert "REFUSED --eval-only: no checkpoint in empty/models to evaluate" in out, out
    assert line == "TORCH False False", out


def test_opmask_data_generates_shapes_without_torch(tmp_path):
    line, out = _probe(
        "from opmask.cli.data import main\n"
        "main(['shapes', '--num-train', '2', '--num-val', '1', '--output', 'ds'])",
        tmp_path,
    )
    assert line == "TORCH False False", out
    assert len(list((tmp_path / "ds" / "train" / "images").glob("*.png"))) == 2, out
