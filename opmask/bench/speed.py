"""Speed measurements behind ``opmask-bench``: training steps of our models and of torchvision's
Mask R-CNN on identical synthetic inputs, the precision x memory-format matrix, model FLOPs and
MFU, data loading and evaluation time. Not tests: numbers depend on the machine."""

from __future__ import annotations

import contextlib
import functools
import gc
import statistics
import time
from dataclasses import dataclass

import torch

from ..config import load_config
from ..modeling import build_model
from ..modeling.flops import stage_macs  # noqa: F401  (re-exported for opmask-bench)
from ..train.backends import configure_backends
from ..utils.resources import config_dir

CONFIGS = {
    "baseline": "mask_rcnn_ca_R50_FPN_130k.yaml",
    "opmask": "opmask_R50_FPN_130k.yaml",
}
DTYPES = {"fp32": None, "tf32": None, "fp16": torch.float16, "bf16": torch.bfloat16}

# Dense tensor-core peaks (TFLOP/s) from NVIDIA's datasheets (SXM parts); "fp32" is CUDA cores.
PEAK_TFLOPS = {
    "H100": {"fp32": 66.9, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4},
    "H200": {"fp32": 66.9, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4},
    "A100": {"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "bf16": 312.0},
    "V100": {"fp32": 15.7, "tf32": 15.7, "fp16": 125.0, "bf16": float("nan")},
}


def peak_tflops(device: torch.device, precision: str) -> float | None:
    """The device's dense peak for ``precision``, or None when unknown (CPU, other GPUs)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in PEAK_TFLOPS.items():
        if key in name:
            return peaks[precision]
    return None


def synthetic_inputs(n: int, height: int, width: int, device, seed: int = 0) -> list[dict]:
    """``n`` mapped training dicts: random images with 4 box+mask instances each (on ``device``)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        boxes = []
        for _ in range(4):
            x = int(torch.randint(0, width // 2, (1,), generator=g))
            y = int(torch.randint(0, height // 2, (1,), generator=g))
            w = int(torch.randint(width // 8, width // 2, (1,), generator=g))
            h = int(torch.randint(height // 8, height // 2, (1,), generator=g))
            boxes.append([x, y, x + w, y + h])
        boxes = torch.tensor(boxes, dtype=torch.float32)
        masks = torch.zeros(4, height, width, dtype=torch.uint8)
        for m, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist()):
            m[y0:y1, x0:x1] = 1
        out.append(
            {
                "image": (torch.rand(3, height, width, generator=g) * 255).to(device),
                "height": height,
                "width": width,
                "image_id": i,
                "instances": {
                    "boxes": boxes.to(device),
                    "labels": torch.tensor([1, 5, 20, 62], device=device),
                    "masks": masks.to(device),
                    "has_mask": torch.ones(4, dtype=torch.bool, device=device),
                },
            }
        )
    return out


def time_steps(step, steps: int, device: torch.device, warmup: int = 1) -> float:
    """Median seconds of ``steps`` calls of ``step`` after ``warmup`` untimed ones."""
    for _ in range(warmup):  # allocations, cuDNN autotuning, compilation
        step()
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _amp(device: torch.device, dtype):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _sgd_step(model_loss, params, device, dtype):
    """One SGD step of ``model_loss()`` under autocast (fp16: with a GradScaler)."""
    opt = torch.optim.SGD(params, lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def step():
        with _amp(device, dtype):
            loss = model_loss()
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return step


def build_bench_model(
    name: str, device: torch.device, *, channels_last=False, compile=False, extra=()
):
    """Our R50-FPN ``baseline`` or ``opmask`` (paper config), seeded: the mask head's cost grows
    with the number of foreground RoIs, which depends on the random init, so unseeded runs are
    not comparable."""
    opts = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", str(device)]
    opts += ["MODEL.CHANNELS_LAST", str(channels_last), "MODEL.COMPILE", str(compile), *extra]
    cfg = load_config(str(config_dir() / CONFIGS[name]), opts)
    torch.manual_seed(0)
    return cfg, build_model(cfg, strong_classes=range(1, 21)).train()


def ours_step(
    name: str, batch, device, *, dtype=None, channels_last=False, compile=False, extra=()
):
    _, model = build_bench_model(
        name, device, channels_last=channels_last, compile=compile, extra=extra
    )
    params = [p for p in model.parameters() if p.requires_grad]
    return _sgd_step(lambda: sum(model(batch)[0].values()), params, device, dtype)


def torchvision_step(batch, device, *, dtype=None):
    """torchvision's Mask R-CNN R50-FPN with our baseline's backbone settings (FrozenBN, stem and
    res2 frozen) — ``maskrcnn_resnet50_fpn(weights=None)`` would train every layer with BN."""
    from torchvision.models import resnet50
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.manual_seed(0)  # as in ours_step
    backbone = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), trainable_layers=3)
    h, w = batch[0]["image"].shape[1:]
    model = MaskRCNN(
        backbone,
        num_classes=81,
        min_size=min(h, w),
        max_size=max(h, w),
        image_mean=[0.0] * 3,
        image_std=[1.0] * 3,
    )
    model = model.to(device).train()
    images = [x["image"] for x in batch]
    targets = [{k: x["instances"][k] for k in ("boxes", "labels", "masks")} for x in batch]
    params = [p for p in model.parameters() if p.requires_grad]
    return _sgd_step(lambda: sum(model(images, targets).values()), params, device, dtype)


def data_and_eval(steps: int, eval_images: int) -> tuple[float, float, float]:
    """(data time per batch, train step time, eval seconds per image) on the shapes config."""
    from ..data.build import build_test_loader, build_train_loader
    from ..data.catalog import load_datasets
    from ..evaluation.coco_eval import evaluate

    cfg = load_config(
        str(config_dir() / "shapes" / "opmask_R18_shapes.yaml"),
        ["DATALOADER.NUM_WORKERS", "0"],
    )
    dicts, info = load_datasets(cfg.DATASETS.TRAIN)
    model = build_model(cfg, strong_classes=[1, 2, 4, 8]).train()
    loader = iter(build_train_loader(cfg, dicts, seed=0, rank=0, world_size=1, start_iter=0))
    data_t, step_t = [], []
    for _ in range(steps + 1):
        t = time.perf_counter()
        batch = next(loader)
        t1 = time.perf_counter()
        sum(model(batch)[0].values()).backward()
        data_t.append(t1 - t)
        step_t.append(time.perf_counter() - t1)
    val, vinfo = load_datasets(cfg.DATASETS.TEST)
    t = time.perf_counter()
    evaluate(
        model,
        build_test_loader(cfg, val[:eval_images]),
        gt_json=vinfo.json_file,
        category_id_of=vinfo.category_id,
        strong_ids=[1, 2, 4, 8],
        outputs=None,
    )
    per_image = (time.perf_counter() - t) / min(eval_images, len(val))
    return statistics.median(data_t[1:]), statistics.median(step_t[1:]), per_image


@dataclass
class MatrixRow:
    model: str
    precision: str
    channels_last: bool
    compiled: bool
    step_s: float
    images_per_s: float
    peak_mem_gib: float | None
    tflops: float | None  # achieved model TFLOP/s
    mfu: float | None  # fraction of the dtype's dense peak


def train_flops_per_image(name: str, device, height: int, width: int, extra=()) -> float:
    """Training FLOPs of one image (3 x forward, 2 FLOPs per MAC), with the paper's RoI counts:
    ``BATCH_SIZE_PER_IMAGE`` box RoIs and the maximal ``x POSITIVE_FRACTION`` mask RoIs."""
    cfg, model = build_bench_model(name, device, extra=extra)
    r = cfg.MODEL.ROI_HEADS
    pad = lambda n: -(-n // 32) * 32  # noqa: E731
    macs = stage_macs(
        model,
        height=pad(height),
        width=pad(width),
        box_rois=r.BATCH_SIZE_PER_IMAGE,
        mask_rois=int(r.BATCH_SIZE_PER_IMAGE * r.POSITIVE_FRACTION),
    )
    return 3 * 2 * macs["total"]


def _measure(step_factory, batch_size: int, device, steps: int, warmup: int):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    step = step_factory()
    for _ in range(warmup):
        step()
    if device.type == "cuda":  # after warm-up: cuDNN's autotuner tries algorithms with large
        torch.cuda.synchronize(device)  # workspaces, which are not the step's memory
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    secs = time_steps(step, steps, device, warmup=0)
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return secs, batch_size / secs, mem


def run_matrix(
    device: torch.device,
    *,
    height: int = 800,
    width: int = 1333,
    batch_size: int = 2,
    steps: int = 5,
    warmup: int = 3,
    precisions=("fp32", "tf32", "fp16", "bf16"),
    compile_row: bool = True,
    memory_formats=(False, True),
    extra=(),
    report=print,
) -> list[MatrixRow]:
    """Every model x precision x memory format (and one compiled row), then torchvision's Mask
    R-CNN in fp32 and bf16 as the reference; each row is reported as soon as it is measured.
    ``extra``: config overrides of our models (e.g. fewer RoIs for a CPU-sized run)."""
    configure_backends(cudnn_benchmark=True, tf32=False)
    batch = synthetic_inputs(batch_size, height, width, device)
    flops = {n: train_flops_per_image(n, device, height, width, extra) for n in CONFIGS}
    report(
        "model FLOPs per training image: "
        + ", ".join(f"{n} {f / 1e12:.2f} TFLOP" for n, f in flops.items())
    )
    report(MATRIX_HEADER)
    rows = []
    plan = [(n, p, cl, False) for n in CONFIGS for p in precisions for cl in memory_formats]
    if compile_row:
        plan.append(("opmask", precisions[-1], True, True))
    plan += [("torchvision", p, False, False) for p in dict.fromkeys(("fp32", precisions[-1]))]
    for name, prec, cl, comp in plan:
        configure_backends(cudnn_benchmark=True, tf32=prec != "fp32")
        dtype = DTYPES[prec]
        if name == "torchvision":
            factory = functools.partial(torchvision_step, batch, device, dtype=dtype)
        else:
            factory = functools.partial(
                ours_step, name, batch, device, dtype=dtype, channels_last=cl, compile=comp,
                extra=extra,
            )  # fmt: skip
        try:
            secs, ips, mem = _measure(factory, batch_size, device, steps, warmup)
        except Exception as e:  # a failing variant (e.g. compile) must not hide the others
            report(f"{name} {prec} cl={cl} compile={comp}: FAILED {type(e).__name__}: {e}")
            continue
        peak = peak_tflops(device, prec)
        achieved = flops.get(name, float("nan")) * ips / 1e12 if name in flops else None
        row = MatrixRow(
            name,
            prec,
            cl,
            comp,
            secs,
            ips,
            mem,
            achieved,
            achieved / peak if achieved and peak else None,
        )
        rows.append(row)
        report(format_row(row))
    return rows


MATRIX_HEADER = (
    "| model | precision | channels-last | compiled | step s | img/s | peak GiB | TFLOP/s | MFU |\n"
    "|---|---|---|---|---:|---:|---:|---:|---:|"
)


def format_row(r: MatrixRow) -> str:
    f = lambda v, fmt: "n/a" if v is None else format(v, fmt)  # noqa: E731
    return (
        f"| {r.model} | {r.precision} | {'yes' if r.channels_last else 'no'} | "
        f"{'yes' if r.compiled else 'no'} | {r.step_s:.3f} | {r.images_per_s:.2f} | "
        f"{f(r.peak_mem_gib, '.2f')} | {f(r.tflops, '.1f')} | {f(r.mfu, '.1%')} |"
    )


def matrix_ratios(rows: list[MatrixRow]) -> list[str]:
    """The issue's targets as ratios of rows measured in the same run."""
    by = {(r.model, r.precision, r.channels_last, r.compiled): r for r in rows}
    out = []
    fp32 = by.get(("opmask", "fp32", False, False))
    amp = [r for r in rows if r.model == "opmask" and r.precision in ("fp16", "bf16")]
    if fp32 and amp:
        best = max(amp, key=lambda r: r.images_per_s)
        out.append(
            f"OPMask best AMP ({best.precision}, channels-last {best.channels_last}, compiled "
            f"{best.compiled}) vs fp32: {best.images_per_s / fp32.images_per_s:.2f}x img/s"
        )
    for prec in ("fp32", "bf16", "fp16", "tf32"):
        tv, ours = (
            by.get(("torchvision", prec, False, False)),
            by.get(("baseline", prec, False, False)),
        )
        if tv and ours:
            out.append(f"baseline step / torchvision step ({prec}): {ours.step_s / tv.step_s:.2f}")
    best = max((r for r in rows if r.model == "opmask"), key=lambda r: r.images_per_s, default=None)
    if best:
        out.append(
            f"OPMask best img/s: {best.images_per_s:.1f} = {best.images_per_s / 7.7:.2f}x "
            "Detectron2's published 7.7 img/s/GPU (R50-FPN Mask R-CNN, V100)"
        )
        if best.mfu is not None:
            out.append(f"OPMask best MFU: {best.mfu:.1%}")
    return out
