"""The data benchmark's measurements: real /proc numbers of the main process and its workers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from opmask.bench import loader as databench
from opmask.data.cocolike import write_coco_like


def test_run_path_measures_main_and_each_worker(tmp_path):
    json_file = write_coco_like(str(tmp_path / "ds"), 12)
    spec = f"{json_file}:{tmp_path}/ds/images"
    # a child this process had before: not one of the loader's workers
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        row = databench.run_path("index", spec, 2, 3, str(tmp_path / "c"))
    finally:
        other.kill()
        other.wait()
    assert row["first_batch_s"] > 0 and row["read_s"] > 0 and row["batches"] == 3
    assert row["label"] == "index" and row["mmap_threshold"] is None
    for snap in (row["first"], row["after"]):
        assert snap["main"]["rss"] >= snap["main"]["pss"] > 0
        assert len(snap["workers"]) == 2 and all(w["pss"] > 0 for w in snap["workers"])
        assert all(0 < w["dirty"] <= w["rss"] for w in snap["workers"])
        for w in [snap["main"], *snap["workers"]]:  # PSS = its anonymous + file-backed shares
            assert 0 < w["pss_anon"] < w["pss"] and 0 < w["pss_file"] < w["pss"]
            parts = w["pss_anon"] + w["pss_file"] + w["pss_shmem"]
            assert abs(w["pss"] - parts) <= 3  # kB: each field is rounded down on its own
    grown = databench.worker_growth(row)
    assert len(grown) == 2
    for g, a, b in zip(grown, row["first"]["workers"], row["after"]["workers"], strict=True):
        assert (
            g["pss_anon"] == b["pss_anon"] - a["pss_anon"] and g["dirty"] == b["dirty"] - a["dirty"]
        )
    main_growth = row["after"]["main"]["pss"] - row["first"]["main"]["pss"]
    assert databench.total_growth(row) == main_growth + sum(g["pss"] for g in grown)
    assert os.listdir(tmp_path / "c")  # the index was built there
    row["build_s"] = 0.5
    lines = databench.format_rows([row])
    assert lines[1].startswith("index") and "0.5" in lines[1] and " 3: " in lines[2]
    assert lines[3].startswith("index: workers' growth from batch 1 to 3, PSS/anon PSS/private")
    assert lines[3].count("/") == 2 + 2 * 2  # the label's two, then two per worker
    assert lines[3].endswith(f"main + workers PSS {databench.total_growth(row) / 1024:+.0f}")


@pytest.mark.slow
def test_simulated_ranks_are_measured_alive_at_once(tmp_path):
    json_file = write_coco_like(str(tmp_path / "ds"), 12)
    spec = f"{json_file}:{tmp_path}/ds/images"
    databench.build_time(spec, str(tmp_path / "c"))
    one = databench.simulated_ranks(spec, 1, 2, str(tmp_path / "c"))
    two = databench.simulated_ranks(spec, 2, 2, str(tmp_path / "c"))
    for r in (one, two):
        assert r["after"]["rss"] >= r["after"]["pss"] > 0 and r["data"]["rss"] > 0
        assert all(r["data"][k] == r["after"][k] - r["base"][k] for k in ("rss", "pss", "anon"))
    # measured while each rank still holds its dataset: the index file is mapped in every one
    assert one["mapped"] == 1 and two["mapped"] == 2
    # two live processes after the imports: about twice the private memory of one
    assert 1.5 * one["base"]["anon"] < two["base"]["anon"] < 2.5 * one["base"]["anon"]
    assert two["after"]["pss"] < two["after"]["rss"]  # shared pages are split in PSS
    lines = databench.format_ranks({1: one, 2: two}).splitlines()
    assert lines[1].split()[0] == "1" and lines[2].split()[0] == "2"
    assert lines[3] == f"2 ranks / 1 rank, data PSS: {two['data']['pss'] / one['data']['pss']:.2f}x"
    whole = two["after"]["pss"] / one["after"]["pss"]
    assert lines[4] == f"2 ranks / 1 rank, whole processes' PSS at the last batch: {whole:.2f}x"


# smaps_rollup of a 4.19 kernel: no Pss_Anon / Pss_File / Pss_Shmem lines
OLD_KERNEL = """55d0c8a3e000-7ffc2a1f4000 ---p 00000000 00:00 0                          [rollup]
Rss:              412340 kB
Pss:              301226 kB
Shared_Clean:     150024 kB
Private_Dirty:     91500 kB
Anonymous:         95012 kB
Swap:                  0 kB
"""


def test_a_kernel_without_the_pss_split_prints_question_marks():
    mem = databench.parse_smaps_rollup(OLD_KERNEL)
    assert mem == {
        "rss": 412340,
        "pss": 301226,
        "pss_anon": None,
        "pss_file": None,
        "pss_shmem": None,
        "anon": 95012,
        "dirty": 91500,
    }
    later = dict(mem, pss=mem["pss"] + 2048, dirty=mem["dirty"] + 1024)
    snap = {"main": mem, "workers": [mem]}
    row = {
        "path": "index",
        "label": "index-0",
        "mmap_threshold": 0,
        "first_batch_s": 0.3,
        "read_s": 4.5,
        "dataset_kb": {"rss": 0, "anon": 0},
        "first": snap,
        "after": {"main": later, "workers": [later]},
        "batches": 5,
    }
    assert databench.worker_growth(row)[0]["pss_anon"] is None
    assert databench.worker_growth(row)[0]["pss"] == 2048
    lines = databench.format_rows([row])
    assert lines[1].startswith("index-0") and lines[1].endswith("1: 403/294/93; 294/?/89")
    assert lines[2].split()[:2] == ["index-0", "4.50"]  # batches 2 to K: 4.5 s
    assert lines[3].startswith("index-0: workers' growth from batch 1 to 5")
    assert lines[3].endswith("PSS/anon PSS/private-dirty MB: +2/?/+1; main + workers PSS +4")
    assert lines[4].startswith("-0: workers with DATALOADER.WORKER_MMAP_THRESHOLD 0")
