"""Starting one or many training processes: local spawn (``--num-gpus N``), several machines
(``--num-machines``/``--machine-rank``/``--dist-url``), or ``env://`` when a launcher (torchrun,
SLURM) already exported ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``.

NCCL is used on CUDA, gloo on CPU. ``fn(*args)`` returns an exit code on every rank; the launcher
returns the run's (:func:`outcome`: the first rank that failed for its own reason, else a stop's
code, else 0). Local children run in their own process group; the parent forwards SIGINT,
SIGTERM and SIGUSR1 to them, waits while they checkpoint, and exits with their code."""

from __future__ import annotations

import contextlib
import datetime
import multiprocessing.connection as mp_connection
import os
import pickle
import signal
import socket
import sys
import threading
import time
from typing import Callable, Iterator

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..train import preempt
from ..utils import exit_codes


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


def _destroy(after_failure: bool) -> None:
    """Leave the process group; after a failure (a peer may be gone) its errors are ignored."""
    try:
        dist.destroy_process_group()
    except Exception:
        if not after_failure:
            raise


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
    # Its own process group: a terminal's Ctrl-C reaches the parent only, which forwards each
    # signal once (a SIGINT counted twice would abort). Stop signals are blocked until the
    # handlers are in place (the parent blocked them before starting us).
    os.setpgid(0, 0)
    preempt.install_signal_handlers()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    rank = machine_rank * procs_per_machine + local_rank
    if backend == "gloo":  # CPU ranks share the machine's cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // procs_per_machine))
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local_rank))
    _init(backend, dist_url, world, rank, local_rank, timeout_min)
    code = 1
    try:
        code = fn(*args)
    finally:
        _destroy(after_failure=code != 0)
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
        code = 1
        try:
            code = fn(*args)
            return code
        finally:
            _destroy(after_failure=code != 0)
    world = num_procs * num_machines
    if world == 1:
        return fn(*args)
    if dist_url == "auto":
        if num_machines > 1:
            raise ValueError("--dist-url tcp://HOST:PORT is required with --num-machines > 1")
        dist_url = f"tcp://127.0.0.1:{free_port()}"
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)  # until each child handles
    try:
        ctx = mp.start_processes(
            _worker,
            nprocs=num_procs,
            join=False,
            start_method="spawn",
            args=(fn, num_procs, machine_rank, world, backend, dist_url, timeout_min, args),
        )
        with _forwarding(ctx.processes) as state:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            ended = _wait(ctx.processes, state)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    return outcome([(r, _raised(ctx, r, c)) for r, c in ended])


def _raised(ctx, rank: int, code: int) -> int:
    """A child whose ``_worker`` raised (torch wrote the traceback to a file and exited 1): its
    traceback on stderr and ``exit_codes.BUG``; else ``code``."""
    path = ctx.error_files[rank]
    if code != 1 or not path or not os.path.isfile(path) or not os.path.getsize(path):
        return code
    with open(path, "rb") as f:
        print(pickle.load(f), file=sys.stderr, end="", flush=True)
    print(f"rank {rank}: internal error (a bug, not your input)", file=sys.stderr, flush=True)
    return exit_codes.BUG


FORWARDED = {signal.SIGINT, signal.SIGTERM, signal.SIGUSR1}  # the children's stop signals
GRACE_S = 30.0  # after a rank failed: how long the others may take to end on their own
ABORT_S = 5.0  # after a second SIGINT: how long the children may take to abort


@contextlib.contextmanager
def _forwarding(processes: list) -> Iterator[dict]:
    """The parent passes each stop signal on to every child (they checkpoint and exit; the
    parent waits for them) instead of dying with a traceback."""
    state = {"sigints": 0, "kill_at": None}

    def forward(signum, frame):
        if signum == signal.SIGINT:
            state["sigints"] += 1
            if state["sigints"] >= 2 and state["kill_at"] is None:
                state["kill_at"] = time.monotonic() + ABORT_S
        for p in processes:
            if p.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signum)

    if threading.current_thread() is not threading.main_thread():
        yield state  # only the main thread may set handlers: signals keep their defaults
        return
    previous = {sig: signal.getsignal(sig) for sig in FORWARDED}
    for sig in FORWARDED:
        signal.signal(sig, forward)
    try:
        yield state
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def _wait(processes: list, state: dict) -> list[tuple[int, int]]:
    """Wait for every child; returns ``(rank, exit code)`` in the order they ended. When one
    failed, the others get ``GRACE_S`` to end on their own (a lost peer ends gloo's collectives
    at once; NCCL's may hang), then are killed with their DataLoader workers."""
    ended: list[tuple[int, int]] = []
    left = {p.sentinel: rank for rank, p in enumerate(processes)}
    while left:
        for sentinel in mp_connection.wait(list(left), timeout=0.5):
            rank = left.pop(sentinel)
            processes[rank].join()
            code = processes[rank].exitcode
            if code == -signal.SIGKILL and state["sigints"] >= 2:
                code = exit_codes.INTERRUPTED  # killed by us: the abort took too long
            ended.append((rank, code))
            failed = ended[-1][1] not in (0, *exit_codes.STOPPED, exit_codes.PEER_FAILED)
            if failed and state["kill_at"] is None:
                state["kill_at"] = time.monotonic() + GRACE_S
        if left and state["kill_at"] is not None and time.monotonic() > state["kill_at"]:
            for rank in left.values():  # its group: the rank and its DataLoader workers
                for kill in (os.killpg, os.kill):
                    with contextlib.suppress(ProcessLookupError):
                        kill(processes[rank].pid, signal.SIGKILL)
            state["kill_at"] = float("inf")
    return ended


def outcome(ended: list[tuple[int, int]], prog: str = "opmask-train") -> int:
    """The run's exit code from its ranks' ``(rank, code)`` in the order they ended: the first
    rank that failed for its own reason (not ``PEER_FAILED``), a stop's code, or 0. A rank
    killed by a signal is named in one line and gives 128 + the signal's number."""
    causes = [(r, c) for r, c in ended if c not in (0, exit_codes.PEER_FAILED)]
    failures = [(r, c) for r, c in causes if c not in exit_codes.STOPPED]
    if failures:
        rank, code = failures[0]
        if code >= 0:
            return code
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        print(f"{prog}: error: rank {rank} was killed by {name}", file=sys.stderr, flush=True)
        return 128 - code
    if causes:  # stops only: the strongest (a person's stop over the scheduler's)
        return max((c for _, c in causes), key=exit_codes.STOPPED.index)
    if any(c == exit_codes.PEER_FAILED for _, c in ended):
        print(
            f"{prog}: internal error: the ranks lost their connections to each other and none "
            f"said why (see each rank's log.txt); exit code {exit_codes.BUG}",
            file=sys.stderr,
            flush=True,
        )
        return exit_codes.BUG
    return 0
