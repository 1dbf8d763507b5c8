"""The memory-mapped dataset index gives what the JSON path gives; its cache is rebuilt when stale
or corrupt (with a warning) and built once when several processes start together."""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest

from opmask.data.build import MapDataset
from opmask.data.catalog import load_datasets
from opmask.data.coco import DatasetError, load_coco_json
from opmask.data.cocolike import write_coco_like
from opmask.data.index import _aligned, cache_path, file_lock, json_key, open_index, read_index
from opmask.data.index import _build as build_index
from opmask.data.mapper import DatasetMapper


@pytest.fixture(scope="module")
def cocolike(tmp_path_factory):
    """120 images: polygons, compressed and uncompressed RLE, crowd, images without annotations,
    plus one degenerate polygon and one zero-size box (dropped by both paths)."""
    root = tmp_path_factory.mktemp("cocolike")
    path = write_coco_like(str(root / "ds"), 120, seed=1)
    data = json.load(open(path))
    data["annotations"][0]["segmentation"].append([1.0, 2.0, 3.0, 4.0])
    data["annotations"][1]["bbox"][2] = 0
    data["annotations"][2]["segmentation"] = None
    json.dump(data, open(path, "w"))
    return path, str(root / "ds" / "images")


def _same(json_file, image_root, cache_dir):
    dicts, info = load_coco_json(json_file, image_root, "x")
    idx, info2 = open_index(json_file, image_root, "x", str(cache_dir))
    assert len(idx) == len(dicts)
    for i, d in enumerate(dicts):
        assert idx[i] == d, i
    assert list(idx) == dicts
    assert info2 == info
    return idx, dicts


def test_round_trip_shapes(datasets_root, tmp_path):
    for split in ("train", "val"):
        root = os.path.join(datasets_root, "shapes", split)
        _same(os.path.join(root, "annotations.json"), os.path.join(root, "images"), tmp_path)


def test_round_trip_cocolike(cocolike, tmp_path):
    idx, dicts = _same(*cocolike, tmp_path)
    annos = [a for d in dicts for a in d["annotations"]]
    segms = [a["segmentation"] for a in annos]
    assert any(isinstance(s, list) for s in segms)
    assert any(isinstance(s, dict) and isinstance(s["counts"], str) for s in segms)
    assert any(isinstance(s, dict) and isinstance(s["counts"], list) for s in segms)
    assert None in segms and any(a["iscrowd"] for a in annos)
    assert any(not d["annotations"] for d in dicts)
    flags = [any(not a["iscrowd"] for a in d["annotations"]) for d in dicts]
    assert idx.has_instances().tolist() == flags
    assert idx.aspect_flags().tolist() == [d["width"] > d["height"] for d in dicts]
    assert idx[-1] == dicts[-1] and list(idx[5:9]) == dicts[5:9]
    with pytest.raises(IndexError):
        idx[len(dicts)]
    again = pickle.loads(pickle.dumps(idx))  # as a spawned loader worker gets it: the path only
    assert len(pickle.dumps(idx)) < 1000 and again[7] == dicts[7]


def test_load_datasets_index_equals_json_path(datasets_root, tmp_path, monkeypatch):
    monkeypatch.setenv("OPMASK_DATASETS", datasets_root)
    names = ["shapes_train", "shapes_val"]
    ref, info = load_datasets(names, index=False)
    idx, info2 = load_datasets(names, cache_dir=str(tmp_path))
    assert list(idx) == ref and info2 == info and idx[len(ref) - 1] == ref[-1]


def test_stale_cache_rebuilt_with_warning(cocolike, tmp_path, caplog):
    src, image_root = cocolike
    json_file = str(tmp_path / "a.json")
    data = json.load(open(src))
    json.dump(data, open(json_file, "w"))
    open_index(json_file, image_root, "x", str(tmp_path))
    del data["images"][3:]
    json.dump(
        data | {"annotations": [a for a in data["annotations"] if a["image_id"] <= 3]},
        open(json_file, "w"),
    )
    idx, _ = _same(json_file, image_root, tmp_path)
    assert len(idx) == 3 and "is stale (the JSON changed); rebuilding" in caplog.text


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_corrupt_cache_rebuilt_with_warning(cocolike, tmp_path, caplog, damage):
    json_file, image_root = cocolike
    open_index(json_file, image_root, "x", str(tmp_path))
    path = cache_path(json_file, str(tmp_path))
    raw = bytearray(open(path, "rb").read())
    raw = {"truncate": raw[: len(raw) // 2], "garbage": b"x" * 10}.get(damage, raw)
    if damage == "flip":  # one bit inside the polygon coordinates
        n = int.from_bytes(raw[8:16], "little")
        raw[_aligned(16 + n) + read_index(path)[0]["arrays"]["poly_coords"]["offset"] + 3] ^= 1
    open(path, "wb").write(bytes(raw))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="opmask.data.index"):
        open_index(json_file, image_root, "x", str(tmp_path))
    assert "is corrupt" in caplog.text and "rebuilding" in caplog.text
    assert f"dataset x: built index {path} in" in caplog.text
    _same(json_file, image_root, tmp_path)


# Opens the index once the file argv[3] exists; prints 1 if this process built it (its log line
# says so), then the number of images.
OPEN = """
import logging, os, sys, time
from opmask.data.index import open_index
built = []
handler = logging.Handler()
handler.emit = lambda record: built.append("built index" in record.getMessage())
logging.getLogger("opmask.data.index").addHandler(handler)
logging.getLogger("opmask.data.index").setLevel(logging.INFO)
while not os.path.exists(sys.argv[3]):
    time.sleep(0.01)
idx, _ = open_index(sys.argv[1], sys.argv[2], "x", sys.argv[4])
print(int(any(built)), len(idx))
"""


def test_two_processes_build_once(cocolike, tmp_path):
    json_file, image_root = cocolike
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN, json_file, image_root, str(go), str(tmp_path / "c")],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    time.sleep(1.0)
    go.touch()
    outs = [p.communicate(timeout=600)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(int(o[0]) for o in outs) == [0, 1]
    assert {o[1] for o in outs} == {"120"}


def test_waiter_uses_the_index_the_lock_holder_built(cocolike, tmp_path):
    json_file, image_root = cocolike
    cache = str(tmp_path / "c")
    path = cache_path(json_file, cache)
    os.makedirs(cache)
    go = tmp_path / "go"
    go.touch()
    with file_lock(path + ".lock"):
        proc = subprocess.Popen(
            [sys.executable, "-c", OPEN, json_file, image_root, str(go), cache],
            stdout=subprocess.PIPE,
            text=True,
        )
        build_index(json_file, image_root, "x", path, json_key(json_file))
    assert proc.communicate(timeout=600)[0].split() == ["0", "120"]


def test_training_read_names_image_id_and_path(cocolike, tmp_path):
    json_file, image_root = cocolike
    idx, _ = open_index(json_file, str(tmp_path / "nowhere"), "x", str(tmp_path))
    ds = MapDataset(idx, DatasetMapper(is_train=True, min_sizes=[64], max_size=100), seed=0)
    with pytest.raises(DatasetError, match=r"image id 4: cannot read image .*nowhere/0+4\.jpg"):
        ds[(3, 0)]
    img = idx.a["image_id"]
    assert isinstance(img, np.ndarray)


def _batches(dicts, rank: int, n: int = 4) -> list:
    from opmask.config import get_cfg
    from opmask.data.build import build_train_loader

    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.IMS_PER_BATCH", 4, "DATALOADER.NUM_WORKERS", 0])
    cfg.merge_from_list(["INPUT.MIN_SIZE_TRAIN", (64, 80), "INPUT.MAX_SIZE_TRAIN", 120])
    it = iter(build_train_loader(cfg, dicts, seed=5, rank=rank, world_size=2, start_iter=1))
    return [next(it) for _ in range(n)]


def test_same_batches_on_two_ranks_as_json_path(cocolike, tmp_path):
    """Filtering (images without instances, crowd-only), aspect grouping, order, augmentation:
    the index path's batches equal the JSON path's, bit for bit, on both ranks."""
    json_file, image_root = cocolike
    ref, _ = load_coco_json(json_file, image_root, "x")
    idx, _ = open_index(json_file, image_root, "x", str(tmp_path))
    for rank in (0, 1):
        for a, b in zip(_batches(ref, rank), _batches(idx, rank)):
            assert [x["image_id"] for x in a] == [x["image_id"] for x in b]
            for x, y in zip(a, b):
                assert x["image"].equal(y["image"])
                assert x["instances"]["boxes"].equal(y["instances"]["boxes"])
                assert x["instances"]["labels"].equal(y["instances"]["labels"])
                assert x["instances"]["has_mask"].equal(y["instances"]["has_mask"])


def test_unwritable_cache_dir_is_a_dataset_error(cocolike, tmp_path):
    json_file, image_root = cocolike
    (tmp_path / "file").write_text("")
    with pytest.raises(DatasetError, match=r"cannot write the dataset cache \(DATASETS.CACHE_DIR"):
        open_index(json_file, image_root, "x", str(tmp_path / "file" / "cache"))
