"""``opmask-diagnose RUN_DIR``: how well a trained run segments when boxes and classes are given
(mask IoU, OMP IoU and classification accuracy on GT boxes, strong vs weak classes)."""

from __future__ import annotations

import sys

from ..evaluation.gt_boxes import format_table
from ..tools.diagnose import diagnose_run
from ..utils.exit_codes import run_command
from .parser import OneLineParser


def parser() -> OneLineParser:
    p = OneLineParser(
        prog="opmask-diagnose",
        description=__doc__.split(": ", 1)[1],
        epilog="writes inference/{dataset}/gt_box_diagnostics.json in the run folder; "
        "exit codes: 0 written, 1 bad input (not a run folder, no DATASETS.TEST, no valid "
        "checkpoint, a checkpoint that does not match the run's config.yaml), 2 bad command "
        "line, 4 internal error (a bug).",
    )
    p.add_argument("run_dir", help="a run folder of opmask-train (config.yaml + models/)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run_command("opmask-diagnose", _diagnose, args.run_dir)


def _diagnose(run_dir: str) -> int:
    res, out = diagnose_run(run_dir)
    print(f"{format_table(res)}\n\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
