"""Process-group helpers on a real 2-process gloo group."""

from __future__ import annotations

from opmask.run.spawn import launch
from opmask.utils import comm


def _gather_worker() -> int:
    rank = comm.get_rank()
    got = comm.gather_objects({"rank": rank, "items": list(range(rank + 2))})
    want = [{"rank": 0, "items": [0, 1]}, {"rank": 1, "items": [0, 1, 2]}] if rank == 0 else []
    everyone = comm.all_gather_objects(rank * 10)
    return 0 if got == want and everyone == [0, 10] else 1


def test_gather_objects_only_on_rank_0_and_all_gather_everywhere():
    assert launch(_gather_worker, (), num_procs=2, device="cpu") == 0


def test_single_process_needs_no_group():
    assert comm.gather_objects("x") == ["x"] and comm.all_gather_objects(3) == [3]
