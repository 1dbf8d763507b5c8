"""Loader workers' allocator: with the threshold fixed, large blocks get their own memory map."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

from opmask.config import get_cfg
from opmask.data.build import build_test_loader, build_train_loader
from opmask.data.catalog import load_datasets
from opmask.data.cocolike import write_coco_like
from opmask.utils.malloc import fix_mmap_threshold

# In a fresh process: run the pickled worker init (if any), free an 8 MiB block (which raises
# glibc's own threshold to 8 MiB), then allocate 4 MiB; print how many memory-mapped blocks that
# added (glibc's mallinfo2: hblks).
PROBE = """
import ctypes, pickle, sys
FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in FIELDS.split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
init = pickle.loads(sys.stdin.buffer.read())
if init is not None:
    init(0)
libc.free(libc.malloc(8 << 20))
before = libc.mallinfo2().hblks
block = libc.malloc(4 << 20)
print(libc.mallinfo2().hblks - before)
"""


def mapped_blocks_after(init) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], input=pickle.dumps(init), capture_output=True, check=True
    )
    return int(out.stdout)


@pytest.fixture(scope="module")
def dicts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    json_file = write_coco_like(str(root), 4)
    return load_datasets([f"{json_file}:{root}/images"], cache_dir=str(root / "cache"))[0]


@pytest.mark.slow
@pytest.mark.parametrize("threshold,mapped", [(1 << 20, 1), (0, 0)])
def test_loader_workers_fix_the_mmap_threshold(dicts, threshold, mapped):
    cfg = get_cfg()
    cfg.merge_from_list(
        ["DATALOADER.WORKER_MMAP_THRESHOLD", threshold, "SOLVER.IMS_PER_BATCH", 2]
        + ["DATALOADER.NUM_WORKERS", 1]
    )
    train = build_train_loader(cfg, dicts, seed=0, rank=0, world_size=1, start_iter=0)
    for loader in (train, build_test_loader(cfg, dicts)):
        # default: a 4 MiB block is mapped (given back on free); 0: glibc's own threshold, raised
        # by the freed 8 MiB block, puts it on the heap
        assert mapped_blocks_after(loader.worker_init_fn) == mapped
    assert mapped_blocks_after(None) == 0  # what a worker did before


def test_zero_changes_nothing():
    assert fix_mmap_threshold(0) is False
