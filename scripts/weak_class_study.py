"""Why does OPMask's CAM box head lose the weak classes? A study instrument (docs/results.md).

Trains one model of the shapes demo with the real loop (``opmask.train.loop.train``, exactly as
``opmask-train`` would: same model, optimizer, schedule, loader, checkpoints) and, through its
``after_step`` hook, every ``--every`` iterations (and after the first and the last step)
measures, for the strong and the weak classes:

- on the GT boxes of the first ``--probe`` validation images (eval mode, through
  ``opmask.evaluation.gt_boxes``): classification accuracy, the mean logit of the GT class and
  its margin over the best other logit (background included), mask and OMP IoU;
- the mean norm of the ``cls_score`` weight rows (strong, weak, background);
- on a fresh forward of the step's batch (after the step; the RNG state and the BN buffers are
  put back, so training computes the same as without the study): the gradient norms of
  ``loss_mask`` alone and of the other losses on the box head's parameters and on ``cls_score``.

``--detach-prior`` (an experiment, not a product option): the object mask prior enters the mask
head detached, so the mask loss no longer reaches the box head through it.

At the end it prints the GT-box diagnostic of the run (``opmask-diagnose RUN``). One JSON line
per measurement goes to ``RUN/study.jsonl``. Example (a COCO-format set from opmask-data)::

    OMP_NUM_THREADS=2 python scripts/weak_class_study.py --model opmask \\
        --train D/train/annotations.json:D/train/images --val D/val/annotations.json:D/val/images \\
        --pretrain /tmp/study/runs 150 --output /tmp/study/runs/opmask SOLVER.MAX_ITER 250
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from opmask.cli.demo import MODELS, dataset_overrides, pretrain_backbone
from opmask.config import load_config
from opmask.data.build import build_gt_box_mapper
from opmask.data.catalog import load_datasets, strong_ids_from_cfg
from opmask.evaluation.gt_boxes import format_table, gt_box_diagnostics
from opmask.modeling.mask_heads import CAMMaskHead
from opmask.run import entry
from opmask.run.folder import RunFolder
from opmask.tools.diagnose import diagnose_run
from opmask.train.loop import train
from opmask.utils import exit_codes
from opmask.utils.logs import setup_logging
from opmask.utils.resources import config_dir


# ------------------------------------------------------------------ pure helpers
def split_mean(values: dict[int, float], strong: set[int]) -> dict[str, float | None]:
    """Means of per-class ``values`` (label -> value; label 0 = background is left out) over the
    strong and the weak labels: ``{"strong": ..., "weak": ...}`` (None for an empty split)."""
    out = {}
    for split, keep in (("strong", lambda c: c in strong), ("weak", lambda c: c not in strong)):
        v = [x for c, x in values.items() if c > 0 and keep(c)]
        out[split] = round(sum(v) / len(v), 4) if v else None
    return out


def gt_logit_stats(logits: torch.Tensor, labels: torch.Tensor, strong: set[int]) -> dict:
    """Box-head outputs on GT boxes, per split: accuracy (argmax over all K+1 logits), the mean
    GT-class logit, its mean margin over the best other logit, and the mean p(background).

    Args:
        logits: (N, K+1), background first; labels: (N,) GT labels 1..K; strong: strong labels.
    """
    n = torch.arange(len(labels))
    gt_logit = logits[n, labels]  # (N,)
    others = logits.clone()
    others[n, labels] = float("-inf")
    per_box = {
        "acc": (logits.argmax(1) == labels).float(),
        "gt_logit": gt_logit,
        "margin": gt_logit - others.max(1).values,
        "p_bg": logits.softmax(1)[:, 0],
    }
    out = {}
    for name, v in per_box.items():
        per_class = {c: float(v[labels == c].mean()) for c in labels.unique().tolist()}
        for split, x in split_mean(per_class, strong).items():
            out[f"{name}_{split}"] = x
    return out


def row_norms(weight: torch.Tensor, strong: set[int]) -> dict:
    """Mean L2 norm of the ``cls_score`` rows (K+1, C): background (row 0), strong and weak."""
    norms = weight.detach().norm(dim=1)
    split = split_mean({c: float(x) for c, x in enumerate(norms)}, strong)
    return {"w_norm_bg": round(float(norms[0]), 4), **{f"w_norm_{k}": v for k, v in split.items()}}


# ------------------------------------------------------------------ what the hook measures
def gt_box_probe(model, dicts: list[dict], mapper, strong: set[int]) -> dict:
    """``gt_box_diagnostics`` on ``dicts`` plus the box head's logits on the same GT boxes
    (recorded from ``box_predictor``); the model's train/eval mode is put back."""
    was_training, logits, labels = model.training, [], []

    def mapped(d):
        x = mapper(d)
        if len(x["instances"]["boxes"]):
            labels.append(x["instances"]["labels"])
        return x

    hook = model.box_predictor.register_forward_hook(lambda m, i, o: logits.append(o[0].cpu()))
    try:
        with torch.no_grad():
            diag = gt_box_diagnostics(model, dicts, mapped, strong)
    finally:
        hook.remove()
        model.train(was_training)
    stats = gt_logit_stats(torch.cat(logits), torch.cat(labels), strong)
    return {**{k: round(v, 4) for k, v in diag.items()}, **stats}


def gradient_split(model, batch: list[dict]) -> dict:
    """Gradient norms of ``loss_mask`` alone and of the other losses on the box head and on
    ``cls_score``, from a fresh forward of ``batch``. RNG state and buffers (BN statistics) are
    restored, and no ``.grad`` is touched, so training continues exactly as without it."""
    groups = {
        "box_head": [p for p in model.box_head.parameters() if p.requires_grad],
        "cls_score": list(model.box_predictor.cls_score.parameters()),
    }
    saved = {k: b.clone() for k, b in model.named_buffers()}
    try:
        with torch.random.fork_rng(devices=[]):
            losses, _ = model(batch)
        return _split(losses, groups)
    finally:  # after the backward passes, which may read the buffers (frozen BN)
        with torch.no_grad():
            for k, b in model.named_buffers():
                b.copy_(saved[k])


def _split(losses: dict, groups: dict) -> dict:
    parts = {
        "mask": losses.get("loss_mask"),
        "rest": sum(v for k, v in losses.items() if k != "loss_mask"),
    }
    out = {}
    for group, params in groups.items():
        for part, loss in parts.items():
            grads = (
                []
                if loss is None or not loss.requires_grad
                else torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            )
            sq = sum(float(g.pow(2).sum()) for g in grads if g is not None)
            out[f"grad_{group}_{part}"] = round(sq**0.5, 6)
        rest = out[f"grad_{group}_rest"]
        out[f"grad_{group}_mask_over_rest"] = (
            round(out[f"grad_{group}_mask"] / rest, 4) if rest else None
        )
    return out


class Probe:
    """The ``after_step`` hook: measures at iteration 0, every ``every`` and at the last."""

    def __init__(self, cfg, val: list[dict], strong: set[int], every: int, out_path: str):
        self.cfg, self.val, self.strong, self.every = cfg, val, strong, every
        self.out_path, self.rows = out_path, []
        self.mapper = build_gt_box_mapper(cfg)

    def __call__(self, it: int, model, batch: list[dict], losses: dict) -> None:
        if not (it == 0 or (it + 1) % self.every == 0 or it + 1 == self.cfg.SOLVER.MAX_ITER):
            return
        row = {"iter": it + 1, "loss_cls": round(float(losses["loss_cls"].detach()), 4)}
        if "loss_mask" in losses:
            row["loss_mask"] = round(float(losses["loss_mask"].detach()), 4)
        row.update(gradient_split(model, batch))
        row.update(row_norms(model.box_predictor.cls_score.weight, self.strong))
        row.update(gt_box_probe(model, self.val, self.mapper, self.strong))
        self.rows.append(row)
        print("[study] " + json.dumps(row), flush=True)
        with open(self.out_path, "a") as f:
            f.write(json.dumps(row) + "\n")


def _detach_prior(module, args):
    """Global forward pre-hook: a CAMMaskHead gets its prior (second argument) detached."""
    if isinstance(module, CAMMaskHead):
        return (args[0], args[1].detach())
    return None


# ------------------------------------------------------------------ the run
def _positive(text: str) -> int:
    if not text.lstrip("-").isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=[m for m, _ in MODELS], default="opmask")
    p.add_argument("--train", required=True, metavar="ANN.json:IMAGES")
    p.add_argument("--val", required=True, metavar="ANN.json:IMAGES")
    p.add_argument("--strong-ids", metavar="1,2,3")
    p.add_argument("--output", required=True, help="the run folder (must not hold a run)")
    p.add_argument(
        "--pretrain",
        nargs=2,
        metavar=("DIR", "ITERS"),
        help="start from the shared first stage of opmask-demo in DIR/pretrain (made if missing)",
    )
    p.add_argument(
        "--detach-prior", action="store_true", help="experiment: stop the mask loss at the prior"
    )
    p.add_argument("--every", type=_positive, default=50, help="measure every N iterations")
    p.add_argument("--probe", type=int, default=40, help="validation images probed")
    p.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE")
    args = p.parse_args(argv)
    opts = dataset_overrides(args.train, args.val, args.strong_ids)
    if args.pretrain:
        made = os.path.join(args.pretrain[0], "pretrain", "backbone.pth")  # reused as it is
        pretrained = ["MODEL.WEIGHTS", made] if os.path.isfile(made) else None
        opts += pretrained or pretrain_backbone(
            args.pretrain[0], int(args.pretrain[1]), opts + args.opts
        )
    config = dict(MODELS)[args.model]
    cfg = load_config(str(config_dir() / "shapes" / config), opts + args.opts)
    cfg, lock = entry.prepare(cfg, args.output, resume=False, eval_only=False, world_size=1)
    setup_logging(RunFolder(args.output).log(0))
    val, info = load_datasets(cfg.DATASETS.TEST[:1])
    strong = set(info.labels(strong_ids_from_cfg(cfg, info)))
    probe = Probe(
        cfg, val[: args.probe], strong, args.every, os.path.join(args.output, "study.jsonl")
    )
    handle = (
        torch.nn.modules.module.register_module_forward_pre_hook(_detach_prior)
        if args.detach_prior
        else None
    )
    try:
        results = train(cfg, RunFolder(args.output), resume=False, after_step=probe)
    except BaseException as e:
        entry.finish(lock, exit_codes.code_for(e))
        raise
    finally:
        if handle is not None:
            handle.remove()
    entry.finish(lock, exit_codes.OK)
    res, _ = diagnose_run(args.output)
    print(
        f"[study] box AP {results['bbox']['AP']:.2f}, weak mask AP {results['segm_weak']['AP']:.2f}"
    )
    print(format_table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
