"""``opmask-data``: dataset tools. ``opmask-data shapes`` writes the synthetic dataset."""

from __future__ import annotations

import argparse
import sys
import time

from ..data.catalog import datasets_root
from ..data.shapes import FAMILIES, generate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="opmask-data", description=__doc__.replace("``", ""))
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser(
        "shapes",
        help="generate the synthetic partially supervised shapes dataset",
        description="Writes OUT/train and OUT/val, each with annotations.json (COCO format, "
        "strong/weak split under the 'opmask' key) and images/*.png. The same seed "
        "gives byte-identical files. Families: 'hue' (each class has its own hue family), "
        "'texture' (each class has its own texture in random colours: the class is in shape "
        "and texture, not colour), 'shape' (random textures and colours: the class is in the "
        "outline only).",
    )
    s.add_argument(
        "--out",
        default=None,
        help="output folder (default: $OPMASK_DATASETS/shapes, i.e. where the "
        "builtin names shapes_train / shapes_val look)",
    )
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--num-train", type=int, default=600, help="training images (default 600)")
    s.add_argument("--num-val", type=int, default=100, help="validation images (default 100)")
    s.add_argument(
        "--image-size",
        type=int,
        default=128,
        help="short side in pixels; the long side is 5/4 of it (default 128)",
    )
    s.add_argument(
        "--family",
        choices=FAMILIES,
        default="hue",
        help="what besides the outline tells the classes apart (default hue)",
    )
    s.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    args = p.parse_args(argv)

    out = args.out or f"{datasets_root()}/shapes"
    start = time.perf_counter()
    try:
        generate(
            out,
            seed=args.seed,
            num_train=args.num_train,
            num_val=args.num_val,
            image_size=args.image_size,
            overwrite=args.overwrite,
            family=args.family,
        )
    except (FileExistsError, OSError, ValueError) as e:
        print(f"opmask-data: error: {e}", file=sys.stderr)
        return 1
    print(
        f"wrote {out}/train ({args.num_train} images) and {out}/val ({args.num_val} images) "
        f"of the {args.family} family "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
