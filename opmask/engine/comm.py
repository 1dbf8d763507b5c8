"""Process-group helpers that also work in a single process (world size 1)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank; before the process group exists, the launcher's ``RANK`` (torchrun,
    srun), so that only rank 0 writes the run folder's files."""
    return dist.get_rank() if is_dist() else int(os.environ.get("RANK", 0))


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_dist() and get_world_size() > 1:
        dist.barrier()


def reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """Average a dict of scalars over ranks (identity in one process)."""
    if get_world_size() == 1:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: v / get_world_size() for k, v in zip(keys, t.tolist())}


def agree(*flags: bool) -> tuple[bool, ...]:
    """For each flag: True on every rank if it is True on any rank (one collective for all)."""
    if get_world_size() == 1:
        return tuple(bool(f) for f in flags)
    t = torch.tensor([1.0 if f else 0.0 for f in flags])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(v > 0) for v in t.tolist())


def all_gather_objects(obj) -> list:
    """Every rank's ``obj``, in rank order."""
    if get_world_size() == 1:
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out
