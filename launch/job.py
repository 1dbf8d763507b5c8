"""What runs inside a SLURM job (every task): distributed set-up from SLURM, training with resume
semantics, and preemption/timeout handling.

On submitit's USR2 (preemption, or the time limit approaching) the trainer is only *asked* for a
checkpoint (``opmask.engine.preempt``); it writes one at the next step boundary on all ranks and
exits with ``exit_codes.CHECKPOINTED``; only then is submitit's own handler run, which requeues the
job (timeouts count against the requeue budget). Application errors (bad input, NaN) raise
``ApplicationError``: recorded as FAILED, never requeued. Each attempt's outcome is appended to
``RUN/attempts.jsonl`` so ``opmask-sweep status`` can tell the reasons apart.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time

import submitit

from opmask.engine import exit_codes, preempt
from opmask.engine.checkpoint import Checkpointer, periodic_iteration
from opmask.engine.launch import launch
from opmask.engine.run_dir import RunFolderError, RunLock

logger = logging.getLogger("opmask.launch")


class ApplicationError(RuntimeError):
    """The training failed for a reason a requeue cannot fix."""


def record_attempt(run_dir: str, **fields) -> None:
    """Append one line to RUN/attempts.jsonl (rank 0 only)."""
    fields.update(
        time=time.time(),
        job_id=os.environ.get("SLURM_JOB_ID", "local"),
        attempt=int(os.environ.get("SLURM_RESTART_COUNT", 0)),
    )
    with open(os.path.join(run_dir, "attempts.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps(fields) + "\n")


def read_attempts(run_dir: str) -> list[dict]:
    """The outcomes recorded in RUN/attempts.jsonl, oldest first."""
    path = os.path.join(run_dir, "attempts.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def last_iteration(run_dir: str) -> int | None:
    """Iteration of the newest periodic checkpoint (None when it is ``model_final.pth``)."""
    name = Checkpointer(os.path.join(run_dir, "models")).last_name()
    return None if name is None else periodic_iteration(name)


def describe_attempt(run_dir: str) -> str:
    """One job-log line: which attempt this is and how the previous one of this job ended."""
    job = os.environ.get("SLURM_JOB_ID", "local")
    restart = int(os.environ.get("SLURM_RESTART_COUNT", 0))
    mine = [a for a in read_attempts(run_dir) if a["job_id"] == job]
    line = f"[opmask] job {job}, attempt {restart + 1}, run folder {run_dir}"
    if restart == 0:
        return line
    if len(mine) >= restart:
        prev = mine[restart - 1]
        return f"{line}; previous attempt: {prev['outcome']} at iteration {prev.get('iteration')}"
    return (
        f"{line}; previous attempt ended without a checkpoint request (node failure, "
        "hard kill or scontrol requeue): resuming from the newest valid checkpoint"
    )


class _DeferredSignal:
    """Replaces submitit's USR2 handler: remember the signal and ask for a checkpoint. After the
    trainer has checkpointed, :meth:`hand_over` runs submitit's handler (requeue and exit)."""

    def __init__(self, signum: int = signal.SIGUSR2):
        self.signum, self.original, self.received = signum, signal.getsignal(signum), False
        signal.signal(signum, self._handle)

    def _handle(self, signum, frame) -> None:
        self.received = True
        preempt.request(signal.Signals(signum).name)

    def reason(self) -> str:
        owner = getattr(self.original, "__self__", None)
        return "timeout" if owner is not None and owner.has_timed_out() else "preemption"

    def hand_over(self) -> None:
        if callable(self.original):
            self.original(self.signum, None)  # submitit: requeue then sys.exit (rank 0)


class TrainJob:
    """The callable submitted with submitit; picklable, and checkpointable for requeues."""

    def __init__(self, cfg_yaml: str, run_dir: str, device: str, dist_timeout_min: float = 30.0):
        self.cfg_yaml, self.run_dir, self.device = cfg_yaml, run_dir, device
        self.dist_timeout_min = dist_timeout_min

    def __call__(self) -> dict:
        env = submitit.JobEnvironment()
        if env.global_rank == 0:
            print(describe_attempt(self.run_dir), flush=True)
        if env.num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        deferred = _DeferredSignal()
        main = env.global_rank == 0
        try:  # rank 0 holds the run folder's lock (the submitter may still be letting it go)
            lock = RunLock(self.run_dir).acquire(wait_s=60) if main else None
        except RunFolderError as e:
            record_attempt(self.run_dir, outcome="application_error", error=str(e))
            raise ApplicationError(str(e)) from None
        try:
            return self._train(deferred, main)
        finally:
            if lock is not None:
                lock.release()

    def _train(self, deferred: _DeferredSignal, main: bool) -> dict:
        from opmask.cli.train import worker

        code = launch(
            worker,
            (self.cfg_yaml, self.run_dir, True, False),
            device=self.device,
            timeout_min=self.dist_timeout_min,
        )
        if code == exit_codes.CHECKPOINTED and deferred.received:
            reason = deferred.reason()
            if main:
                record_attempt(self.run_dir, outcome=reason, iteration=last_iteration(self.run_dir))
            deferred.hand_over()
            return {"run_dir": self.run_dir, "outcome": reason}
        if code != exit_codes.OK:
            if main:
                record_attempt(self.run_dir, outcome="application_error", exit_code=code)
            raise ApplicationError(
                f"opmask-train exited with code {code} in {self.run_dir} "
                "(see the job's stderr and RUN/log.txt); not requeued"
            )
        if main:
            record_attempt(
                self.run_dir, outcome="completed", iteration=last_iteration(self.run_dir)
            )
        return {"run_dir": self.run_dir, "outcome": "completed"}

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """Called by submitit's handler after our trainer has checkpointed: requeue as is (the
        job resumes from the run folder's newest valid checkpoint)."""
        return submitit.helpers.DelayedSubmission(self)
