"""opmask-bench --data end to end: one table, three paths, each in its own process."""

from __future__ import annotations

from opmask.cli.bench import main


def test_data_table_compares_index_allocator_and_json_paths(capsys):
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
