"""``opmask-demo``: the whole system in minutes on CPU.

Generates the synthetic shapes dataset if missing, trains the class-agnostic Mask R-CNN baseline
and OPMask with the same schedule (exactly as ``opmask-train`` would), evaluates both, measures
each mask head on the ground-truth boxes (python -m opmask.evaluation.gt_boxes), prints the
comparison and writes it to ``OUT/summary.json``. Re-running it continues or reuses the
runs already in OUT (``--resume`` semantics), so an interrupted demo loses nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from ..data.catalog import BUILTIN, datasets_root
from ..data.coco import DatasetError
from ..engine.checkpoint import atomic_write_bytes

REPO_CONFIGS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "configs",
    "shapes",
)
MODELS = (("baseline", "baseline_R18_shapes.yaml"), ("opmask", "opmask_R18_shapes.yaml"))
COLUMNS = (
    ("box AP", "bbox"),
    ("mask AP", "segm"),
    ("strong mask AP", "segm_strong"),
    ("weak mask AP", "segm_weak"),
)


def comparison_table(results: dict[str, dict]) -> str:
    head = f"{'model':<10}" + "".join(f"{name:>16}" for name, _ in COLUMNS)
    rows = [head, "-" * len(head)]
    for model, res in results.items():
        rows.append(f"{model:<10}" + "".join(f"{res[task]['AP']:>16.2f}" for _, task in COLUMNS))
    if {"baseline", "opmask"} <= set(results):
        gap = {t: results["opmask"][t]["AP"] - results["baseline"][t]["AP"] for _, t in COLUMNS}
        rows.append(f"{'gain':<10}" + "".join(f"{gap[t]:>+16.2f}" for _, t in COLUMNS))
    return "\n".join(rows)


def gt_box_table(diag: dict[str, dict]) -> str:
    """Mask IoU on GT boxes per model: the mask heads compared without detection errors."""
    head = f"{'GT boxes':<10}{'strong mask IoU':>16}{'weak mask IoU':>16}"
    rows = [head, "-" * len(head)]
    for model, res in diag.items():
        rows.append(f"{model:<10}{res['mask_iou_strong']:>16.3f}{res['mask_iou_weak']:>16.3f}")
    return "\n".join(rows)


def _ensure_data(seed: int) -> None:
    """Generate the shapes dataset for ``seed`` if missing; refuse one made with another seed."""
    json_file = os.path.join(datasets_root(), BUILTIN["shapes_train"][0])
    if os.path.isfile(json_file):
        with open(json_file, encoding="utf-8") as f:
            found = json.load(f).get("info", {}).get("seed")
        if found != seed:
            raise DatasetError(
                f"{json_file} was generated with seed {found}, not --data-seed {seed}: point "
                "OPMASK_DATASETS at another folder (and use another --out), or regenerate it "
                f"with opmask-data shapes --seed {seed} --overwrite"
            )
        print(f"[demo] using the synthetic dataset in {datasets_root()}/shapes (seed {seed})")
        return
    from ..data.shapes import generate

    print(f"[demo] generating the synthetic dataset (seed {seed}) in {datasets_root()}/shapes ...")
    generate(os.path.join(datasets_root(), "shapes"), seed=seed, num_train=600, num_val=100)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="opmask-demo",
        description=__doc__.replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="output/demo", help="demo folder (default output/demo)")
    p.add_argument(
        "--data-seed",
        type=int,
        default=0,
        help="seed of the generated dataset (an existing one must have been made with it)",
    )
    p.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        metavar="KEY VALUE",
        help="overrides applied to both models, e.g. SOLVER.MAX_ITER 200",
    )
    args = p.parse_args(argv)
    from ..evaluation.gt_boxes import diagnose_run
    from . import train as train_cli

    start = time.perf_counter()
    try:
        _ensure_data(args.data_seed)
    except (DatasetError, OSError) as e:
        print(f"opmask-demo: error: {e}", file=sys.stderr)
        return 1
    results = {}
    for name, config in MODELS:
        print(f"[demo] {name}: training and evaluating ({config})")
        run_args = train_cli.parser().parse_args(
            [
                "--config-file",
                os.path.join(REPO_CONFIGS, config),
                "--output-dir",
                os.path.join(args.out, name),
                "--resume",
                *args.opts,
            ]
        )
        try:
            results[name] = train_cli.run(run_args)
        except train_cli.INPUT_ERRORS as e:
            print(f"opmask-demo: error: {e}", file=sys.stderr)
            return 1
    table = comparison_table(results)
    summary = {m: {task: r[task]["AP"] for _, task in COLUMNS} for m, r in results.items()}
    print("[demo] GT-box diagnostic: each mask head segments the ground-truth boxes")
    summary["gt_boxes"] = {m: diagnose_run(os.path.join(args.out, m))[0] for m in results}
    summary["seconds"] = round(time.perf_counter() - start, 1)
    atomic_write_bytes(
        os.path.join(args.out, "summary.json"), json.dumps(summary, indent=1).encode()
    )
    print(
        f"\n{table}\n\n{gt_box_table(summary['gt_boxes'])}\n\n"
        f"[demo] written {args.out}/summary.json in {summary['seconds']:.0f} s; "
        f"watch the runs with: tensorboard --logdir {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
