"""Where training metrics go: console, ``metrics.json`` (one JSON object per line, Detectron2's
keys) and TensorBoard. Only the main process writes. On resume, entries past the resumed
iteration are purged from both files, so a series has no duplicate and no missing step."""

from __future__ import annotations

import datetime
import json
import logging
import os
import statistics
from collections import deque

import torch

from .checkpoint import atomic_write_bytes

logger = logging.getLogger("opmask.train")


def purge_metrics(path: str, start_iter: int) -> None:
    """Drop ``metrics.json`` lines whose iteration is >= start_iter (and any torn last line)."""
    if not os.path.isfile(path):
        return
    kept = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                if json.loads(line)["iteration"] < start_iter:
                    kept.append(line if line.endswith("\n") else line + "\n")
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    atomic_write_bytes(path, "".join(kept).encode())


class EventWriter:
    """Console + metrics.json + TensorBoard for one run; a no-op on non-main ranks."""

    def __init__(self, run_dir: str, *, start_iter: int, max_iter: int, enabled: bool = True):
        self.enabled, self.max_iter = enabled, max_iter
        self.iter_times: deque = deque(maxlen=20)
        self.metrics_path = os.path.join(run_dir, "metrics.json")
        self.tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            os.makedirs(run_dir, exist_ok=True)
            purge_metrics(self.metrics_path, start_iter)
            self.metrics = open(self.metrics_path, "a", encoding="utf-8")
            self.tb = SummaryWriter(os.path.join(run_dir, "tensorboard"), purge_step=start_iter)

    def _write(self, record: dict) -> None:
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        for k, v in record.items():
            if k != "iteration" and isinstance(v, (int, float)):
                self.tb.add_scalar(k, v, record["iteration"])

    def log_train(
        self,
        it: int,
        losses: dict[str, float],
        lr: float,
        iter_time: float,
        data_time: float,
        console: bool,
    ) -> None:
        """One training iteration (losses already averaged over ranks)."""
        self.iter_times.append(iter_time)
        if not self.enabled:
            return
        eta = statistics.median(self.iter_times) * (self.max_iter - it - 1)
        record = {
            "iteration": it,
            "total_loss": sum(losses.values()),
            **losses,
            "lr": lr,
            "time": iter_time,
            "data_time": data_time,
            "eta_seconds": eta,
        }
        self._write(record)
        if console:
            terms = "  ".join(
                f"{k}: {v:.4g}" for k, v in record.items() if k.startswith(("total_loss", "loss_"))
            )
            logger.info(
                "eta: %s  iter: %d/%d  %s  time: %.4f  data_time: %.4f  lr: %.6g",
                datetime.timedelta(seconds=int(eta)),
                it + 1,
                self.max_iter,
                terms,
                iter_time,
                data_time,
                lr,
            )

    def log_eval(self, it: int, results: dict[str, dict[str, float]]) -> None:
        """Evaluation results ``{task: {metric: value}}`` as ``task/metric`` scalars."""
        if self.enabled:
            flat = {
                f"{task}/{k}": v
                for task, m in results.items()
                if task != "per_class"
                for k, v in m.items()
            }
            if flat:
                self._write({"iteration": it, **flat})

    def log_image(self, tag: str, image: torch.Tensor, it: int) -> None:
        if self.enabled:
            self.tb.add_image(tag, image, it)

    def close(self) -> None:
        if self.enabled:
            self.metrics.close()
            self.tb.close()
