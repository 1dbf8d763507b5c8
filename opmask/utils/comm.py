"""Process-group helpers that also work in a single process (world size 1).

The queries (rank, world size, main process) do not import torch: a process group can only exist
once ``torch.distributed`` was imported, so until then they answer for one process. That keeps
the checks before training (``opmask.run.entry.prepare``) and the launcher free of torch.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def _dist():
    """``torch.distributed`` if it was imported (else no process group can exist), or None."""
    return sys.modules.get("torch.distributed")


def is_dist() -> bool:
    dist = _dist()
    return dist is not None and dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank; before the process group exists, the launcher's ``RANK`` (torchrun,
    srun), so that only rank 0 writes the run folder's files."""
    return _dist().get_rank() if is_dist() else int(os.environ.get("RANK", 0))


def get_world_size() -> int:
    return _dist().get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_dist() and get_world_size() > 1:
        _dist().barrier()


def describe(device: torch.device) -> str:
    """E.g. "world size 8, backend nccl, device cuda:3" for the log."""
    backend = _dist().get_backend() if is_dist() else "none"
    return f"world size {get_world_size()}, backend {backend}, device {device}"


def step_sync(losses: dict[str, torch.Tensor], stop: bool) -> tuple[bool, bool, dict[str, float]]:
    """The one host synchronisation of a training step.

    The non-finite check, the "checkpoint now" agreement and the logged loss scalars travel in one
    tensor (on the losses' device), one ``all_reduce`` and one device-to-host copy.

    Returns:
        (any rank's loss is non-finite, any rank asked to stop, losses averaged over ranks)
    """
    import torch

    keys = sorted(losses)
    values = torch.stack([losses[k].detach().reshape(()).double() for k in keys])  # (L,)
    bad = (~torch.isfinite(values)).any().double().reshape(1)
    vec = torch.cat([bad, values.new_full((1,), float(stop)), values])  # (2 + L,)
    if get_world_size() > 1:
        _dist().all_reduce(vec)
    out = vec.tolist()  # the single sync
    n = get_world_size()
    return out[0] > 0, out[1] > 0, {k: v / n for k, v in zip(keys, out[2:])}


def gather_objects(obj, dst: int = 0) -> list:
    """Every rank's ``obj`` in rank order on rank ``dst``; ``[]`` on the other ranks (only
    ``dst`` holds them all: evaluation needs the predictions once, not once per rank)."""
    if get_world_size() == 1:
        return [obj]
    out = [None] * get_world_size() if get_rank() == dst else None
    _dist().gather_object(obj, out, dst=dst)
    return out or []


def all_gather_objects(obj) -> list:
    """Every rank's ``obj``, in rank order."""
    if get_world_size() == 1:
        return [obj]
    out = [None] * get_world_size()
    _dist().all_gather_object(out, obj)
    return out
