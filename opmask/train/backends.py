"""Process-wide numeric settings of the training/evaluation process (cuDNN autotuner, TF32)."""

from __future__ import annotations

import torch


def configure_backends(*, cudnn_benchmark: bool, tf32: bool) -> None:
    """Apply ``CUDNN_BENCHMARK`` and ``SOLVER.TF32`` (fp32 matmuls and convs on TF32 tensor cores;
    no effect on CPU or inside fp16/bf16 autocast regions)."""
    torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
    mode = "tf32" if tf32 else "ieee"
    if hasattr(torch.backends.cudnn, "conv") and hasattr(
        torch.backends.cudnn.conv, "fp32_precision"
    ):
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.conv.fp32_precision = mode
    else:  # torch < 2.9
        torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
        torch.backends.cudnn.allow_tf32 = bool(tf32)


def backends_from_cfg(cfg) -> None:
    configure_backends(cudnn_benchmark=cfg.CUDNN_BENCHMARK, tf32=cfg.SOLVER.TF32)
