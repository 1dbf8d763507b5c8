"""The training loop: build, resume, loop (guard non-finite loss, step, schedule), checkpoint,
evaluate. ``train`` is meant to be read top to bottom."""

from __future__ import annotations

import contextlib
import logging
import random
import time
import warnings
from typing import Callable

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from ..data.build import build_test_loader, build_test_mapper, build_train_loader
from ..data.catalog import check_num_classes, load_datasets, strong_ids_from_cfg
from ..data.coco import DatasetError, DatasetInfo
from ..evaluation.coco_eval import evaluate
from ..modeling import build_model
from ..modeling.build import resolve_device
from ..modeling.weights import load_weights
from ..utils import comm
from . import preempt
from .backends import backends_from_cfg
from .checkpoint import (
    Checkpointer,
    CheckpointError,
    capture_rng,
    load_model_state,
    restore_rng,
)
from .events import EventWriter, hparams_from_cfg
from .solver import build_lr_scheduler, build_optimizer, clip_gradients
from .vis import prediction_overlays, roi_triptychs

logger = logging.getLogger("opmask.train")


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the message names the iteration and every loss term."""


class CheckpointedExit(Exception):
    """ "Checkpoint now" was honoured at ``iteration``; the process should exit to be resumed.

    ``signals``: the names of the signals that asked, on any rank (they choose ``code``);
    ``line``: the one line for stderr."""

    def __init__(self, iteration: int, path: str, reason: str = "", signals: list[str] = ()):
        why = f" ({reason})" if reason else ""
        super().__init__(f"checkpoint requested{why}, written at iteration {iteration}: {path}")
        self.iteration, self.path, self.signals = iteration, path, list(signals)
        self.code = preempt.code_for(self.signals)
        self.line = (
            f"stopped by {preempt.describe(self.signals)} at iteration {iteration}; "
            f"checkpoint {path}; continue with --resume"
        )


class EvaluationStopped(Exception):
    """A stop signal came during the evaluation of ``path`` (the evaluation was not finished;
    the checkpoint is on disk). ``rerun``: the flag that runs it again."""

    def __init__(self, path: str, signals: list[str], rerun: str = "--resume"):
        self.path, self.signals, self.code = path, list(signals), preempt.code_for(signals)
        self.line = (
            f"stopped by {preempt.describe(signals)} during the evaluation, which was not "
            f"finished; checkpoint {path} is on disk; {rerun} runs the evaluation again"
        )
        super().__init__(self.line)


def train(cfg, run, *, resume: bool, after_step: Callable | None = None) -> dict:
    """Train ``cfg`` in the run folder ``run`` (an ``opmask.run.folder.RunFolder``: every path
    the loop writes comes from it); returns the final evaluation results.

    ``after_step(iteration, model, batch, losses)``, if given, runs on every rank after each
    optimizer step and scheduler step, with the step's input (the list of mapped dicts) and its
    loss tensors (computed before the step; their graph is freed). It observes only: the loop
    computes the same whatever it does, unless it changes the model (weights, buffers, train
    mode) or draws from the random generators.
    """
    dicts, info = load_datasets(cfg.DATASETS.TRAIN, cache_dir=cfg.DATASETS.CACHE_DIR)
    check_num_classes(cfg, info)
    backends_from_cfg(cfg)
    _seed_everything(cfg.SEED)  # same initial weights on every rank and every run
    device = resolve_device(cfg.MODEL.DEVICE)
    model = build_model(cfg, strong_classes=info.labels(strong_ids_from_cfg(cfg, info)))
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    scaler = torch.amp.GradScaler(device.type, enabled=_amp_dtype(cfg) == torch.float16)
    ckpt = run.checkpointer(cfg.SOLVER.MAX_TO_KEEP)
    start_iter = _resume(ckpt, model, optimizer, scheduler, scaler) if resume else 0
    if start_iter == 0:
        _seed_everything(cfg.SEED + comm.get_rank())  # per-rank draws not keyed by a sample
        if cfg.MODEL.WEIGHTS:
            load_weights(model, cfg.MODEL.WEIGHTS)
    evaluator = Evaluator(cfg, info, run)
    ddp = _wrap(model, device)
    loader = build_train_loader(
        cfg,
        dicts,
        seed=cfg.SEED,
        rank=comm.get_rank(),
        world_size=comm.get_world_size(),
        start_iter=start_iter,
    )
    max_iter = cfg.SOLVER.MAX_ITER
    events = EventWriter(
        run.metrics,
        run.tensorboard,
        start_iter=start_iter,
        max_iter=max_iter,
        enabled=comm.is_main_process(),
    )
    events.log_hparams(hparams_from_cfg(cfg, cfg.EXP.HPARAMS))
    state = lambda it: _state(it, cfg, model, optimizer, scheduler, scaler)  # noqa: E731
    logger.info(
        "Starting training from iteration %d of %d in %s (%s)",
        start_iter,
        max_iter,
        run.path,
        comm.describe(device),
    )
    data = iter(loader)
    try:
        for it in range(start_iter, max_iter):
            t0 = time.perf_counter()
            batch = next(data)
            t_data = time.perf_counter() - t0
            vis = cfg.VIS_PERIOD > 0 and it % cfg.VIS_PERIOD == 0
            with _autocast(cfg, device):
                losses, extras = ddp(batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(sum(losses.values())).backward()
            # The step's one host sync, while the GPU still runs the backward pass; the guard
            # stands before the optimizer step, so a non-finite loss never touches the weights.
            nonfinite, stop, scalars = comm.step_sync(losses, preempt.requested())
            if nonfinite:
                raise NonFiniteLossError(_nonfinite_message(it, losses))
            scaler.unscale_(optimizer)
            clip_gradients(cfg, [p for g in optimizer.param_groups for p in g["params"]])
            scaler.step(optimizer)
            scaler.update()
            lr = optimizer.param_groups[0]["lr"]  # the step's (Detectron2 logs it before stepping)
            scheduler.step()
            if after_step is not None:
                after_step(it, model, batch, losses)
            events.log_train(
                it,
                scalars,
                lr,
                time.perf_counter() - t0,
                t_data,
                console=(it + 1) % cfg.EXP.PRINT_PERIOD == 0 or it == start_iter,
            )
            for tag, img in _roi_images(cfg, extras, batch, info) if vis else []:
                events.log_image(tag, img, it)
            if stop:  # every rank agreed (step_sync): save, then exit with the signals' code
                path = _save(ckpt, ckpt.names.periodic_name(it), state(it))
                why = preempt.reason() or "on another rank"
                raise CheckpointedExit(it, path, why, signals=_signals_of_all_ranks())
            last = it + 1 == max_iter
            if not last and (it + 1) % cfg.SOLVER.CHECKPOINT_PERIOD == 0:
                _save(ckpt, ckpt.names.periodic_name(it), state(it), background=True)
            if not last and cfg.TEST.EVAL_PERIOD and (it + 1) % cfg.TEST.EVAL_PERIOD == 0:
                _log_evaluation(events, it, evaluator(model), evaluator, model)
        if start_iter < max_iter:
            _save(ckpt, ckpt.names.final, state(max_iter - 1))
        results = _stoppable(evaluator, model, ckpt.path(ckpt.names.final), "--resume")
        _log_evaluation(events, max_iter - 1, results, evaluator, model)
        return results
    finally:
        ckpt.close()  # any exit waits for a background checkpoint write
        events.close()


def evaluate_only(cfg, run) -> dict:
    """Evaluate the newest valid checkpoint of the run folder ``run`` (else ``MODEL.WEIGHTS``)."""
    names = cfg.DATASETS.TEST or cfg.DATASETS.TRAIN
    _, info = load_datasets(names[:1], cache_dir=cfg.DATASETS.CACHE_DIR)
    check_num_classes(cfg, info)
    backends_from_cfg(cfg)
    model = build_model(cfg)
    found = run.latest_checkpoint()
    if found is not None:
        path, state = found
        load_model_state(model, state["model"], path)  # a changed config: one line, exit 1
        logger.info("Evaluating %s (iteration %d)", path, state["iteration"])
    elif cfg.MODEL.WEIGHTS:
        load_weights(model, cfg.MODEL.WEIGHTS)
    else:
        raise CheckpointError(
            f"nothing to evaluate: no valid checkpoint in {run.models} and MODEL.WEIGHTS is empty"
        )
    source = found[0] if found is not None else cfg.MODEL.WEIGHTS
    return _stoppable(Evaluator(cfg, info, run), model, source, "--eval-only")


def _stoppable(evaluator: "Evaluator", model, path: str, rerun: str) -> dict:
    """Evaluate; a stop signal ends it at once (no step boundary will come) with
    :class:`EvaluationStopped` naming ``path``, the checkpoint that stays on disk."""
    try:
        with preempt.at_once():
            return evaluator(model)
    except preempt.Stopped as e:
        if e.aborted:
            raise
        raise EvaluationStopped(path, e.signals, rerun) from None


class Evaluator:
    """Evaluates a model on every ``DATASETS.TEST`` dataset; results under ``inference/``."""

    def __init__(self, cfg, train_info: DatasetInfo, run):
        self.cfg, self.run, self.sets = cfg, run, []
        for name in cfg.DATASETS.TEST:
            dicts, info = load_datasets([name], cache_dir=cfg.DATASETS.CACHE_DIR)
            if info.category_ids != train_info.category_ids:
                raise DatasetError(f"test dataset {name!r} has other categories than training")
            self.sets.append((name, dicts, info, strong_ids_from_cfg(cfg, info)))

    def __call__(self, model) -> dict:
        out = {}
        for name, dicts, info, strong in self.sets:
            loader = build_test_loader(
                self.cfg, dicts, rank=comm.get_rank(), world_size=comm.get_world_size()
            )
            res = evaluate(
                model,
                loader,
                gt_json=info.json_file,
                category_id_of=info.category_id,
                strong_ids=strong,
                outputs=(
                    (self.run.predictions(info.name), self.run.results(info.name))
                    if comm.is_main_process()
                    else None
                ),
                evaluator=self.cfg.TEST.EVALUATOR,
            )
            out.update(res if len(self.sets) == 1 else {f"{name}/{k}": v for k, v in res.items()})
        return out

    def overlays(self, model) -> list[tuple[str, torch.Tensor]]:
        """``(tag, (3, H, W) uint8)``: the first ``EXP.VIS_PREDICTIONS`` images of the first test
        set with the model's predictions drawn (the same images at every evaluation)."""
        if not self.sets or not self.cfg.EXP.VIS_PREDICTIONS or not comm.is_main_process():
            return []
        _, dicts, info, strong = self.sets[0]
        shown = dicts[: self.cfg.EXP.VIS_PREDICTIONS]
        images = prediction_overlays(model, shown, build_test_mapper(self.cfg), info, strong)
        return [(f"predictions/{d['image_id']}", img) for d, img in zip(shown, images)]


# ---------------------------------------------------------------------- helpers of the loop
def _log_evaluation(events: EventWriter, it: int, results: dict, evaluator, model) -> None:
    """An evaluation's metrics, and its prediction overlays for TensorBoard."""
    events.log_eval(it, results)
    for tag, img in evaluator.overlays(model):
        events.log_image(tag, img, it)


def _roi_images(cfg, extras: dict, batch: list[dict], info: DatasetInfo) -> list:
    images = [x["image"] for x in batch]
    bgr = cfg.INPUT.FORMAT == "BGR"
    return roi_triptychs(extras, cfg.EXP.VIS_ROIS, images, info.thing_classes, bgr)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _wrap(model, device: torch.device):
    if comm.get_world_size() == 1:
        return model
    # broadcast_buffers=False as Detectron2's DefaultTrainer: each rank keeps its own BN running
    # statistics (rank 0's, the ones checkpointed, are the same either way). torch 2.14 calls the
    # argument deprecated and advises keeping it until its replacement can skip the sync at init:
    # its FutureWarning would be a line of noise on every rank's stderr.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`broadcast_buffers` is deprecated", FutureWarning)
        return DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            broadcast_buffers=False,
        )


def _amp_dtype(cfg):
    if not cfg.SOLVER.AMP.ENABLED:
        return None
    dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16}  # the checked choices
    return dtypes[cfg.SOLVER.AMP.DTYPE]


def _autocast(cfg, device: torch.device):
    dtype = _amp_dtype(cfg)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _nonfinite_message(it: int, losses: dict) -> str:
    terms = ", ".join(f"{k}={float(v.detach()):.6g}" for k, v in sorted(losses.items()))
    return f"non-finite loss at iteration {it}: {terms}"


def _state(it: int, cfg, model, optimizer, scheduler, scaler) -> dict:
    """Everything needed to continue exactly: weights, solver, RNG of every rank, position."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "iteration": it,
        "rng": comm.all_gather_objects(capture_rng()),
        "meta": {
            "world_size": comm.get_world_size(),
            "config": cfg.dump(),
            "torch": str(torch.__version__),
            "time": time.time(),
        },
    }


def _signals_of_all_ranks() -> list[str]:
    """The stop signals every rank received (a collective: call it on all ranks at once)."""
    return [name for names in comm.all_gather_objects(preempt.signals()) for name in names]


def _save(ckpt: Checkpointer, name: str, state: dict, background: bool = False) -> str:
    """Rank 0 writes; ``background``: a CPU copy now, the write while training goes on."""
    if comm.is_main_process():
        (ckpt.save_async if background else ckpt.save)(name, state)
    comm.barrier()
    return ckpt.path(name)


def _resume(ckpt: Checkpointer, model, optimizer, scheduler, scaler) -> int:
    """Restore the newest valid checkpoint; returns the first iteration to run (0 if none).

    Raises CheckpointError when ``models/`` holds checkpoints but none is usable (never starts
    over them)."""
    found = ckpt.load_latest_valid()
    if found is None:
        logger.info("No checkpoint in %s: starting from scratch", ckpt.folder)
        return 0
    path, state = found
    missing = [k for k in ("optimizer", "scheduler", "scaler", "rng", "meta") if k not in state]
    if missing:
        raise CheckpointError(f"{path} cannot resume training: it lacks {', '.join(missing)}")
    world, rank, rngs = comm.get_world_size(), comm.get_rank(), state["rng"]
    if state["meta"]["world_size"] != world and comm.is_main_process():  # batches unchanged
        logger.warning(
            "World size changed: %s was written with %d processes, this run has %d. The global "
            "batches and each image's augmentation and anchor/RoI sampling continue unchanged "
            "(same SOLVER.IMS_PER_BATCH); each process averages its own images' losses, images "
            "are padded per process, and with per-process BatchNorm (not frozen, not SyncBN) "
            "the statistics differ.",
            path,
            state["meta"]["world_size"],
            world,
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    restore_rng(rngs[rank % len(rngs)])
    ckpt.protected.add(path)
    logger.info("Resumed from %s (iteration %d)", path, state["iteration"])
    return state["iteration"] + 1
