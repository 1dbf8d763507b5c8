"""``opmask-export``: write a run's newest valid checkpoint in another framework's names."""

from __future__ import annotations

import argparse
import sys

from ..config import ConfigError
from ..engine.checkpoint import CheckpointError
from ..engine.export import FORMATS, export_run
from ..engine.run_dir import RunFolderError
from ..modeling.weights import UnsafeWeightsError
from .parser import OneLineParser

EPILOG = """\
examples:
  opmask-export --format detectron2 output/OPMask/shapes_train_first
  opmask-export --format detectron2 RUN --output model_final.pkl   # Detectron2 model-zoo pickle

OPMask runs are written in the official OPMask code's names (roi_heads.box_head.cls_score ...),
baseline runs in Detectron2's StandardROIHeads names; background moves to the last class.
exit codes: 0 written; 1 bad input (not a run folder, no valid checkpoint, unwritable output).
"""

INPUT_ERRORS = (
    ConfigError,
    CheckpointError,
    RunFolderError,
    UnsafeWeightsError,
    OSError,
    ValueError,
)


def main(argv: list[str] | None = None) -> int:
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
    args = p.parse_args(argv)
    try:
        res = export_run(args.run_dir, args.output, args.format)
    except INPUT_ERRORS as e:
        print(f"opmask-export: error: {e}", file=sys.stderr)
        return 1
    print(f"{res['checkpoint']} -> {res['output']} ({res['keys']} tensors)")
    if res["left_out"]:
        print(f"left out (no Detectron2 name): {', '.join(res['left_out'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
