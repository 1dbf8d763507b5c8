""" "Checkpoint now": a request only sets a flag; the train loop honours it at the next step
boundary (all ranks agree through one collective), saves, and exits with
``exit_codes.CHECKPOINTED``. Signal handlers and the SLURM launcher use :func:`request`."""

from __future__ import annotations

import logging
import signal
import threading

logger = logging.getLogger(__name__)
_requested = threading.Event()
_reasons: list[str] = []  # why, in order of arrival (e.g. "SIGUSR1"); logged with the checkpoint


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


def clear() -> None:
    _requested.clear()
    _reasons.clear()


def install_signal_handlers(signals=(signal.SIGUSR1,)) -> None:
    """Make each signal in ``signals`` request a checkpoint (main thread only)."""
    for sig in signals:
        signal.signal(sig, lambda signum, frame: request(signal.Signals(signum).name))
