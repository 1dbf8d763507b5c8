"""opmask-bench --data end to end: one table, three paths, each in its own process; a bad
command line is one line and exit 2, a missing dataset one line and exit 1."""

from __future__ import annotations

import pytest
import torch

from opmask.cli.bench import main


@pytest.mark.slow
def test_data_table_compares_index_allocator_and_json_paths(capsys):
    """Slow (about 20 s on 2 cores): each of the table's paths is measured in fresh Python
    processes that import torch."""
    assert main(["--data", "--images", "12", "--workers", "1", "--data-batches", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    table = out[out.index(next(line for line in out if line.startswith("path"))) :]
    labels = [line.split()[0] for line in table[1:7]]
    assert labels == ["index", "index", "index-0", "index-0", "json", "json"]
    # the index build time (s) heads the first line only; then the first batch's seconds
    assert float(table[1].split()[1]) >= 0 and float(table[1].split()[2]) > 0
    assert len(table[1].split()) == len(table[3].split()) + 1
    assert [line.split(":")[0] for line in table[7:10]] == ["index", "index-0", "json"]
    assert all("workers' growth from batch 1 to 3" in line for line in table[7:10])
    assert table[10].startswith("-0: workers with DATALOADER.WORKER_MMAP_THRESHOLD 0")
    assert table[11:] == []  # --ranks 0: no simulated ranks


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--device", "bogus"], "argument --device: expects cpu, cuda or cuda:N, got 'bogus'"),
        (["--device", "meta"], "argument --device: expects cpu, cuda or cuda:N, got 'meta'"),
        (["--steps", "0"], "argument --steps: must be >= 1, got 0"),
        (["--batch", "0"], "argument --batch: must be >= 1, got 0"),
        (["--data", "--workers", "-1"], "argument --workers: must be >= 0, got -1"),
        (["--size", "8"], "argument --size: must be >= 32, got 8"),
        (["--flops", "--box-rois", "x"], "argument --box-rois: expects an integer, got 'x'"),
    ],
)
def test_bad_command_lines_are_one_line_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"opmask-bench: error: {message} (see opmask-bench --help)\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_refused(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--device", "cuda"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("opmask-bench: error: argument --device: cuda: no CUDA device")


def test_a_missing_dataset_is_one_line_exit_1(tmp_path, capsys):
    spec = f"{tmp_path}/none.json:{tmp_path}/images"
    assert main(["--data", "--dataset", spec]) == 1
    err = capsys.readouterr().err
    assert err == f"opmask-bench: error: --dataset {spec}: annotation file not found: " + (
        f"{tmp_path}/none.json\n"
    )
    (tmp_path / "none.json").write_text("{}")
    assert main(["--data", "--dataset", spec]) == 1
    err = capsys.readouterr().err
    assert (
        err == f"opmask-bench: error: --dataset {spec}: image folder not found: {tmp_path}/images\n"
    )
    assert main(["--data", "--dataset", "no_such_set"]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("opmask-bench: error: unknown dataset 'no_such_set'")
        and err.count("\n") == 1
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["none.json"]  # nothing written
