"""``opmask-export``: write a run's newest valid checkpoint in another framework's names."""

from __future__ import annotations

import argparse
import sys

from ..tools.export import FORMATS, export_run
from ..utils.exit_codes import run_command
from .parser import OneLineParser

EPILOG = """\
examples:
  opmask-export --format detectron2 output/OPMask/shapes_train_first
  opmask-export --format detectron2 RUN --output model_final.pkl   # Detectron2 model-zoo pickle

OPMask runs are written in the official OPMask code's names (roi_heads.box_head.cls_score ...),
baseline runs in Detectron2's StandardROIHeads names; background moves to the last class.
Nothing is written over an existing file without --overwrite, and never into a run folder's own
files (models/, config.yaml, metrics.json, logs, inference/ ...), also through a symlink or "..".
exit codes: 0 written; 1 bad input (not a run folder, no valid checkpoint, a checkpoint that does
not match the run's config.yaml, an output path that is refused or unwritable); 2 bad command
line; 4 internal error (a bug: traceback on stderr).
"""


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="opmask-export",
        description=__doc__.replace("``", ""),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN", help="a run folder of opmask-train")
    p.add_argument("--format", required=True, choices=FORMATS, help="names to write")
    p.add_argument(
        "--output",
        metavar="FILE",
        help="file to write (.pkl: numpy pickle; else .pth); "
        "default RUN/export/{checkpoint}_detectron2.pth",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run_command("opmask-export", _export, args)


def _export(args: argparse.Namespace) -> int:
    res = export_run(args.run_dir, args.output, args.format, overwrite=args.overwrite)
    print(f"{res['checkpoint']} -> {res['output']} ({res['keys']} tensors)")
    if res["left_out"]:
        print(f"left out (no Detectron2 name): {', '.join(res['left_out'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
