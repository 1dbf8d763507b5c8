"""Optimizer, warmup + multi-step LR schedule, and gradient clipping. The SOLVER values are
checked by ``opmask.config.checks`` when the config is loaded; these builders trust them."""

from __future__ import annotations

import bisect

import torch
from torch import nn

_NORM_TYPES = (nn.BatchNorm2d, nn.GroupNorm, nn.SyncBatchNorm, nn.LayerNorm)


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (or AdamW); norm layers' weights get ``SOLVER.WEIGHT_DECAY_NORM``."""
    norm_params, other = [], []
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if p.requires_grad:
                (norm_params if isinstance(module, _NORM_TYPES) else other).append(p)
    s = cfg.SOLVER
    groups = [{"params": other, "weight_decay": s.WEIGHT_DECAY}]
    if norm_params:
        groups.append({"params": norm_params, "weight_decay": s.WEIGHT_DECAY_NORM})
    if s.OPTIMIZER == "SGD":
        return torch.optim.SGD(groups, lr=s.BASE_LR, momentum=s.MOMENTUM, nesterov=s.NESTEROV)
    return torch.optim.AdamW(groups, lr=s.BASE_LR)  # the other choice (config checks)


def lr_factor(
    it: int,
    *,
    steps,
    gamma: float,
    warmup_iters: int,
    warmup_factor: float,
    warmup_method: str = "linear",
) -> float:
    """LR multiplier at iteration ``it``: ``gamma`` per passed step, and during the warm-up, as
    Detectron2 v0.6's ``WarmupParamScheduler``, ``warmup_factor`` times the iteration-0 value
    (constant), or linear from there to the value at ``warmup_iters``: a step inside the warm-up
    lowers the line's end instead of cutting the line."""
    steps = list(steps)
    if it < warmup_iters:
        start = warmup_factor * gamma ** bisect.bisect_right(steps, 0)
        if warmup_method == "constant":
            return start
        end = gamma ** bisect.bisect_right(steps, warmup_iters)
        alpha = it / warmup_iters
        return start * (1 - alpha) + end * alpha
    return gamma ** bisect.bisect_right(steps, it)


def build_lr_scheduler(cfg, optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    s = cfg.SOLVER  # WARMUP_METHOD is linear or constant (config checks)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda it: lr_factor(
            it,
            steps=s.STEPS,
            gamma=s.GAMMA,
            warmup_iters=s.WARMUP_ITERS,
            warmup_factor=s.WARMUP_FACTOR,
            warmup_method=s.WARMUP_METHOD,
        ),
    )


def clip_gradients(cfg, params) -> None:
    """Clip the gradients of ``params`` in place, as ``SOLVER.CLIP_GRADIENTS`` says.

    ``value``: each element to ``[-CLIP_VALUE, CLIP_VALUE]``. ``norm``: each parameter's
    gradient separately to a ``NORM_TYPE``-norm of at most ``CLIP_VALUE`` (Detectron2 v0.6's
    per-parameter clipper). ``full_model``: the norm of all gradients together (one factor for
    every parameter; the name Detectron2's projects use).
    """
    c = cfg.SOLVER.CLIP_GRADIENTS
    if not c.ENABLED:
        return
    if c.CLIP_TYPE == "value":
        torch.nn.utils.clip_grad_value_(params, c.CLIP_VALUE)
    elif c.CLIP_TYPE == "norm":
        for p in params:
            torch.nn.utils.clip_grad_norm_(p, c.CLIP_VALUE, c.NORM_TYPE)
    else:  # "full_model", the last choice (config checks)
        torch.nn.utils.clip_grad_norm_(params, c.CLIP_VALUE, c.NORM_TYPE)
