"""Where training metrics go: console, ``metrics.json`` (one JSON object per line, Detectron2's
keys) and TensorBoard (scalars, images and the HParams of the run). Only the main process writes.
On resume, entries past the resumed iteration are purged from both files, so a series has no
duplicate and no missing step. This module owns ``metrics.json``'s keys (its readers import them).

Times: the loop measures an iteration from fetching its batch to the end of its optimizer step,
so checkpoints, evaluation and logging never enter it. The ETA, as Detectron2's, is the median of
a window of recent iteration times times the iterations left: one slow iteration (a busy machine,
a page-in after evaluation) moves it by nothing, a lasting change of speed moves it within the
window.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import statistics
from collections import deque
from typing import TYPE_CHECKING, Iterable

from ..config import ConfigError
from ..config.checks import lookup
from ..utils.fs import atomic_write_bytes

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("opmask.train")

# metrics.json: every line has ITERATION; a training line has TOTAL_LOSS, each loss_* term, LR,
# TIME, DATA_TIME and ETA_SECONDS; an evaluation line has TASK/METRIC keys (eval_key).
ITERATION = "iteration"
TOTAL_LOSS = "total_loss"
LR = "lr"
TIME = "time"
DATA_TIME = "data_time"
ETA_SECONDS = "eta_seconds"


def eval_key(task: str, metric: str) -> str:
    """The metrics.json / TensorBoard key of an evaluation metric: ``segm_weak/AP``."""
    return f"{task}/{metric}"


BOX_AP = eval_key("bbox", "AP")
MASK_AP = eval_key("segm", "AP")
STRONG_MASK_AP = eval_key("segm_strong", "AP")
WEAK_MASK_AP = eval_key("segm_weak", "AP")


def purge_metrics(path: str, start_iter: int) -> None:
    """Drop ``metrics.json`` lines whose iteration is >= start_iter (and any torn last line)."""
    if not os.path.isfile(path):
        return
    kept = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                if json.loads(line)[ITERATION] < start_iter:
                    kept.append(line if line.endswith("\n") else line + "\n")
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    atomic_write_bytes(path, "".join(kept).encode())


class EtaEstimator:
    """Seconds per iteration and ETA from the median of the last ``window`` iteration times.

    The first ``skip`` times after a (re)start are left out while later ones exist: they hold
    one-off work (allocator warm-up, loader start) that the rest of the run does not repeat.
    """

    def __init__(self, window: int = 1000, skip: int = 1):
        self.times: deque = deque(maxlen=window)
        self.skipped: list[float] = []
        self.skip = skip

    def add(self, seconds: float) -> None:
        if len(self.skipped) < self.skip:
            self.skipped.append(seconds)
        else:
            self.times.append(seconds)

    def seconds_per_iter(self) -> float | None:
        """Median of the window (of the skipped ones while the window is empty); None if none."""
        times = self.times or self.skipped
        return statistics.median(times) if times else None

    def eta_seconds(self, iteration: int, max_iter: int) -> float:
        """Seconds left after ``iteration`` (0-based) of ``max_iter``."""
        return (self.seconds_per_iter() or 0.0) * max(max_iter - iteration - 1, 0)


# Config values every run records as HParams (besides the keys its sweep varies).
KEY_HPARAMS = (
    "MODEL.RESNETS.DEPTH",
    "MODEL.ROI_BOX_HEAD.NAME",
    "MODEL.ROI_MASK_HEAD.NAME",
    "EXP.PS",
    "SOLVER.IMS_PER_BATCH",
    "SOLVER.BASE_LR",
    "SOLVER.MAX_ITER",
    "SEED",
)
# The final metrics shown beside them: the evaluation's scalar tags.
HPARAM_METRICS = (BOX_AP, MASK_AP, STRONG_MASK_AP, WEAK_MASK_AP)


def hparams_from_cfg(cfg, keys: Iterable[str] = ()) -> dict:
    """``{KEY: value}`` of ``KEY_HPARAMS`` and ``keys`` (a sweep's overridden keys), as the
    int/float/str/bool TensorBoard's HParams accept (lists and tuples as text)."""
    out = {}
    for key in dict.fromkeys([*KEY_HPARAMS, *keys]):
        try:
            node = lookup(cfg, key)
        except KeyError:
            raise ConfigError(f"EXP.HPARAMS names {key!r}, which is not a config key") from None
        out[key] = node if isinstance(node, (bool, int, float, str)) else str(node)
    return out


class EventWriter:
    """Console + metrics.json + TensorBoard for one run; a no-op on non-main ranks."""

    def __init__(
        self,
        metrics_file: str,
        tensorboard_dir: str,
        *,
        start_iter: int,
        max_iter: int,
        enabled: bool = True,
    ):
        self.enabled, self.max_iter = enabled, max_iter
        self.eta = EtaEstimator()
        self.data_times: deque = deque(maxlen=20)
        self.metrics_path = metrics_file
        self.tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            os.makedirs(os.path.dirname(os.path.abspath(metrics_file)), exist_ok=True)
            purge_metrics(self.metrics_path, start_iter)
            self.metrics = open(self.metrics_path, "a", encoding="utf-8")
            self.tb = SummaryWriter(tensorboard_dir, purge_step=start_iter)

    def _write(self, record: dict) -> None:
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        for k, v in record.items():
            if k != ITERATION and isinstance(v, (int, float)):
                self.tb.add_scalar(k, v, record[ITERATION])

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
        self.eta.add(iter_time)
        self.data_times.append(data_time)
        if not self.enabled:
            return
        eta = self.eta.eta_seconds(it, self.max_iter)
        record = {
            ITERATION: it,
            TOTAL_LOSS: sum(losses.values()),
            **losses,
            LR: lr,
            TIME: iter_time,
            DATA_TIME: data_time,
            ETA_SECONDS: eta,
        }
        self._write(record)
        if console:
            self._print(it, record)

    def _print(self, it: int, record: dict) -> None:
        """One console line; time is the window's median, data_time the mean of the last 20."""
        terms = "  ".join(
            f"{k}: {v:.4g}" for k, v in record.items() if k.startswith((TOTAL_LOSS, "loss_"))
        )
        logger.info(
            "eta: %s  iter: %d/%d  %s  time: %.4f  data_time: %.4f  lr: %.6g",
            datetime.timedelta(seconds=int(record[ETA_SECONDS])),
            it + 1,
            self.max_iter,
            terms,
            self.eta.seconds_per_iter(),
            statistics.fmean(self.data_times),
            record[LR],
        )

    def log_hparams(self, hparams: dict, metrics: Iterable[str] = HPARAM_METRICS) -> None:
        """The run's HParams (TensorBoard's HPARAMS tab): ``hparams`` and, as its metrics, the
        scalar tags ``metrics`` that ``log_eval`` writes. Written at every start of the run
        (the same content each time), so a run shows up while it trains."""
        if not self.enabled:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        metric_dict = dict.fromkeys(metrics, 0.0)  # only the tags are used
        experiment, session_start, _ = hparams_summaries(hparams, metric_dict)
        for summary in (experiment, session_start):
            self.tb.file_writer.add_summary(summary)
        self.tb.flush()

    def log_eval(self, it: int, results: dict[str, dict[str, float]]) -> None:
        """Evaluation results ``{task: {metric: value}}`` as ``task/metric`` scalars."""
        if self.enabled:
            flat = {
                eval_key(task, k): v
                for task, m in results.items()
                if task != "per_class"
                for k, v in m.items()
            }
            if flat:
                self._write({ITERATION: it, **flat})

    def log_image(self, tag: str, image: torch.Tensor, it: int) -> None:
        if self.enabled:
            self.tb.add_image(tag, image, it)

    def close(self) -> None:
        if self.enabled:
            self.metrics.close()
            self.tb.close()
