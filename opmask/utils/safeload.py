"""Reading weight files safely: shared by checkpoints and backbone weight files.

``torch.load(weights_only=True)`` refuses code-carrying files; :func:`refusal_reason` turns its
long message into one line naming the blocked global (and never repeats torch's advice to load
with ``weights_only=False``). :func:`check_weights_path` and :func:`check_tensors` turn a wrong
file into one line naming the file and the offending entry.
"""

from __future__ import annotations

import os
import re

import torch

from .errors import OPMaskInputError

# Lines of torch's message that advise unsafe loading or point elsewhere: never shown.
_ADVICE = re.compile(r"weights_only|arbitrary code|documentation|add_safe_globals", re.I)
_REASON = re.compile(r"unsupported (global|operand)", re.I)


class WeightsFileError(OPMaskInputError):
    """A weights file is missing, not a file, or holds something other than named tensors."""


def refusal_reason(e: Exception) -> str:
    """The informative line of torch.load's weights-only refusal, e.g.
    ``unsupported GLOBAL posix.system whose module posix is blocked``."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    hits = [ln for ln in lines if _REASON.search(ln)]
    if hits:
        line = hits[0][_REASON.search(hits[0]).start() :]
        return line.split(". Please")[0].rstrip(".")
    rest = [ln for ln in lines if not _ADVICE.search(ln)]
    return (rest or [type(e).__name__])[0]


def check_weights_path(path: str) -> None:
    """``MODEL.WEIGHTS`` names a readable file.

    Raises:
        WeightsFileError: missing, a directory, or unreadable.
    """
    if os.path.isdir(path):
        raise WeightsFileError(f"MODEL.WEIGHTS {path} is a directory, not a weights file")
    if not os.path.isfile(path):
        raise WeightsFileError(f"MODEL.WEIGHTS {path}: file not found")
    if os.path.getsize(path) == 0:
        raise WeightsFileError(f"MODEL.WEIGHTS {path} is empty")
    if not os.access(path, os.R_OK):
        raise WeightsFileError(f"MODEL.WEIGHTS {path}: not readable (permission denied)")


def check_tensors(path: str, state: dict, kinds: tuple[type, ...] = (torch.Tensor,)) -> dict:
    """Every entry of a state dict is ``name (str) -> tensor``; returns ``state``.

    Raises:
        WeightsFileError: naming the file and the first entry that is not.
    """
    for key, value in state.items():
        if not isinstance(key, str):
            raise WeightsFileError(f"{path}: state dict key {key!r} is not a name")
        if not isinstance(value, kinds):
            raise WeightsFileError(
                f"{path}: entry {key!r} is not a tensor but {type(value).__name__} {value!r:.40}"
            )
    return state
