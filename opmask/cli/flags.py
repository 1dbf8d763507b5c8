"""The flags every command shares, declared once.

* One name per concept across all commands (:data:`NAMES`): ``--output`` for the folder (or
  file) a command writes, ``--seed``, ``--num-gpus`` for processes per machine. The old names
  keep working for one release: :func:`old_names` registers them, hidden from ``--help``, and
  their use prints one ``PROG: note: --OLD is deprecated, use --NEW`` line on stderr.
* The run flags of the commands that start a run (``opmask-train``, ``opmask-submit``): the
  config, the run folder, resume, the collective timeout and the ``KEY VALUE`` overrides. Use
  :func:`add_run_flags` / :func:`add_overrides` on a parser or argument group; the overrides are
  a trailing positional, so add them last.
"""

from __future__ import annotations

import argparse
import sys

# concept -> (its flag in every command, the old names that still work for one release)
NAMES: dict[str, tuple[str, tuple[str, ...]]] = {
    "the folder (or file) the command writes": ("--output", ("--out", "--output-dir")),
    "the random seed": ("--seed", ("--data-seed",)),
    "processes (GPUs) per machine": ("--num-gpus", ("--gpus-per-node",)),
}
NEW_NAME = {old: new for new, olds in NAMES.values() for old in olds}  # old name -> its name


def old_names(p: argparse.ArgumentParser | argparse._ArgumentGroup, *old: str) -> None:
    """Keep each deprecated flag name in ``old`` working on ``p`` as its new name
    (:data:`NEW_NAME`). A flag that ``p`` still declares under the old name (e.g. one derived from
    a field name elsewhere) is renamed first. The old name is not shown by ``--help``; using it
    prints one note on stderr and then does exactly what the new name does (same action: type,
    choices, required all hold)."""
    actions = p._option_string_actions
    for name in old:
        new = NEW_NAME[name]
        action = actions.get(name)
        if action is not None and name in action.option_strings:  # declared under the old name
            if new in actions:
                raise ValueError(f"{name} and {new} are both declared")
            action.option_strings = [new if s == name else s for s in action.option_strings]
            if action.metavar is None and action.nargs != 0:  # was derived from the old name
                action.metavar = new[2:].upper().replace("-", "_")
            actions[new] = action
        action = actions[new]
        _note_old_names(action)
        action.old_names = getattr(action, "old_names", frozenset()) | {name}
        actions[name] = action  # parsed as the same action; not in its option_strings: no help


def _note_old_names(action: argparse.Action) -> None:
    """Make ``action`` print the deprecation note when it is given under an old name."""
    cls = type(action)
    if getattr(cls, "notes_old_names", False):
        return

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string in getattr(self, "old_names", ()):
            new = NEW_NAME[option_string]
            print(f"{parser.prog}: note: {option_string} is deprecated, use {new}", file=sys.stderr)
        cls.__call__(self, parser, namespace, values, option_string)

    action.__class__ = type(cls.__name__, (cls,), {"__call__": __call__, "notes_old_names": True})


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
    """``--config-file``, ``--exp-id``, ``--output`` (old name ``--output-dir``), ``--resume``,
    ``--dist-timeout``."""
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
        "--output",
        dest="output_dir",
        metavar="DIR",
        help="use exactly this run folder instead of the derived one",
    )
    old_names(p, "--output-dir")
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
