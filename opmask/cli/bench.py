"""``opmask-bench``: speed of our training step and evaluation, against references measured in the
same run on identical inputs. Prints a table; not a test (numbers depend on the machine).

Default table: (a) our class-agnostic Mask R-CNN baseline step vs torchvision's
``maskrcnn_resnet50_fpn`` step, (b) OPMask step vs our baseline step, (c) data loading's share of a
training step, (d) evaluation time (inference + COCOeval) per image.

``--matrix``: baseline and OPMask R50-FPN at 800x1333, 2 images per device, for fp32, TF32,
fp16-AMP and bf16-AMP, each with and without channels-last, one ``MODEL.COMPILE`` row, and
torchvision's Mask R-CNN as the reference: step time, img/s, peak memory, achieved model TFLOP/s
and MFU against the device's dense peak for the dtype (CUDA).

``--flops``: forward multiply-accumulates per stage (fvcore) at the given size and RoI counts.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch

from ..bench import speed
from ..utils.exit_codes import run_command
from ..utils.table import format_table
from .flags import count
from .parser import OneLineParser

MIN_SIDE = 32  # an image side of at least the backbone's stride (as the config's image sizes)


def _machine(device: torch.device) -> str:
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    return (
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, device {device}{gpu}"
    )


def default_table(args, device: torch.device) -> None:
    batch = speed.synthetic_inputs(args.batch, args.size, args.size, device)
    tv = speed.time_steps(speed.torchvision_step(batch, device), args.steps, device)
    base = speed.time_steps(speed.ours_step("baseline", batch, device), args.steps, device)
    opm = speed.time_steps(speed.ours_step("opmask", batch, device), args.steps, device)
    rows = [
        ("(a) torchvision maskrcnn_resnet50_fpn step", tv, "1.00 (reference)"),
        ("(a) our baseline R50-FPN step", base, f"{base / tv:.2f} x torchvision"),
        ("(b) our OPMask R50-FPN step", opm, f"{opm / base:.2f} x our baseline"),
    ]
    root = os.environ.get("OPMASK_DATASETS", "datasets")
    if os.path.isfile(os.path.join(root, "shapes", "train", "annotations.json")):
        data, step, per_img = speed.data_and_eval(args.steps, args.eval_images)
        share = f"{data / (data + step):.1%} of a step"
        rows += [
            ("(c) shapes: data loading per batch (main process)", data, share),
            ("(c) shapes: OPMask R18 forward+backward", step, ""),
            ("(d) shapes: evaluation per image (inference+COCOeval)", per_img, ""),
        ]
    else:
        rows.append(("(c)(d) skipped: no shapes dataset (run opmask-data shapes)", 0.0, ""))
    print(_machine(device))
    print(
        f"inputs: {args.batch} images of {args.size}x{args.size}, 4 instances each; "
        f"median of {args.steps} steps"
    )
    rows = [(name, secs, f"  {ratio}") for name, secs, ratio in rows]
    print(format_table(["measurement", "seconds", "  ratio"], rows, [56, 10, 0], fmt=".3f"))


def matrix(args, device: torch.device) -> None:
    print(_machine(device))
    print(
        f"inputs: {args.batch} images of {args.height}x{args.width}, 4 instances each; median "
        f"of {args.steps} steps after {args.warmup}; cuDNN autotuner on; MFU = model FLOPs "
        "(3 x forward; BATCH_SIZE_PER_IMAGE box RoIs and x POSITIVE_FRACTION mask RoIs per image) "
        "x img/s / dense peak of the dtype"
    )
    rows = speed.run_matrix(
        device,
        height=args.height,
        width=args.width,
        batch_size=args.batch,
        steps=args.steps,
        warmup=args.warmup,
        precisions=tuple(args.precisions.split(",")),
        compile_row=not args.no_compile,
        memory_formats=(False,) if args.no_channels_last else (False, True),
        extra=["MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", str(args.roi_batch)]
        if args.roi_batch
        else [],
        report=lambda line: print(line, flush=True),
    )
    for line in speed.matrix_ratios(rows):
        print(line)


def flops(args, device: torch.device) -> None:
    print(f"forward GMAC per image at {args.height}x{args.width} (1 GMAC = 2 GFLOP)")
    for name in speed.CONFIGS:
        _, model = speed.build_bench_model(name, device)
        macs = speed.stage_macs(
            model,
            height=args.height,
            width=args.width,
            box_rois=args.box_rois,
            mask_rois=args.mask_rois,
        )
        print(name + ": " + ", ".join(f"{k} {v / 1e9:.2f}" for k, v in macs.items()))


def device(text: str) -> torch.device:
    """An argparse type: ``cpu``, ``cuda`` or ``cuda:N``, usable on this machine."""
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"expects cpu, cuda or cuda:N, got {text!r}")
    if dev.type == "cuda":
        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if found == 0:
            raise argparse.ArgumentTypeError(f"{text}: no CUDA device is available (use cpu)")
        if dev.index is not None and dev.index >= found:
            raise argparse.ArgumentTypeError(f"{text}: this machine has {found} CUDA device(s)")
    return dev


def _data_arguments(p) -> None:
    g = p.add_argument_group("--data")
    g.add_argument("--dataset", default="", help="ANNOTATIONS.json:IMAGE_DIR or a builtin name")
    g.add_argument(
        "--images", type=count(1), default=2000, help="coco-like fixture size (no --dataset)"
    )
    g.add_argument("--workers", type=count(0), default=2, help="loader workers")
    g.add_argument(
        "--data-batches", type=count(1), default=500, help="K: batches read (2 images each)"
    )
    g.add_argument(
        "--dets", type=count(1), default=100, help="--eval-backends: detections per image"
    )
    g.add_argument(
        "--ranks",
        type=count(0),
        default=0,
        help="also N simulated ranks (processes that load the index and read 100 batches, "
        "alive at once) against 1 (0: skip)",
    )


def eval_backends(args) -> int:
    """evaluate_results (bbox, segm, segm strong/weak) per TEST.EVALUATOR backend on a coco-like
    set of --images images with --dets synthetic detections (masks as RLE) each."""
    import tempfile

    from ..bench import loader as databench

    with tempfile.TemporaryDirectory(prefix="opmask-bench-") as tmp:
        rows = databench.eval_times(os.path.join(tmp, "ds"), args.images, args.dets)
    print(_machine(torch.device("cpu")))
    print(f"{args.images} coco-like images x {args.dets} detections; bbox+segm+strong+weak")
    for backend, secs, ap in rows:
        print(f"{backend:<18}{secs:>9.1f} s   segm AP {ap:.4f}")
    return 0


def data_table(args) -> int:
    """Index build time, then each path in a fresh process: time to the first batch (warm index
    cache), dataset memory, main and worker RSS/PSS at batch 1 and K (bench/loader.py)."""
    import tempfile

    from ..bench import loader as databench
    from ..data.cocolike import write_coco_like

    if args.dataset:
        check_dataset_spec(args.dataset)
    with tempfile.TemporaryDirectory(prefix="opmask-bench-") as tmp:
        spec = args.dataset
        if not spec:
            start = time.perf_counter()
            json_file = write_coco_like(os.path.join(tmp, "ds"), args.images)
            spec = f"{json_file}:{tmp}/ds/images"
            mb = os.path.getsize(json_file) / 2**20
            took = time.perf_counter() - start
            print(f"coco-like fixture: {args.images} images, {mb:.0f} MB JSON ({took:.0f} s)")
        cache = os.path.join(tmp, "cache")
        rows = databench.compare(spec, args.workers, args.data_batches, cache)
        ranks = {}
        if args.ranks:  # N ranks against 1
            ranks = {n: databench.simulated_ranks(spec, n, 100, cache) for n in {1, args.ranks}}
    print(_machine(torch.device("cpu")))
    print(
        f"dataset {args.dataset or 'coco-like'}; {args.workers} workers, batches of 2 images at "
        "320 px; each path in a fresh process; MB = 2**20 bytes"
    )
    print("\n".join(databench.format_rows(rows)))
    if ranks:
        print("\nsimulated ranks (index path, no workers, 100 batches each), summed, MB:")
        print(databench.format_ranks(ranks))
    return 0


def check_dataset_spec(spec: str) -> None:
    """Refuse a ``--dataset`` whose annotation file or image folder is missing (before the
    benchmark's processes start).

    Raises:
        DatasetError: an unknown name, a missing annotation file or image folder.
    """
    from ..data.catalog import resolve
    from ..data.coco import DatasetError

    json_file, image_root, _ = resolve(spec)
    if not os.path.isfile(json_file):
        raise DatasetError(f"--dataset {spec}: annotation file not found: {json_file}")
    if not os.path.isdir(image_root):
        raise DatasetError(f"--dataset {spec}: image folder not found: {image_root}")


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="opmask-bench",
        description=__doc__.replace("``", ""),
        epilog="exit codes: 0 printed; 1 bad input (a --dataset that is unknown or missing); "
        "2 bad command line (an unusable --device, a count below its minimum, an unknown "
        "precision); 4 internal error (a bug: traceback on stderr).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--device",
        type=device,
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu, cuda or cuda:N (default cuda when available)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--matrix", action="store_true", help="precision x memory-format table")
    mode.add_argument("--flops", action="store_true", help="forward MACs per stage (fvcore)")
    mode.add_argument(
        "--data", action="store_true", help="dataset index vs JSON dicts: time and memory"
    )
    mode.add_argument(
        "--eval-backends", action="store_true", help="COCOeval time: pycocotools vs faster"
    )
    _data_arguments(p)
    side = count(MIN_SIDE)
    p.add_argument("--size", type=side, default=320, help="default table: square image side")
    p.add_argument("--height", type=side, default=800, help="--matrix/--flops: image height")
    p.add_argument("--width", type=side, default=1333, help="--matrix/--flops: image width")
    p.add_argument("--batch", type=count(1), default=2, help="images per step")
    p.add_argument("--steps", type=count(1), default=5, help="timed steps (median reported)")
    p.add_argument("--warmup", type=count(0), default=3, help="--matrix: untimed steps first")
    p.add_argument(
        "--precisions", default="fp32,tf32,fp16,bf16", help="--matrix: comma-separated subset"
    )
    p.add_argument("--no-compile", action="store_true", help="--matrix: skip the compiled row")
    p.add_argument("--no-channels-last", action="store_true", help="--matrix: NCHW rows only")
    p.add_argument(
        "--roi-batch",
        type=count(0),
        default=0,
        help="--matrix: RoIs sampled per image in our models (default: the config's 512)",
    )
    p.add_argument(
        "--box-rois", type=count(1), default=512, help="--flops: box-head RoIs per image"
    )
    p.add_argument(
        "--mask-rois", type=count(1), default=128, help="--flops: mask-head RoIs per image"
    )
    p.add_argument("--eval-images", type=count(1), default=50, help="default table: (c) and (d)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    return run_command("opmask-bench", _bench, p, args)


def _bench(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.data or args.eval_backends:
        return (data_table if args.data else eval_backends)(args)
    bad = set(args.precisions.split(",")) - set(speed.DTYPES)
    if bad:
        p.error(f"--precisions: unknown {sorted(bad)}; choose from {sorted(speed.DTYPES)}")
    device = args.device
    {True: matrix}.get(args.matrix, flops if args.flops else default_table)(args, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
