"""``opmask-bench``: speed of our training step and evaluation, against references measured in the
same run on identical inputs. Prints a table; not a test (numbers depend on the machine).

(a) our class-agnostic Mask R-CNN baseline step vs torchvision's ``maskrcnn_resnet50_fpn`` step,
(b) OPMask step vs our baseline step, (c) data loading's share of a training step,
(d) evaluation time (inference + COCOeval) per image.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _inputs(n: int, size: int, device, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        boxes = []
        for _ in range(4):
            x, y = torch.randint(0, size // 2, (2,), generator=g).tolist()
            w, h = torch.randint(size // 8, size // 2, (2,), generator=g).tolist()
            boxes.append([x, y, x + w, y + h])
        boxes = torch.tensor(boxes, dtype=torch.float32)
        masks = torch.zeros(4, size, size, dtype=torch.uint8)
        for m, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist()):
            m[y0:y1, x0:x1] = 1
        out.append(
            {
                "image": torch.rand(3, size, size, generator=g) * 255,
                "height": size,
                "width": size,
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


def _time_steps(step, steps: int, device) -> float:
    step()  # warm-up (allocations, autotuning)
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _ours_step(config: str, batch, device):
    from ..config import load_config
    from ..modeling import build_model

    cfg = load_config(
        os.path.join(REPO, "configs", config), ["MODEL.WEIGHTS", "", "MODEL.DEVICE", str(device)]
    )
    # Seeded: the mask head's cost grows with the number of foreground RoIs, which depends on the
    # random init (proposals) and on RoI sampling; without a seed, runs are not comparable.
    torch.manual_seed(0)
    model = build_model(cfg, strong_classes=range(1, 21)).train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        loss = sum(model(batch)[0].values())
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def _torchvision_step(batch, size: int, device):
    """torchvision's Mask R-CNN R50-FPN with our baseline's backbone settings (FrozenBN, stem and
    res2 frozen) — ``maskrcnn_resnet50_fpn(weights=None)`` would train every layer with BN."""
    from torchvision.models import resnet50
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.manual_seed(0)  # as in _ours_step
    backbone = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), trainable_layers=3)
    model = (
        MaskRCNN(
            backbone,
            num_classes=81,
            min_size=size,
            max_size=size,
            image_mean=[0.0] * 3,
            image_std=[1.0] * 3,
        )
        .to(device)
        .train()
    )
    images = [x["image"].to(device) for x in batch]
    targets = [
        {
            "boxes": x["instances"]["boxes"],
            "labels": x["instances"]["labels"],
            "masks": x["instances"]["masks"],
        }
        for x in batch
    ]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def _data_and_eval(steps: int, eval_images: int) -> tuple[float, float, float]:
    """(data time per batch, train step time, eval seconds per image) on the shapes config."""
    from ..config import load_config
    from ..data.build import build_test_loader, build_train_loader, load_datasets
    from ..evaluation.coco_eval import evaluate
    from ..modeling import build_model

    cfg = load_config(
        os.path.join(REPO, "configs", "shapes", "opmask_R18_shapes.yaml"),
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
        category_ids=vinfo.category_ids,
        strong_ids=[1, 2, 4, 8],
        out_dir=None,
    )
    per_image = (time.perf_counter() - t) / min(eval_images, len(val))
    return statistics.median(data_t[1:]), statistics.median(step_t[1:]), per_image


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="opmask-bench",
        description=__doc__.replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=int, default=320, help="square image side for (a) and (b)")
    p.add_argument("--batch", type=int, default=2, help="images per step for (a) and (b)")
    p.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    p.add_argument("--eval-images", type=int, default=50, help="images for (c) and (d)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    batch = _inputs(args.batch, args.size, device)
    tv = _time_steps(_torchvision_step(batch, args.size, device), args.steps, device)
    base = _time_steps(
        _ours_step("mask_rcnn_ca_R50_FPN_130k.yaml", batch, device), args.steps, device
    )
    opm = _time_steps(_ours_step("opmask_R50_FPN_130k.yaml", batch, device), args.steps, device)
    rows = [
        ("(a) torchvision maskrcnn_resnet50_fpn step", tv, "1.00 (reference)"),
        ("(a) our baseline R50-FPN step", base, f"{base / tv:.2f} x torchvision"),
        ("(b) our OPMask R50-FPN step", opm, f"{opm / base:.2f} x our baseline"),
    ]
    if os.path.isfile(
        os.path.join(
            os.environ.get("OPMASK_DATASETS", "datasets"), "shapes", "train", "annotations.json"
        )
    ):
        data, step, per_img = _data_and_eval(args.steps, args.eval_images)
        rows += [
            (
                "(c) shapes: data loading per batch (main process)",
                data,
                f"{data / (data + step):.1%} of a step",
            ),
            ("(c) shapes: OPMask R18 forward+backward", step, ""),
            ("(d) shapes: evaluation per image (inference+COCOeval)", per_img, ""),
        ]
    else:
        rows.append(("(c)(d) skipped: no shapes dataset (run opmask-data shapes)", 0.0, ""))
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    )
    print(
        f"inputs: {args.batch} images of {args.size}x{args.size}, 4 instances each; "
        f"median of {args.steps} steps"
    )
    print(f"{'measurement':<56}{'seconds':>10}  ratio")
    for name, secs, ratio in rows:
        print(f"{name:<56}{secs:>10.3f}  {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
