"""Stopping safely on a signal: a request only sets a flag; the train loop honours it at the next
step boundary (all ranks agree through one collective), saves, and exits with the code of the
signals that asked (:func:`code_for`). Signal handlers and the SLURM launcher use :func:`handle`
and :func:`request`.

- SIGUSR1 (and submitit's SIGUSR2 in a SLURM job): "checkpoint and requeue me"
  -> ``exit_codes.CHECKPOINTED`` (75).
- SIGTERM (``kill``, ``scancel``): checkpoint, then ``exit_codes.TERMINATED`` (143).
- SIGINT (Ctrl-C): the first checkpoints like SIGTERM (``exit_codes.INTERRUPTED``, 130); a second
  one aborts at once: the handler raises :class:`Stopped` (``aborted``) while the rank runs
  (:func:`armed`).

Where no step boundary will come (the evaluation), :func:`at_once` makes any stop signal raise
:class:`Stopped` from the handler. Handlers act only in the process that installed them. While
they are installed, a process forked from this one (a DataLoader worker) starts with the stop
signals blocked: one sent to the whole process group or cgroup (a terminal's Ctrl-C,
``scancel``) would otherwise kill it and make its main process fail; the main process decides,
and ends its workers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Iterable, Iterator

from ..utils import exit_codes

logger = logging.getLogger(__name__)
SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)  # what a rank of opmask-train handles

_requested = threading.Event()
_reasons: list[str] = []  # why, in order of arrival (e.g. "SIGUSR1"); logged with the checkpoint
_owner = os.getpid()  # handlers do nothing in other processes (forked loader workers)
_state = {"armed": False, "at_once": False, "aborted": False, "installed": False}
BLOCKED_IN_WORKERS = {signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2}


def _after_fork_in_child() -> None:
    if _state["installed"]:
        signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED_IN_WORKERS)


os.register_at_fork(after_in_child=_after_fork_in_child)


class Stopped(BaseException):
    """Raised by a signal handler: a stop during :func:`at_once` (the evaluation), or a second
    SIGINT (``aborted``) while :func:`armed`. A BaseException, so that no ``except Exception``
    of the code it interrupts swallows it."""

    def __init__(self, signals: list[str], aborted: bool = False):
        what = "aborted by a second SIGINT" if aborted else f"stopped by {describe(signals)}"
        super().__init__(what)
        self.signals, self.aborted = list(signals), aborted

    @property
    def code(self) -> int:
        return code_for(self.signals)


def code_for(signals: Iterable[str]) -> int:
    """The exit code of a stop asked by ``signals`` (names): SIGINT wins over SIGTERM, which wins
    over the scheduler's checkpoint-and-requeue signals (a person's stop is never requeued)."""
    names = set(signals)
    if "SIGINT" in names:
        return exit_codes.INTERRUPTED
    if "SIGTERM" in names:
        return exit_codes.TERMINATED
    return exit_codes.CHECKPOINTED


def describe(signals: Iterable[str]) -> str:
    """E.g. "SIGTERM", "SIGUSR1 and SIGTERM"; "a request" when none is named."""
    names = list(dict.fromkeys(signals))
    return " and ".join(names) if names else "a request"


def request(reason: str = "") -> None:
    """Ask for a checkpoint at the next step boundary. Safe in a signal handler."""
    if reason:
        _reasons.append(reason)
    _requested.set()


def requested() -> bool:
    return _requested.is_set()


def reason() -> str:
    """Why this process was asked to checkpoint ("" if it was not, or no reason was given)."""
    return ", ".join(dict.fromkeys(_reasons))


def signals() -> list[str]:
    """The names of the signals this process received, each once, in order of arrival."""
    return list(dict.fromkeys(_reasons))


def clear() -> None:
    _requested.clear()
    _reasons.clear()
    _state.update(aborted=False)


def handle(signum: int, frame=None) -> None:
    """The handler of every stop signal (usable as ``signal.signal``'s handler)."""
    if os.getpid() != _owner:
        return  # a forked DataLoader worker: the process that owns it decides
    name = signal.Signals(signum).name
    again = name == "SIGINT" and "SIGINT" in _reasons
    request(name)
    if again:
        _state["aborted"] = True
        if _state["armed"]:
            raise Stopped(signals(), aborted=True)
    elif _state["armed"] and _state["at_once"]:
        raise Stopped(signals())


def install_signal_handlers(sigs: Iterable[int] = SIGNALS) -> None:
    """Make each signal in ``sigs`` a stop request (main thread only)."""
    global _owner
    _owner = os.getpid()
    for sig in sigs:
        signal.signal(sig, handle)
    _state["installed"] = True


@contextlib.contextmanager
def handling(sigs: Iterable[int] = SIGNALS) -> Iterator[None]:
    """Handle ``sigs`` as stop requests inside the block; the previous handlers afterwards.
    Outside the main thread (where Python cannot set handlers) it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in sigs}
    installed = _state["installed"]
    install_signal_handlers(previous)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        _state["installed"] = installed


@contextlib.contextmanager
def armed() -> Iterator[None]:
    """While a rank runs: a second SIGINT raises :class:`Stopped` (also at once on entry, if it
    came before)."""
    if _state["aborted"]:
        raise Stopped(signals(), aborted=True)
    _state["armed"] = True
    try:
        yield
    finally:
        _state["armed"] = False


@contextlib.contextmanager
def at_once() -> Iterator[None]:
    """Where no step boundary will come (the evaluation): a stop signal raises
    :class:`Stopped` from its handler (at once on entry, if one came before). Only while
    :func:`armed`; elsewhere the request waits for a step boundary as usual."""
    if _state["armed"] and requested():
        raise Stopped(signals())
    _state["at_once"] = True
    try:
        yield
    finally:
        _state["at_once"] = False
