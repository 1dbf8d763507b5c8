"""Exit codes of ``opmask-train`` and every other console script (documented in README; the SLURM
launcher relies on them), and :func:`run_command`, the one place that maps an exception to its
exit code and message."""

from __future__ import annotations

import sys
import traceback
from typing import Callable

from ..utils.errors import OPMaskInputError

OK = 0  # training / evaluation finished
ERROR = 1  # bad input (config, dataset, weights, output folder): fix and rerun; never requeue
USAGE = 2  # bad command line (argparse)
NON_FINITE = 3  # a loss became NaN/inf: the run stopped; the last checkpoint is intact
BUG = 4  # an unexpected exception (a bug, not the input): traceback on stderr; never requeue
CHECKPOINTED = 75  # "checkpoint now" was honoured (preemption): resume with --resume

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
    its traceback and returns BUG. ``SystemExit`` and ``KeyboardInterrupt`` pass through.
    """
    try:
        code = fn(*args, **kwargs)
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
