"""Logging set-up of a process: console on the main rank, a log file per rank."""

from __future__ import annotations

import logging
import sys

from . import comm


def setup_logging(log_file: str | None) -> None:
    """Console (main rank, INFO) and ``log_file`` (appended; each rank passes its own)."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        root.removeHandler(h)
    fmt = logging.Formatter("[%(asctime)s %(name)s %(levelname)s] %(message)s", "%m/%d %H:%M:%S")
    if comm.is_main_process():
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(fmt)
        root.addHandler(console)
    if log_file:
        fh = logging.FileHandler(log_file)
        fh.setFormatter(fmt)
        root.addHandler(fh)
