"""Norm layers by name: "", BN, SyncBN, GN, FrozenBN."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from .tv_adapter import FrozenBatchNorm2d


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class NaiveSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose batch statistics are averaged over all ranks, weighted by element count.

    Works on gloo (CPU) and NCCL; a rank with zero RoIs contributes nothing and still joins the
    collective, so unequal and empty batches neither crash nor hang. Single process: plain BN.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W)
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not self.training or not distributed:
            return super().forward(x)
        c = x.shape[1]
        dims = [0, 2, 3]
        count = x.new_full((1,), float(x.numel() // c))
        stats = _AllReduceSum.apply(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        total = stats[2 * c].clamp_min(1.0)
        mean, meansq = stats[:c] / total, stats[c : 2 * c] / total
        var = (meansq - mean * mean).clamp_min(0.0)
        with torch.no_grad():
            if float(total) > 1:
                unbiased = var * total / (total - 1)
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * unbiased)
            self.num_batches_tracked += 1
        inv = (var + self.eps).rsqrt()
        scale, shift = self.weight * inv, self.bias - mean * self.weight * inv
        return x * scale.view(1, c, 1, 1) + shift.view(1, c, 1, 1)


def get_norm(norm: str, channels: int) -> nn.Module | None:
    """A norm layer for ``channels`` features, or None for ``norm == ""``."""
    if norm == "":
        return None
    if norm == "BN":
        return nn.BatchNorm2d(channels)
    if norm == "SyncBN":
        return NaiveSyncBatchNorm(channels)
    if norm == "GN":
        return nn.GroupNorm(32 if channels % 32 == 0 else 8, channels)
    if norm == "FrozenBN":
        return FrozenBatchNorm2d(channels)
    raise ValueError(f"unknown norm {norm!r}: use '', BN, SyncBN, GN or FrozenBN")


def conv_norm_relu(cin: int, cout: int, norm: str) -> nn.Sequential:
    """3x3 conv (no bias when normed) + optional norm + ReLU, with Kaiming (fan_out) init."""
    n = get_norm(norm, cout)
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=n is None)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    layers = [conv] + ([n] if n is not None else []) + [nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)
