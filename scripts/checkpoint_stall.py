"""How long a checkpoint stops training, synchronous vs asynchronous, for R50 OPMask with its
optimizer state (docs/benchmarks.md, "Checkpoint stall").

    python scripts/checkpoint_stall.py [--config configs/opmask_R50_FPN_130k.yaml] [--repeat 3]

The state is what the training loop saves: weights, SGD momenta (filled by one step with made-up
gradients), scheduler, RNG. A training step is stood in for by the R50 backbone's forward and
backward on one 3x256x256 image (1 torch thread). Per checkpoint it reports:

- sync: the seconds ``Checkpointer.save`` blocks (serialise, hash, write, fsync, rename);
- async: the seconds ``save_async`` blocks (the CPU copy) plus the extra seconds the steps run
  while the background write is in flight take over steps without one (GIL and memory
  bandwidth shared with the writer), i.e. the training time the checkpoint really costs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from opmask.config import load_config
from opmask.modeling import build_model
from opmask.run.folder import RunFolder
from opmask.train.checkpoint import Checkpointer, capture_rng
from opmask.train.solver import build_lr_scheduler, build_optimizer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/opmask_R50_FPN_130k.yaml")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--folder", help="where to write (default: a temporary folder in /tmp)")
    args = p.parse_args()
    torch.set_num_threads(1)
    model, optimizer, scheduler = _built(args.config)
    state = lambda it: {  # noqa: E731
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "iteration": it,
        "rng": [capture_rng()],
    }
    step = _step_fn(model)
    base = statistics.median(_timed(step) for _ in range(5))
    folder = args.folder or tempfile.mkdtemp(prefix="ckpt-stall-")
    ckpt = Checkpointer(folder, RunFolder.CHECKPOINTS, max_to_keep=2)
    sync, blocked, extra = [], [], []
    for r in range(args.repeat):
        t0 = time.perf_counter()
        ckpt.save(ckpt.names.periodic_name(2 * r), state(2 * r))
        sync.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ckpt.save_async(ckpt.names.periodic_name(2 * r + 1), state(2 * r + 1))
        blocked.append(time.perf_counter() - t0)
        steps = []
        while ckpt._writer is not None and ckpt._writer.is_alive():
            steps.append(_timed(step))
        ckpt.wait()
        extra.append(sum(steps) - base * len(steps))
    size = sum(t.numel() * t.element_size() for t in _tensors(state(0))) / 2**20
    print(f"checkpoint {size:.0f} MiB; proxy step {base:.3f} s; folder {folder}")
    print(f"sync  stall per checkpoint: median {statistics.median(sync):.2f} s  {_list(sync)}")
    total = [b + e for b, e in zip(blocked, extra)]
    print(
        f"async stall per checkpoint: median {statistics.median(total):.2f} s  {_list(total)} "
        f"(copy {_list(blocked)} + slower steps {_list(extra)})"
    )


def _built(config: str):
    cfg = load_config(config, ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    for prm in model.parameters():
        if prm.requires_grad:
            prm.grad = torch.randn_like(prm) * 1e-3
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


def _step_fn(model):
    x = torch.randn(1, 3, 256, 256)

    def step():
        out = model.backbone(x)
        sum(v.float().mean() for v in out.values()).backward()

    return step


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def _list(xs) -> str:
    return "[" + ", ".join(f"{x:.2f}" for x in xs) + "]"


if __name__ == "__main__":
    main()
