"""The one private submitit function the launcher calls (``_make_sbatch_string``, behind
``launch.executor.sbatch_script``, for ``--dry-run``), pinned: if a submitit upgrade removes it,
renames a parameter we pass or changes the ``#SBATCH`` lines we rely on, these fail and say what
to fix. Checked against submitit 1.5.4; no SLURM needed."""

import inspect
import sys

import pytest
import submitit
from submitit.slurm import slurm as submitit_slurm

from opmask_launch.executor import (
    _SBATCH_NAMES,
    Resources,
    executor_parameters,
    sbatch_mem,
    sbatch_script,
)

# Every Resources field set, so every parameter the launcher can pass is passed.
FULL = Resources(
    nodes=2,
    gpus_per_node=8,
    cpus_per_task=10,
    mem_gb=1.5,
    partition="gpu",
    account="my-lab",
    qos="high",
    constraint="a100",
    time_min=4320,
    signal_delay_s=30,
    array_parallelism=4,
)

FIX = (
    f"submitit {submitit.__version__} changed its private sbatch writer; update "
    "launch.executor.sbatch_script (checked against submitit 1.5.4)"
)


def _private_writer():
    writer = getattr(submitit_slurm, "_make_sbatch_string", None)
    if writer is None:
        pytest.fail(f"submitit.slurm.slurm._make_sbatch_string is gone: {FIX}")
    return writer


def test_the_private_writer_still_takes_every_parameter_we_pass():
    params = inspect.signature(_private_writer()).parameters
    ours = {"command", "folder", "map_count", "array_parallelism"}
    for key in executor_parameters(FULL, "voc"):
        key = key.removeprefix("slurm_")
        ours.add(_SBATCH_NAMES.get(key, key))
    missing = sorted(ours - set(params))
    assert not missing, f"_make_sbatch_string no longer takes {missing}: {FIX}"


def test_our_parameter_names_and_memory_text_are_submitits_executor_ones():
    """What ``opmask-submit`` submits goes through submitit's SlurmExecutor, which renames the
    generic parameters and writes the memory; the dry run must do the same."""
    equivalence = submitit_slurm.SlurmExecutor._equivalence_dict()
    assert {k: equivalence[k] for k in _SBATCH_NAMES} == _SBATCH_NAMES, FIX
    for gb in (1, 64, 1.5, 0.25):
        assert sbatch_mem(gb) == submitit_slurm._convert_mem(gb), FIX


def test_the_script_for_one_fixed_request(tmp_path):
    folder = tmp_path / "slurm" / "%j"
    text = sbatch_script(str(folder), FULL, "voc")
    lines = text.splitlines()
    for line in (
        "#SBATCH --job-name=voc",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=8",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --cpus-per-task=10",
        "#SBATCH --mem=1536MB",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=my-lab",
        "#SBATCH --qos=high",
        "#SBATCH --constraint=a100",
        "#SBATCH --time=4320",
        "#SBATCH --signal=USR2@30",
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
        f"#SBATCH --output={folder}/%j_0_log.out",
        f"#SBATCH --error={folder}/%j_0_log.err",
    ):
        assert line in lines, f"{line!r} missing from the dry-run script: {FIX}\n{text}"
    assert not any(line.startswith("#SBATCH --array") for line in lines)
    assert lines[-1] == (
        f"srun --unbuffered --output {folder}/%j_%t_log.out --error {folder}/%j_%t_log.err "
        f"{sys.executable} -u -m submitit.core._submit {folder}"
    ), FIX


def test_an_array_script_names_its_size_and_parallelism(tmp_path):
    text = sbatch_script(str(tmp_path / "%j"), FULL, "sweep", array_count=50)
    lines = text.splitlines()
    assert "#SBATCH --array=0-49%4" in lines, f"{FIX}\n{text}"
    assert f"#SBATCH --output={tmp_path}/%A_%a/%A_%a_0_log.out" in lines, f"{FIX}\n{text}"
