"""``opmask-predict``: run a trained model on images and look at its masks (one overlay PNG per
image, one COCO results JSON for all of them)."""

from __future__ import annotations

import argparse
import sys

from ..tools.predict_files import RESULTS, predict_files
from ..utils.exit_codes import run_command
from .flags import count, score
from .parser import OneLineParser

PROG = "opmask-predict"

EPILOG = f"""\
examples:
  opmask-predict output/OPMask/shapes_train_run_01 --input photos/ --output pred/
  opmask-predict RUN --input "shots/*.jpg" a.png --output pred/ --show-prior
  opmask-predict RUN --input datasets/shapes/val/annotations.json:datasets/shapes/val/images \\
      --gt datasets/shapes/val/annotations.json --output pred/ --confidence-threshold 0
  opmask-predict model_final.pth --config-file configs/opmask_R50_FPN_130k.yaml \\
      --input img.jpg --output pred/              # our, Detectron2's or official OPMask weights

RUN is an opmask-train run folder (its config.yaml and newest valid checkpoint). Images are read
with their EXIF orientation applied and processed exactly as the run's evaluation does. Overlays:
masks, boxes, class names and scores; weak classes (box labels only in training) in cool colours
with a thinner box and "(weak)", strong ones in warm colours; one PNG per image, named after it.
DIR/{RESULTS}: COCO results of all images (the dataset's category ids;
image ids from an annotation file given as --input or --gt, else the image's position in the
input list, from 1). Nothing in DIR is replaced without --overwrite.

exit codes: 0 all written; 1 bad input, nothing written (no such run, no valid checkpoint, an
input that does not exist, an unwritable DIR, files in DIR without --overwrite), or some inputs
were not readable images: each is named on stderr and the others are written; 2 bad command
line; 4 internal error (a bug: traceback on stderr).
"""


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=PROG,
        description=__doc__.replace("``", ""),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", metavar="RUN_OR_WEIGHTS", help="a run folder, or a weights file")
    p.add_argument("--config-file", metavar="FILE", help="the config of a weights file")
    p.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="PATH",
        help="image files, folders, globs, COCO annotation files (ANN.json: names relative to "
        "its folder; ANN.json:IMAGE_DIR) or dataset names (shapes_val)",
    )
    p.add_argument("--output", required=True, metavar="DIR", help="folder to write into")
    p.add_argument(
        "--confidence-threshold",
        type=score,
        default=0.5,
        metavar="T",
        help="keep detections scoring >= T (default 0.5; the model's SCORE_THRESH_TEST first)",
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1, auto (default: the run's MODEL.DEVICE)")
    p.add_argument(
        "--max-size",
        type=count(0),
        default=0,
        metavar="PX",
        help="shrink each drawn panel to at most PX on its longer side (default 0: as is; "
        "detections and the JSON are always at full size)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace files already in DIR")
    p.add_argument(
        "--batch-size",
        type=count(1),
        default=1,
        metavar="N",
        help="images per forward pass (default 1, exactly the evaluation's numbers; more pads "
        "the batch to one size, which can change scores in the last digits)",
    )
    p.add_argument(
        "--show-prior",
        action="store_true",
        help="add a panel with each detection's object mask prior pasted into its box",
    )
    p.add_argument("--gt", metavar="ANN.json", help="add a panel with this file's ground truth")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run_command(
        PROG,
        predict_files,
        args.source,
        inputs=args.input,
        output=args.output,
        config_file=args.config_file,
        threshold=args.confidence_threshold,
        device=args.device,
        max_size=args.max_size,
        overwrite=args.overwrite,
        batch_size=args.batch_size,
        show_prior=args.show_prior,
        gt=args.gt,
    )


if __name__ == "__main__":
    sys.exit(main())
