"""Starting one or many training processes: local spawn (``--num-gpus N``), several machines
(``--num-machines``/``--machine-rank``/``--dist-url``), or ``env://`` when a launcher (torchrun,
SLURM) already exported ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``.

NCCL is used on CUDA, gloo on CPU. ``fn(*args)`` returns an exit code on every rank; the launcher
returns the first non-zero one (or 0)."""

from __future__ import annotations

import datetime
import os
import socket
from typing import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend_for(device: str) -> str:
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return "nccl" if cuda else "gloo"


def env_world() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) from the environment, if a launcher exported them."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        return rank, world, int(os.environ.get("LOCAL_RANK", rank))
    return None


def _init(
    backend: str, init_method: str, world: int, rank: int, local_rank: int, timeout_min: float
) -> None:
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        backend,
        init_method=init_method,
        world_size=world,
        rank=rank,
        timeout=datetime.timedelta(minutes=timeout_min),
    )


def _worker(
    local_rank: int,
    fn: Callable[..., int],
    procs_per_machine: int,
    machine_rank: int,
    world: int,
    backend: str,
    dist_url: str,
    timeout_min: float,
    args: tuple,
) -> None:
    rank = machine_rank * procs_per_machine + local_rank
    if backend == "gloo":  # CPU ranks share the machine's cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // procs_per_machine))
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local_rank))
    _init(backend, dist_url, world, rank, local_rank, timeout_min)
    try:
        code = fn(*args)
    finally:
        dist.destroy_process_group()
    if code:
        raise SystemExit(code)


def launch(
    fn: Callable[..., int],
    args: tuple = (),
    *,
    num_procs: int = 1,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str = "auto",
    device: str = "auto",
    timeout_min: float = 30.0,
) -> int:
    """Run ``fn(*args)`` on every rank of the requested world; returns an exit code."""
    backend = backend_for(device)
    from_env = env_world()
    if from_env is not None and num_procs == 1 and num_machines == 1:
        rank, world, local_rank = from_env
        if world == 1:
            return fn(*args)
        _init(backend, "env://", world, rank, local_rank, timeout_min)
        try:
            return fn(*args)
        finally:
            dist.destroy_process_group()
    world = num_procs * num_machines
    if world == 1:
        return fn(*args)
    if dist_url == "auto":
        if num_machines > 1:
            raise ValueError("--dist-url tcp://HOST:PORT is required with --num-machines > 1")
        dist_url = f"tcp://127.0.0.1:{free_port()}"
    ctx = mp.start_processes(
        _worker,
        nprocs=num_procs,
        join=False,
        start_method="spawn",
        args=(fn, num_procs, machine_rank, world, backend, dist_url, timeout_min, args),
    )
    return _wait(ctx)


def _wait(ctx) -> int:
    """Wait for every process; the first non-zero exit code wins (the others are stopped)."""
    try:
        while not ctx.join():
            pass
        return 0
    except mp.ProcessExitedException as e:
        return e.exit_code if e.exit_code and e.exit_code > 0 else 1
    except mp.ProcessRaisedException:
        return 1
