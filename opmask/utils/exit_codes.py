"""Exit codes of ``opmask-train`` and every other console script (documented in README; the SLURM
launcher relies on them), and :func:`run_command`, the one place that maps an exception to its
exit code and message."""

from __future__ import annotations

import sys
import traceback
from typing import Callable

from .errors import OPMaskInputError

OK = 0  # training / evaluation finished
ERROR = 1  # bad input (config, dataset, weights, output folder): fix and rerun; never requeue
USAGE = 2  # bad command line (argparse)
NON_FINITE = 3  # a loss became NaN/inf: the run stopped; the last checkpoint is intact
BUG = 4  # an unexpected exception (a bug, not the input): traceback on stderr; never requeue
PEER_FAILED = 5  # this rank stopped because another rank failed first (that rank's code and
# message tell why); seen per rank (srun, torchrun): opmask-train reports the failing rank's code
# Stops on a signal (opmask.train.preempt): every rank agrees at the next step boundary, writes a
# checkpoint and exits with the signal's code; --resume continues. The codes keep what the signal
# meant to a scheduler: 75 (EX_TEMPFAIL) "checkpoint and requeue me" (SIGUSR1, submitit's SIGUSR2
# before a time limit or a preemption); 130 and 143 (the shell's 128 + signal number) a person or
# `scancel` stopping the run: never requeued.
CHECKPOINTED = 75  # SIGUSR1 / SIGUSR2 (preemption, time limit): checkpointed; requeue and resume
INTERRUPTED = 130  # SIGINT (Ctrl-C): the first checkpoints at the next step boundary; a second
# aborts at once (no new checkpoint; --resume continues from the newest one)
TERMINATED = 143  # SIGTERM (kill, scancel, a scheduler's stop without --signal): checkpointed
STOPPED = (CHECKPOINTED, INTERRUPTED, TERMINATED)  # the codes of a stop on a signal

# OS errors about a path the user gave (a missing file, a folder that is not writable ...): one
# line and ERROR, like OPMaskInputError. Other OS errors (a lost connection, EIO) are not input.
PATH_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


def is_input_error(e: BaseException) -> bool:
    """True for bad input (``OPMaskInputError`` or an OS error on a user's path)."""
    return isinstance(e, (OPMaskInputError, *PATH_ERRORS))


def code_for(e: BaseException) -> int:
    """The exit code an exception ends a command with: ERROR for bad input, else BUG."""
    return ERROR if is_input_error(e) else BUG


def run_command(
    prog: str, fn: Callable[..., int | None], *args, report_input: bool = True, **kwargs
) -> int:
    """Call ``fn(*args, **kwargs)`` and return its exit code (None counts as OK).

    Bad input (:func:`is_input_error`) prints ``PROG: error: MESSAGE`` on stderr (only when
    ``report_input``: e.g. only the main rank) and returns ERROR; any other ``Exception`` prints
    its traceback and returns BUG. A Ctrl-C that reaches it (before training installs its own
    handler, e.g. while the inputs are checked, or in a short command) is one line and
    INTERRUPTED. ``SystemExit`` passes through.
    """
    try:
        code = fn(*args, **kwargs)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (Ctrl-C)", file=sys.stderr, flush=True)
        return INTERRUPTED
    except Exception as e:
        if is_input_error(e):
            if report_input:
                print(f"{prog}: error: {e}", file=sys.stderr, flush=True)
            return ERROR
        traceback.print_exc()
        print(
            f"{prog}: internal error (a bug, not your input): {type(e).__name__}: {e}; "
            f"exit code {BUG}",
            file=sys.stderr,
            flush=True,
        )
        return BUG
    return OK if code is None else int(code)
