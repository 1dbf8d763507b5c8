"""The run flags, declared once for every command that starts a run (``opmask-train``,
``opmask-submit``): the config, the run folder, resume, the collective timeout and the
``KEY VALUE`` overrides.

Use :func:`run_flags` as a parent parser (``OneLineParser(parents=[run_flags()])``), or
:func:`add_run_flags` / :func:`add_overrides` on a parser or argument group of your own; the
overrides are a trailing positional, so add them last.
"""

from __future__ import annotations

import argparse


def count(minimum: int):
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expects an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def score(text: str) -> float:
    """An argparse type: a detection score threshold in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects a score in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be a score in [0, 1], got {text}")
    return value


def minutes(text: str) -> float:
    """An argparse type: a positive, finite number of minutes."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects minutes, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of minutes, got {text}")
    return value


def add_run_flags(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--config-file``, ``--exp-id``, ``--output-dir``, ``--resume``, ``--dist-timeout``."""
    p.add_argument(
        "--config-file",
        required=True,
        metavar="FILE",
        help="YAML config (may inherit others through _BASE_)",
    )
    p.add_argument(
        "--exp-id",
        default="run_01",
        help="names the run folder OUTPUT_DIR/OPMask/{dataset}_{exp-id} (default run_01)",
    )
    p.add_argument(
        "--output-dir", metavar="DIR", help="use exactly this run folder instead of the derived one"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in the folder from its newest valid checkpoint "
        "(a folder that holds a run is refused without it)",
    )
    add_dist_timeout(p)


def add_dist_timeout(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--dist-timeout MIN`` (also for commands that take no other run flag)."""
    p.add_argument(
        "--dist-timeout",
        type=minutes,
        default=30.0,
        metavar="MIN",
        help="collective timeout in minutes (default 30)",
    )


def add_overrides(p: argparse.ArgumentParser) -> None:
    """The trailing ``KEY VALUE`` config overrides (``args.opts``)."""
    p.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        metavar="KEY VALUE",
        help="config overrides, e.g. SOLVER.BASE_LR 0.01 EXP.PS nvoc",
    )


def run_flags() -> argparse.ArgumentParser:
    """A parent parser (no ``--help`` of its own) with :func:`add_run_flags` and
    :func:`add_overrides`: ``OneLineParser(prog=..., parents=[run_flags()])``."""
    p = argparse.ArgumentParser(add_help=False)
    add_run_flags(p)
    add_overrides(p)
    return p
