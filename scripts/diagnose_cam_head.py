"""What does a box head learn, per class, over a short training? (issue 11: the CAM head collapse)

Trains one config exactly as ``opmask-train`` would (same model, optimizer, schedule, loader),
single-threaded, and every ``--every`` iterations measures on the GT boxes of the first ``--val``
validation images (eval mode): per-class accuracy, the share predicted background, the logits'
scale, and the pooled features (mean, the share of their variance that is *between* RoIs rather
than constant, dead channels). Per training iteration it records the sampled RoIs' class balance,
the classification loss, and the gradient norms of the box head and of ``cls_score``.

    OPMASK_DATASETS=/tmp/ds/texture python scripts/diagnose_cam_head.py \\
        --config configs/shapes/opmask_R18_shapes.yaml --iters 300 --every 50 [KEY VALUE ...]

Writes one JSON line per measurement to ``--out`` (default: stdout only).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter

import torch

from opmask.config import load_config
from opmask.data.build import build_train_loader, load_datasets, strong_ids_from_cfg
from opmask.data.mapper import DatasetMapper
from opmask.modeling import build_model
from opmask.train.solver import build_lr_scheduler, build_optimizer, clip_gradients


class RoIRecorder:
    """Wraps the model's RoI sampler and box predictor to keep the last batch's labels/logits."""

    def __init__(self, model):
        self.labels = None
        self.logits = None
        sampler = model.roi_sampler

        def sample(proposals, targets):
            out = sampler(proposals, targets)
            self.labels = torch.cat([s.labels for s in out])
            return out

        model.roi_sampler = sample
        model.box_predictor.register_forward_hook(self._hook)

    def _hook(self, module, inputs, outputs):
        self.logits = outputs[0].detach()
        self.pooled = inputs[0].detach()


def grad_split(model, losses: dict) -> dict:
    """Norm of each loss term's gradient on the box-head convs (which terms train them)."""
    params = [q for q in model.box_head.parameters() if q.requires_grad]
    out = {}
    for name, loss in losses.items():
        if not loss.requires_grad:
            continue
        g = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        out[f"boxhead_grad_from_{name}"] = round(
            float(sum((x.norm() ** 2 for x in g if x is not None), torch.tensor(0.0)).sqrt()), 5
        )
    return out


def grad_norm(module) -> float:
    g = [p.grad.norm() ** 2 for p in module.parameters() if p.grad is not None]
    return float(torch.stack(g).sum().sqrt()) if g else 0.0


@torch.no_grad()
def gt_box_probe(model, val, mapper, k: int) -> dict:
    """Box-head outputs on the GT boxes of ``val`` (eval mode): per-class accuracy and scales."""
    model.eval()
    logits, labels, pooled = [], [], []
    rec = {}
    hook = model.box_predictor.register_forward_hook(lambda m, i, o: rec.update(x=i[0]))
    for d in val:
        x = mapper(d)
        inst = x["instances"]
        if len(inst["boxes"]) == 0:
            continue
        out = model.segment_given_boxes(x["image"], inst["boxes"], inst["labels"])
        logits.append(out["class_logits"].cpu())
        labels.append(inst["labels"])
        pooled.append(rec["x"].cpu())
    hook.remove()
    model.train()
    logits, labels, pooled = torch.cat(logits), torch.cat(labels), torch.cat(pooled)
    pred = logits.argmax(1)
    per_class = {
        c: round(float((pred[labels == c] == c).float().mean()), 3)
        for c in range(1, k + 1)
        if (labels == c).any()
    }
    fg_pred = logits[:, 1:].argmax(1) + 1  # which class, if it must be an object
    return {
        "acc": round(float((pred == labels).float().mean()), 3),
        "acc_among_classes": round(float((fg_pred == labels).float().mean()), 3),
        "p_bg_on_gt": round(float(logits.softmax(1)[:, 0].mean()), 3),
        "pred_bg": round(float((pred == 0).float().mean()), 3),
        "acc_per_class": per_class,
        "logit_std": round(float(logits.std()), 4),
        "bg_minus_gtclass_logit": round(
            float((logits[:, 0] - logits.gather(1, labels[:, None])[:, 0]).mean()), 4
        ),
        "pooled_mean": round(float(pooled.mean()), 4),
        "pooled_between_roi_std": round(float(pooled.std(0).mean()), 4),
        "pooled_dead_channels": int((pooled.abs().max(0).values < 1e-6).sum()),
        "pooled_dim": pooled.shape[1],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--val", type=int, default=40, help="validation images probed")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="")
    p.add_argument("opts", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.opts + ["SOLVER.MAX_ITER", str(args.iters)])
    dicts, info = load_datasets(cfg.DATASETS.TRAIN)
    val, _ = load_datasets(cfg.DATASETS.TEST[:1])
    torch.manual_seed(cfg.SEED)
    model = build_model(cfg, strong_classes=info.labels(strong_ids_from_cfg(cfg, info)))
    rec = RoIRecorder(model)
    opt = build_optimizer(cfg, model)
    sched = build_lr_scheduler(cfg, opt)
    loader = iter(build_train_loader(cfg, dicts, seed=cfg.SEED, rank=0, world_size=1, start_iter=0))
    mapper = DatasetMapper(
        is_train=True,
        min_sizes=[cfg.INPUT.MIN_SIZE_TEST],
        max_size=cfg.INPUT.MAX_SIZE_TEST,
        image_format=cfg.INPUT.FORMAT,
    )
    k = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    out = open(args.out, "a") if args.out else None
    window, counts, t0 = [], Counter(), time.perf_counter()
    model.train()
    for it in range(args.iters):
        losses, _ = model(next(loader))
        probe = (it + 1) % args.every == 0 or it == 0
        split = grad_split(model, losses) if probe else {}
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        gn = {
            "box_head": grad_norm(model.box_head),
            "cls_score": grad_norm(model.box_predictor.cls_score),
        }
        clip_gradients(cfg, [q for g in opt.param_groups for q in g["params"]])
        opt.step()
        sched.step()
        counts.update(rec.labels.tolist())
        window.append(
            {
                "loss_cls": float(losses["loss_cls"].detach()),
                "fg_frac": float((rec.labels > 0).float().mean()),
                "train_logit_std": float(rec.logits.std()),
                **{f"grad_{n}": v for n, v in gn.items()},
            }
        )
        if probe:
            row = {"iter": it + 1, "lr": opt.param_groups[0]["lr"], **split}
            row.update(
                {key: round(sum(w[key] for w in window) / len(window), 4) for key in window[0]}
            )
            total = sum(counts.values())
            row["roi_share"] = {c: round(n / total, 3) for c, n in sorted(counts.items())}
            row.update(gt_box_probe(model, val[: args.val], mapper, k))
            row["seconds"] = round(time.perf_counter() - t0, 1)
            line = json.dumps(row)
            print(line, flush=True)
            if out:
                out.write(line + "\n")
                out.flush()
            window, counts = [], Counter()
    return 0


if __name__ == "__main__":
    sys.exit(main())
