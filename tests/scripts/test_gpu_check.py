"""scripts/gpu_check.sh in its CI-sized CPU form: every step runs and passes, and the report
holds the matrix rows and one verdict line per check (the GPU form is the same code)."""

from __future__ import annotations

import os
import subprocess

import pytest

from ..conftest import REPO


@pytest.mark.slow
def test_gpu_check_cpu_form(tmp_path):
    report = tmp_path / "report.md"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            "bash",
            os.path.join(REPO, "scripts", "gpu_check.sh"),
            "--device",
            "cpu",
            "--quick",
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
    verdicts = [ln for ln in text.splitlines() if ln.startswith("- PASS")]
    assert len(verdicts) == 4, text  # fp32 training, resume, process group, matrix
    assert "max relative total-loss difference 0.00e+00" in text  # bitwise on CPU
    for model in ("baseline", "opmask", "torchvision"):
        assert f"| {model} | fp32 |" in text
