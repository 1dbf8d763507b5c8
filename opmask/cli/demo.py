"""``opmask-demo``: the whole system in minutes on CPU.

Generates the synthetic shapes dataset if missing (or uses any COCO-format dataset given with
--train/--val), trains the class-agnostic Mask R-CNN baseline and OPMask with the same schedule
(exactly as ``opmask-train`` would), evaluates both, measures each mask head on the ground-truth
boxes (opmask-diagnose), prints the comparison and writes it to
``OUTPUT/summary.json``. First, a shared first stage trains the baseline for --pretrain-iters
iterations (default 300; boxes of all classes, masks of the strong classes only, never a
weak-class mask) and both models start from its backbone + FPN: the CPU analogue of the paper's
ImageNet start, without which OPMask's CAM box head learns classes that are not told by colour
too slowly (docs/results.md). Re-running it continues or reuses the runs already in
OUTPUT (``--resume`` semantics), so an interrupted demo loses nothing.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time

from ..config import load_config
from ..data.catalog import BUILTIN, datasets_root, load_dataset
from ..data.coco import DatasetError
from ..utils.errors import OPMaskInputError
from ..utils.exit_codes import run_command
from ..utils.fs import atomic_write_bytes
from ..utils.resources import config_dir
from ..utils.table import format_table
from .flags import old_names
from .parser import OneLineParser

MODELS = (("baseline", "baseline_R18_shapes.yaml"), ("opmask", "opmask_R18_shapes.yaml"))
PRETRAIN_ITERS = 300  # the shared first stage (docs/results.md: measured on four datasets)
COLUMNS = (
    ("box AP", "bbox"),
    ("mask AP", "segm"),
    ("strong mask AP", "segm_strong"),
    ("weak mask AP", "segm_weak"),
)


def comparison_table(results: dict[str, dict]) -> str:
    rows = [[model, *(res[task]["AP"] for _, task in COLUMNS)] for model, res in results.items()]
    if {"baseline", "opmask"} <= set(results):
        gap = [results["opmask"][t]["AP"] - results["baseline"][t]["AP"] for _, t in COLUMNS]
        rows.append(["gain", *(f"{g:+.2f}" for g in gap)])
    header = ["model", *(name for name, _ in COLUMNS)]
    return format_table(header, rows, [10] + [16] * len(COLUMNS), fmt=".2f", rule="-")


def gt_box_table(diag: dict[str, dict]) -> str:
    """Mask IoU on GT boxes per model: the mask heads compared without detection errors."""
    rows = [[m, r["mask_iou_strong"], r["mask_iou_weak"]] for m, r in diag.items()]
    header = ["GT boxes", "strong mask IoU", "weak mask IoU"]
    return format_table(header, rows, [10, 16, 16], fmt=".3f", rule="-")


def _ensure_data(seed: int) -> None:
    """Generate the shapes dataset for ``seed`` if missing; refuse one made with another seed
    or of another family than the built-in ``hue``."""
    json_file = os.path.join(datasets_root(), BUILTIN["shapes_train"][0])
    if os.path.isfile(json_file):
        with open(json_file, encoding="utf-8") as f:
            info = json.load(f).get("info", {})
        found, family = info.get("seed"), info.get("family", "hue")
        if family != "hue":
            raise DatasetError(
                f"{json_file} is of the {family!r} family, not the built-in 'hue': run it with "
                f"--train {json_file}:{os.path.dirname(json_file)}/images --val ... instead"
            )
        if found != seed:
            raise DatasetError(
                f"{json_file} was generated with seed {found}, not --seed {seed}: point "
                "OPMASK_DATASETS at another folder (and use another --output), or regenerate it "
                f"with opmask-data shapes --seed {seed} --overwrite"
            )
        print(f"[demo] using the synthetic dataset in {datasets_root()}/shapes (seed {seed})")
        return
    from ..data.shapes import generate

    print(f"[demo] generating the synthetic dataset (seed {seed}) in {datasets_root()}/shapes ...")
    generate(os.path.join(datasets_root(), "shapes"), seed=seed, num_train=600, num_val=100)


def parse_strong_ids(text: str) -> list[int]:
    """``"1,2,3"`` -> [1, 2, 3]; DatasetError (one line) for anything else."""
    try:
        ids = [int(x) for x in text.split(",")]
    except ValueError:
        raise DatasetError(
            f"--strong-ids {text!r}: expected comma-separated category ids, e.g. 1,2,3"
        ) from None
    if len(set(ids)) != len(ids):
        raise DatasetError(f"--strong-ids {text!r}: an id is repeated")
    return ids


def dataset_overrides(train: str | None, val: str | None, strong: str | None) -> list[str]:
    """Config overrides for a user dataset (validated: files, categories, strong ids); [] for
    the built-in shapes. Raises DatasetError / SplitError with one line."""
    if (train is None) != (val is None):
        raise DatasetError("--train and --val go together (each ANNOTATIONS.json:IMAGE_DIR)")
    opts = []
    if train is not None:
        for flag, spec in (("--train", train), ("--val", val)):
            json_file, _, images = spec.rpartition(":")
            if not json_file.endswith(".json") or not images:
                raise DatasetError(f"{flag} {spec!r}: expected ANNOTATIONS.json:IMAGE_DIR")
            if not os.path.isdir(images):
                raise DatasetError(f"{flag} {spec!r}: image folder {images} not found")
        _, info = load_dataset(train)
        if load_dataset(val)[1].category_ids != info.category_ids:
            raise DatasetError(f"--val {val!r} has other categories than --train {train!r}")
        opts += ["DATASETS.TRAIN", repr((train,)), "DATASETS.TEST", repr((val,))]
        opts += ["MODEL.ROI_HEADS.NUM_CLASSES", str(len(info.category_ids))]
        if strong is None and info.dataset_strong_ids is None:
            raise DatasetError(f"{train} declares no strong/weak split: give --strong-ids")
    if strong is not None:
        opts += ["EXP.STRONG_CATEGORY_IDS", repr(parse_strong_ids(strong))]
    return opts


def _train(config: str, run_dir: str, opts: list[str]) -> dict:
    """One ``opmask-train --resume`` run of a demo config in ``run_dir``; returns its
    evaluation (task -> metrics)."""
    from ..run import entry

    cfg = load_config(str(config_dir() / "shapes" / config), opts)
    return entry.train_in_process(cfg, run_dir, resume=True)


def check_recipe(out: str, pretrain_iters: int) -> None:
    """Refuse an OUT whose runs were made with another --pretrain-iters: a re-run reuses finished
    runs, so it would print one recipe's baseline beside another's OPMask."""
    import yaml

    from ..run.folder import RunFolder

    weights = os.path.join(out, "pretrain", "backbone.pth") if pretrain_iters > 0 else ""
    for name, key, want in [
        ("pretrain", ("SOLVER", "MAX_ITER"), pretrain_iters),
        *[(m, ("MODEL", "WEIGHTS"), weights) for m, _ in MODELS],
    ]:
        path = RunFolder(os.path.join(out, name)).config
        if (name == "pretrain" and pretrain_iters <= 0) or not os.path.isfile(path):
            continue
        with open(path) as f:
            have = (yaml.safe_load(f) or {}).get(key[0], {}).get(key[1])
        if have != want:
            raise OPMaskInputError(
                f"{os.path.join(out, name)} was made with {'.'.join(key)} {have!r}, this demo "
                f"would use {want!r} (--pretrain-iters {pretrain_iters}): give another --output, "
                "or the --pretrain-iters that folder was made with"
            )


def pretrain_backbone(out: str, iters: int, opts: list[str]) -> list[str]:
    """The shared first stage: the baseline trained ``iters`` iterations; its backbone + FPN
    (``backbone.*``) saved to ``out/pretrain/backbone.pth``. Returns the override that starts
    a model from it ([] for ``iters`` 0)."""
    if iters <= 0:
        return []
    import torch

    from ..run.folder import RunFolder

    run_dir = os.path.join(out, "pretrain")
    steps = ["SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", f"({iters},)"]
    _train(MODELS[0][1], run_dir, opts + steps + ["TEST.EVAL_PERIOD", "0"])
    path = os.path.join(run_dir, "backbone.pth")
    if not os.path.isfile(path):
        state = RunFolder(run_dir).latest_checkpoint()[1]["model"]
        body = {k: v for k, v in state.items() if k.startswith("backbone.")}
        buf = io.BytesIO()
        torch.save({"model": body}, buf)
        atomic_write_bytes(path, buf.getvalue())
    return ["MODEL.WEIGHTS", path]


EPILOG = """\
examples:
  opmask-demo                                   # the built-in shapes (hue family, seed 0)
  OPMASK_DATASETS=datasets/seed1 opmask-demo --seed 1 --output output/demo-seed1
  opmask-data shapes --family oriented --output datasets/oriented  # classes not told by colour
  opmask-demo --train datasets/oriented/train/annotations.json:datasets/oriented/train/images \\
      --val datasets/oriented/val/annotations.json:datasets/oriented/val/images \\
      --output output/demo-oriented
"""


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="opmask-demo",
        description=__doc__.replace("``", ""),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--output", metavar="DIR", default="output/demo", help="demo folder (default output/demo)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the generated dataset (an existing one must have been made with it)",
    )
    old_names(p, "--out", "--data-seed")
    p.add_argument(
        "--train",
        metavar="ANN.json:IMAGES",
        help="a COCO-format training set instead of the built-in shapes (needs --val)",
    )
    p.add_argument("--val", metavar="ANN.json:IMAGES", help="its validation set")
    p.add_argument(
        "--strong-ids",
        metavar="1,2,3",
        help="category ids with mask supervision (default: the split the annotation file "
        "declares under 'opmask', as the built-in shapes do)",
    )
    p.add_argument(
        "--pretrain-iters",
        type=int,
        default=PRETRAIN_ITERS,
        metavar="N",
        help="first train the baseline N iterations and start both models from its "
        f"backbone + FPN (default {PRETRAIN_ITERS}; 0: both start from scratch)",
    )
    p.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        metavar="KEY VALUE",
        help="overrides applied to both models, e.g. SOLVER.MAX_ITER 200",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run_command("opmask-demo", _demo, args)


def _demo(args: argparse.Namespace) -> int:
    from ..tools.diagnose import diagnose_run

    start = time.perf_counter()
    opts = dataset_overrides(args.train, args.val, args.strong_ids)
    if args.train is None:
        _ensure_data(args.seed)
    opts += args.opts
    check_recipe(args.output, args.pretrain_iters)
    opts += pretrain_backbone(args.output, args.pretrain_iters, opts)
    results = {}
    for name, config in MODELS:
        print(f"[demo] {name}: training and evaluating ({config})")
        results[name] = _train(config, os.path.join(args.output, name), opts)
    table = comparison_table(results)
    summary = {m: {task: r[task]["AP"] for _, task in COLUMNS} for m, r in results.items()}
    print("[demo] GT-box diagnostic: each mask head segments the ground-truth boxes")
    summary["gt_boxes"] = {m: diagnose_run(os.path.join(args.output, m))[0] for m in results}
    summary["seconds"] = round(time.perf_counter() - start, 1)
    atomic_write_bytes(
        os.path.join(args.output, "summary.json"), json.dumps(summary, indent=1).encode()
    )
    print(
        f"\n{table}\n\n{gt_box_table(summary['gt_boxes'])}\n\n"
        f"[demo] written {args.output}/summary.json in {summary['seconds']:.0f} s; "
        f"watch the runs with: tensorboard --logdir {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
