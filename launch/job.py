"""What runs inside a SLURM job (every task): distributed set-up from SLURM, training with resume
semantics, and preemption/timeout handling.

On submitit's USR2 (preemption, or the time limit approaching) the trainer is only *asked* for a
checkpoint (``opmask.train.preempt``); it writes one at the next step boundary on all ranks and
exits with ``exit_codes.CHECKPOINTED``; only then is submitit's own handler run, which requeues the
job (timeouts count against the requeue budget). SIGTERM (``scancel``, which SIGKILLs after the
cluster's KillWait; submitit itself would ignore it) checkpoints the same way but is a
cancellation: recorded as "cancelled", never requeued; a resubmission with resume continues.
Application errors (bad input, NaN) raise ``ApplicationError``: recorded as FAILED, never
requeued. Each attempt's outcome is appended to ``RUN/attempts.jsonl`` so ``opmask-sweep status``
can tell the reasons apart.
"""

from __future__ import annotations

import logging
import signal

import submitit

from opmask.run.claim import RunFolderError, RunLock
from opmask.run.folder import RunFolder
from opmask.train import preempt
from opmask.utils import exit_codes

from .attempts import describe_attempt, record_attempt

logger = logging.getLogger("opmask.launch")


class ApplicationError(RuntimeError):
    """The training failed for a reason a requeue cannot fix."""


class _DeferredSignal:
    """Replaces submitit's USR2 handler: remember the signal and ask for a checkpoint. After the
    trainer has checkpointed, :meth:`hand_over` runs submitit's handler (requeue and exit).
    Also makes SIGTERM a stop request for the whole job (submitit only logs it)."""

    def __init__(self, signum: int = signal.SIGUSR2):
        self.signum, self.original, self.received = signum, signal.getsignal(signum), False
        signal.signal(signum, self._handle)
        signal.signal(signal.SIGTERM, preempt.handle)  # before and between the ranks' own

    def _handle(self, signum, frame) -> None:
        self.received = True
        preempt.handle(signum, frame)  # during the evaluation: stops it at once

    def reason(self) -> str:
        owner = getattr(self.original, "__self__", None)
        return "timeout" if owner is not None and owner.has_timed_out() else "preemption"

    def hand_over(self) -> None:
        if callable(self.original):
            self.original(self.signum, None)  # submitit: requeue then sys.exit (rank 0)


def _meaning(code: int) -> str:
    meanings = {
        exit_codes.ERROR: "bad input",
        exit_codes.NON_FINITE: "non-finite loss",
        exit_codes.BUG: "internal error",
        exit_codes.PEER_FAILED: "another rank failed first",
    }
    return meanings.get(code, "a rank failed")


class TrainJob:
    """The callable submitted with submitit; picklable, and checkpointable for requeues.
    ``eval_only``: evaluate the run's newest checkpoint (``opmask-train --eval-only``) instead of
    training; such a job records no attempt in ``RUN/attempts.jsonl`` (those are training's)."""

    eval_only = False  # a class default, so jobs pickled before the attribute existed load

    def __init__(
        self,
        cfg_yaml: str,
        run_dir: str,
        device: str,
        dist_timeout_min: float = 30.0,
        *,
        eval_only: bool = False,
    ):
        self.cfg_yaml, self.run_dir, self.device = cfg_yaml, run_dir, device
        self.dist_timeout_min, self.eval_only = dist_timeout_min, eval_only

    def __call__(self) -> dict:
        env = submitit.JobEnvironment()
        run = RunFolder(self.run_dir)
        if env.global_rank == 0:
            print(describe_attempt(run), flush=True)
        if env.num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        deferred = _DeferredSignal()
        main = env.global_rank == 0
        try:  # rank 0 holds the run folder's lock (the submitter may still be letting it go)
            lock = RunLock(self.run_dir).acquire(wait_s=60) if main else None
        except RunFolderError as e:
            if not self.eval_only:
                record_attempt(run, outcome="application_error", error=str(e))
            raise ApplicationError(str(e)) from None
        try:
            return self._train(run, deferred, main and not self.eval_only)  # main: records
        finally:
            if lock is not None:
                lock.release()

    def _train(self, run: RunFolder, deferred: _DeferredSignal, main: bool) -> dict:
        from opmask.run.entry import rank_main  # the model's imports: only inside the job
        from opmask.run.spawn import launch

        code = launch(
            rank_main,
            (self.cfg_yaml, self.run_dir, not self.eval_only, self.eval_only),
            device=self.device,
            timeout_min=self.dist_timeout_min,
        )
        if code in exit_codes.STOPPED and deferred.received:  # a SIGTERM too changes nothing
            reason = deferred.reason()
            if main:
                record_attempt(run, outcome=reason, iteration=run.last_iteration())
            deferred.hand_over()
            return {"run_dir": self.run_dir, "outcome": reason}
        if code in exit_codes.STOPPED:  # scancel (SIGTERM), SIGINT, SIGUSR1: not requeued
            outcome = "checkpointed" if code == exit_codes.CHECKPOINTED else "cancelled"
            if main:
                record_attempt(run, outcome=outcome, iteration=run.last_iteration(), exit_code=code)
            return {"run_dir": self.run_dir, "outcome": outcome}
        if code != exit_codes.OK:
            if main:
                record_attempt(run, outcome="application_error", exit_code=code)
            raise ApplicationError(
                f"training ended with exit code {code} ({_meaning(code)}) in {self.run_dir} "
                "(see the job's stderr and RUN/log.txt); not requeued"
            )
        if main:
            record_attempt(run, outcome="completed", iteration=run.last_iteration())
        return {"run_dir": self.run_dir, "outcome": "completed"}

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """Called by submitit's handler after our trainer has checkpointed: requeue as is (the
        job resumes from the run folder's newest valid checkpoint)."""
        return submitit.helpers.DelayedSubmission(self)
