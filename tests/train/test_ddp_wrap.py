"""The training model's DDP wrapper as Detectron2 v0.6's ``DefaultTrainer`` makes it
(``create_ddp_model(model, broadcast_buffers=False)``)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from opmask.train import loop as train_loop


def test_ddp_does_not_broadcast_buffers(tmp_path, monkeypatch):
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        monkeypatch.setattr(train_loop.comm, "get_world_size", lambda: 2)  # wrap as with 2 ranks
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
        ddp = train_loop._wrap(model, torch.device("cpu"))
        assert isinstance(ddp, torch.nn.parallel.DistributedDataParallel)
        assert ddp.broadcast_buffers is False
    finally:
        dist.destroy_process_group()
