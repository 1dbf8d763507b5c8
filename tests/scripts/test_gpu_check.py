"""scripts/gpu_check.sh in its CI-sized CPU form: every step runs and passes, and the report
holds its verdict line and what the step measured (the GPU form is the same code). The four steps
run as four tests (``--only``) so that parallel workers share them."""

from __future__ import annotations

import os
import subprocess

import pytest

from ..conftest import REPO

# step -> (its verdict line starts with, what else its report must hold)
STEPS = {
    "amp_training": ("- PASS — fp32, 8 iterations", ["evaluation AP {'bbox'"]),
    "resume": (
        "- PASS — SIGUSR1 -> checkpoint -> resume",
        ["stopped with exit 75", "max relative total-loss difference 0.00e+00"],  # bitwise
    ),
    "process_group": (
        "- PASS — gloo at world size 1 with SyncBN",
        ["log names backend gloo: True"],
    ),
    "matrix": (
        "- PASS — matrix",
        [f"| {model} | fp32 |" for model in ("baseline", "opmask", "torchvision")],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("step", list(STEPS))
def test_gpu_check_cpu_form(tmp_path, step):
    report = tmp_path / "report.md"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            "bash",
            os.path.join(REPO, "scripts", "gpu_check.sh"),
            "--device",
            "cpu",
            "--quick",
            "--only",
            step,
            "--report",
            str(report),
            "--work",
            str(tmp_path / "work"),
        ],  # fmt: skip
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    text = report.read_text()
    assert proc.returncode == 0, text + proc.stderr[-2000:]
    assert "**all checks passed**" in text
    verdict, holds = STEPS[step]
    verdicts = [
        ln for ln in text.splitlines() if ln.startswith("- PASS") or ln.startswith("- FAIL")
    ]
    assert len(verdicts) == 1 and verdicts[0].startswith(verdict), text
    for part in holds:
        assert part in text, (part, text)
