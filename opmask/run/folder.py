"""The one owner of a run folder's layout: every file name and path in it, the readers of its
records, and the one loader of a run's newest model. No other module spells a name of the layout
(``tests/run/test_folder.py`` greps the package for them); writers get their paths from here.

Layout of ``RUN/``::

    config.yaml                 the run's final config (seed fixed)          run.claim
    run.lock                    who holds the folder now                     run.claim.RunLock
    log.txt, log.txt.rankN      the log of rank 0, of rank N                 utils.logs
    metrics.json                one JSON object per line (Detectron2 keys)   train.events
    tensorboard/                TensorBoard events                           train.events
    models/                     model_{iter:07d}.pth, model_final.pth,       train.checkpoint
                                last_checkpoint, NAME.sha256
    inference/{dataset}/        results.json, coco_instances_results.json,   evaluation.coco_eval
                                gt_box_diagnostics.json                      tools.diagnose
    export/                     opmask-export's default output               tools.export
    attempts.jsonl              one line per SLURM attempt: its outcome      launch.attempts
    submission.json, slurm/     the submission record, submitit's folder     opmask-submit
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from ..train.checkpoint_names import CheckpointNames

if TYPE_CHECKING:
    from ..train.checkpoint import Checkpointer

# The model and the checkpoint files are imported where they are used, not here: the launcher's
# commands and every refusal before training read the layout alone, without torch (seconds per
# command).


class RunFolder:
    """The files of one run folder ``path`` (nothing is created by constructing it)."""

    CONFIG = "config.yaml"
    LOCK = "run.lock"
    LOG = "log.txt"
    METRICS = "metrics.json"
    TENSORBOARD = "tensorboard"
    MODELS = "models"
    CHECKPOINTS = CheckpointNames(  # inside models/, Detectron2's names
        periodic="model_{:07d}.pth", final="model_final.pth", pointer="last_checkpoint"
    )
    INFERENCE = "inference"
    RESULTS = "results.json"  # inside inference/{dataset}/
    PREDICTIONS = "coco_instances_results.json"  # inside inference/{dataset}/
    GT_BOX_DIAGNOSTICS = "gt_box_diagnostics.json"  # inside inference/{dataset}/
    EXPORT = "export"
    ATTEMPTS = "attempts.jsonl"
    SUBMISSION = "submission.json"
    SLURM = "slurm"

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)

    def __repr__(self) -> str:
        return f"RunFolder({self.path!r})"

    def _join(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    # ------------------------------------------------------------------ paths
    @property
    def config(self) -> str:
        return self._join(self.CONFIG)

    @property
    def lock(self) -> str:
        return self._join(self.LOCK)

    def log(self, rank: int = 0) -> str:
        """``log.txt`` of rank 0, ``log.txt.rank{rank}`` of the others."""
        return self._join(self.LOG if rank == 0 else f"{self.LOG}.rank{rank}")

    @property
    def metrics(self) -> str:
        return self._join(self.METRICS)

    @property
    def tensorboard(self) -> str:
        return self._join(self.TENSORBOARD)

    @property
    def models(self) -> str:
        return self._join(self.MODELS)

    @property
    def last_checkpoint_file(self) -> str:
        return self._join(self.MODELS, self.CHECKPOINTS.pointer)

    def inference(self, dataset: str | None = None) -> str:
        """``inference/``, or ``inference/{dataset}/`` (the evaluation's output folder)."""
        parts = (self.INFERENCE,) if dataset is None else (self.INFERENCE, dataset)
        return self._join(*parts)

    def results(self, dataset: str) -> str:
        return os.path.join(self.inference(dataset), self.RESULTS)

    def predictions(self, dataset: str) -> str:
        return os.path.join(self.inference(dataset), self.PREDICTIONS)

    def gt_box_diagnostics(self, dataset: str) -> str:
        return os.path.join(self.inference(dataset), self.GT_BOX_DIAGNOSTICS)

    def export(self, name: str | None = None) -> str:
        """``export/``, or ``export/{name}``."""
        return self._join(*((self.EXPORT,) if name is None else (self.EXPORT, name)))

    @property
    def attempts(self) -> str:
        return self._join(self.ATTEMPTS)

    @property
    def submission(self) -> str:
        return self._join(self.SUBMISSION)

    @property
    def slurm(self) -> str:
        return self._join(self.SLURM)

    def is_run(self) -> bool:
        """True when the folder holds a run's ``config.yaml``."""
        return os.path.isfile(self.config)

    # ------------------------------------------------------------------ checkpoints
    def checkpointer(self, max_to_keep: int = 0) -> Checkpointer:
        """The checkpointer of ``models/`` (``max_to_keep`` periodic files; 0: all)."""
        from ..train.checkpoint import Checkpointer

        return Checkpointer(self.models, self.CHECKPOINTS, max_to_keep)

    def latest_checkpoint(self) -> tuple[str, dict] | None:
        """``(path, state)`` of the newest usable checkpoint, None when ``models/`` holds none.

        Raises:
            CheckpointError: checkpoint files exist but none is usable.
        """
        return self.checkpointer().load_latest_valid()

    def load_model(self, cfg):
        """The model ``cfg`` builds, holding this run's newest valid checkpoint (the one loader
        of every tool: export, diagnose, predict); returns ``(model, path, iteration)``.

        Raises:
            CheckpointError: no valid checkpoint; CheckpointMismatchError: one that does not
                match ``cfg`` (the first mismatched tensors and shapes named).
        """
        from ..modeling import build_model
        from ..train.checkpoint import CheckpointError, load_model_state

        found = self.latest_checkpoint()
        if found is None:
            raise CheckpointError(f"{self.models}: no valid checkpoint")
        path, state = found
        model = build_model(cfg)
        load_model_state(model, state["model"], path)
        return model, path, state.get("iteration")

    def last_iteration(self) -> int | None:
        """Iteration of the checkpoint ``last_checkpoint`` names, when it is a periodic one
        (``model_0000123.pth`` -> 123); None for ``model_final.pth`` or no checkpoint."""
        name = self.CHECKPOINTS.pointed(self.models)
        return None if name is None else self.CHECKPOINTS.iteration_of(name)

    # ------------------------------------------------------------------ records
    def read_metrics(self) -> list[dict]:
        """Every record of ``metrics.json``, oldest first ([] when absent); a line that is not
        JSON (a torn last line of a killed run) is skipped."""
        return _read_jsonl(self.metrics)

    def read_results(self, dataset: str | None = None) -> dict:
        """``results.json`` of ``dataset``, else of the first dataset (by name) that has one;
        {} when there is none."""
        if dataset is not None:
            names = [dataset]
        else:
            folder = self.inference()
            names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        for name in names:
            path = self.results(name)
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    return json.load(f)
        return {}

    def read_attempts(self) -> list[dict]:
        """The outcomes recorded in ``attempts.jsonl``, oldest first ([] when absent)."""
        return _read_jsonl(self.attempts)


# What a run folder's processes write (every entry of the layout above but export/, which is
# opmask-export's): no command writes over these or into these folders from outside their owner.
OWNED = (
    RunFolder.CONFIG,
    RunFolder.LOCK,
    RunFolder.METRICS,
    RunFolder.TENSORBOARD,
    RunFolder.MODELS,
    RunFolder.INFERENCE,
    RunFolder.ATTEMPTS,
    RunFolder.SUBMISSION,
    RunFolder.SLURM,
)


def owning_run(path: str | os.PathLike) -> str | None:
    """The run folder that owns ``path`` (one of its :data:`OWNED` files, a log, or anything
    inside ``models/``, ``inference/`` ...), following symlinks and ``..``; None when no run
    folder owns it. A run folder is a folder holding ``config.yaml`` or ``models/``."""
    real = os.path.realpath(path)
    parts = real.split(os.sep)
    for i in range(len(parts) - 1, 0, -1):
        folder, head = os.sep.join(parts[:i]) or os.sep, parts[i]
        owned = head in OWNED or head == RunFolder.LOG or head.startswith(RunFolder.LOG + ".rank")
        if owned and (
            os.path.isfile(os.path.join(folder, RunFolder.CONFIG))
            or os.path.isdir(os.path.join(folder, RunFolder.MODELS))
        ):
            return folder
    return None


def _read_jsonl(path: str) -> list[dict]:
    """The JSON objects of a one-object-per-line file; lines that do not parse are skipped."""
    if not os.path.isfile(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                out.append(record)
    return out
