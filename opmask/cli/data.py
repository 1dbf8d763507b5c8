"""``opmask-data``: dataset tools. ``opmask-data shapes`` writes the synthetic dataset."""

from __future__ import annotations

import argparse
import sys
import time

from ..data import cocolike
from ..data.catalog import datasets_root, resolve
from ..data.check import check_dataset
from ..data.shapes import FAMILIES, MAX_RADIUS, generate
from ..utils.exit_codes import run_command
from .flags import old_names
from .parser import OneLineParser

# the shortest image side `opmask-data shapes` can place every object in (a shorter one fails
# for some seeds: an object's centre is drawn at least half its radius inside the image)
MIN_SHAPES_SIZE = MAX_RADIUS


def count(minimum: int):
    """An argparse type: an integer >= ``minimum`` (a word that is no integer gets argparse's
    own "invalid int value")."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="opmask-data", description=__doc__.replace("``", ""))
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser(
        "shapes",
        help="generate the synthetic partially supervised shapes dataset",
        description="Writes OUTPUT/train and OUTPUT/val, each with annotations.json (COCO format, "
        "strong/weak split under the 'opmask' key) and images/*.png. The same seed "
        "gives byte-identical files. Families: 'hue' (each class has its own hue family), "
        "'texture' (each class has its own texture in random colours: the class is in shape "
        "and texture, not colour), 'shape' (random textures and colours: the class is in the "
        "outline only), 'oriented' (each class has its own stripe orientation and width in random "
        "colours).",
    )
    s.add_argument(
        "--output",
        metavar="DIR",
        default=None,
        help="output folder (default: $OPMASK_DATASETS/shapes, i.e. where the "
        "builtin names shapes_train / shapes_val look)",
    )
    s.add_argument("--seed", type=count(0), default=0, help="random seed >= 0 (default 0)")
    s.add_argument("--num-train", type=count(1), default=600, help="training images (default 600)")
    s.add_argument("--num-val", type=count(1), default=100, help="validation images (default 100)")
    s.add_argument(
        "--image-size",
        type=count(MIN_SHAPES_SIZE),
        default=128,
        help=f"short side in pixels, at least {MIN_SHAPES_SIZE}; the long side is 5/4 of it "
        "(default 128)",
    )
    s.add_argument(
        "--family",
        choices=FAMILIES,
        default="hue",
        help="what besides the outline tells the classes apart (default hue)",
    )
    s.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    old_names(s, "--out")
    _add_check_and_coco_like(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run_command("opmask-data", COMMANDS[args.command], args)


def _shapes(args) -> int:
    out = args.output or f"{datasets_root()}/shapes"
    start = time.perf_counter()
    generate(
        out,
        seed=args.seed,
        num_train=args.num_train,
        num_val=args.num_val,
        image_size=args.image_size,
        overwrite=args.overwrite,
        family=args.family,
    )
    print(
        f"wrote {out}/train ({args.num_train} images) and {out}/val ({args.num_val} images) "
        f"of the {args.family} family "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return 0


def _add_check_and_coco_like(sub) -> None:
    c = sub.add_parser(
        "check",
        help="validate a dataset: JSON schema, categories, boxes, polygons, image files and sizes",
        description="Checks every record and every image file (in parallel) and prints counts, "
        "each kind of problem with its first image ids, and OK or FAILED (exit 1). Warnings "
        "(polygons mostly outside their image, zero-size boxes, file names outside the image "
        "folder, 16-bit images) name what trains but deserves a look; they do not fail the "
        "check (OK (N warnings)).",
    )
    c.add_argument("dataset", help="a builtin name or ANNOTATIONS.json:IMAGE_DIR")
    c.add_argument("--workers", type=count(1), default=None, help="processes (default: all CPUs)")
    c.add_argument("--decode", action="store_true", help="decode every image, not only headers")
    f = sub.add_parser(
        "coco-like",
        help="write a COCO-shaped fixture of N images (benchmarks, tests)",
        description=cocolike.__doc__,
    )
    f.add_argument("--images", type=count(1), required=True, help="number of images (>= 1)")
    f.add_argument("--output", metavar="DIR", required=True, help="output folder (new or empty)")
    f.add_argument("--seed", type=count(0), default=0, help="random seed >= 0 (default 0)")
    old_names(f, "--out")


def _check(args) -> int:
    json_file, image_root, _ = resolve(args.dataset)
    report = check_dataset(json_file, image_root, workers=args.workers or 0, decode=args.decode)
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


def _coco_like(args) -> int:
    start = time.perf_counter()
    path = cocolike.write_coco_like(args.output, args.images, args.seed)
    print(f"wrote {path} ({args.images} images) in {time.perf_counter() - start:.1f} s")
    return 0


COMMANDS = {"shapes": _shapes, "check": _check, "coco-like": _coco_like}


if __name__ == "__main__":
    sys.exit(main())
