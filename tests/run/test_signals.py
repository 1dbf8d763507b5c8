"""Stop signals end ``opmask-train`` safely: SIGTERM and the first SIGINT (sent to the process
group, as a terminal's Ctrl-C is) are honoured at the next step boundary on every rank with a
checkpoint, one line on stderr and the signal's exit code; ``--resume`` continues; a second
SIGINT aborts at once; a stop during the evaluation says it was not finished. A rank that fails
on a bad image is named in one line and the run folder keeps every rank's log."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest

from opmask.data.shapes import generate
from opmask.run.spawn import outcome
from opmask.train import preempt
from opmask.train.checkpoint import load_verified
from opmask.utils import exit_codes
from tests import warm
from tests.conftest import SHAPES_OPMASK, TINY

NO_EVAL = ["DATASETS.TEST", "()", "VIS_PERIOD", "0"]
MAX_ITER = 8

# opmask-train with a step that, once a stop was requested, lasts a minute (a slow step or
# checkpoint), so that the second SIGINT surely comes before the step boundary.
SLOW_STOPPING_STEP = """
import os, sys, time
from opmask.utils import comm
_sync = comm.step_sync
def step_sync(losses, stop):
    if stop:
        open(os.environ["OPMASK_TEST_MARKER"], "w").close()
        time.sleep(60)
    return _sync(losses, stop)
comm.step_sync = step_sync
from opmask.cli.train import main
sys.exit(main(sys.argv[1:]))
"""

# opmask-train whose evaluation takes 30 s an image, so that the signal surely comes during it.
SLOW_EVALUATION = """
import os, sys, time
from opmask.modeling.meta_arch import OPMask
_forward = OPMask.forward
def forward(self, batched_inputs):
    if not self.training:
        open(os.environ["OPMASK_TEST_MARKER"], "w").close()
        time.sleep(30)
    return _forward(self, batched_inputs)
OPMask.forward = forward
from opmask.cli.train import main
sys.exit(main(sys.argv[1:]))
"""


# ---------------------------------------------------------------- in this process
def test_the_exit_codes_are_distinct():
    codes = [exit_codes.OK, exit_codes.ERROR, exit_codes.USAGE, exit_codes.NON_FINITE]
    codes += [exit_codes.BUG, exit_codes.PEER_FAILED, *exit_codes.STOPPED]
    assert len(set(codes)) == len(codes)
    assert exit_codes.STOPPED == (75, 130, 143)  # 128 + SIGINT / SIGTERM, as a shell reports


def test_signals_set_a_flag_a_second_sigint_aborts_the_evaluation_stops_at_once():
    before = signal.getsignal(signal.SIGINT)
    try:
        with preempt.handling(), preempt.armed():
            os.kill(os.getpid(), signal.SIGTERM)
            assert preempt.requested() and preempt.signals() == ["SIGTERM"]
            assert preempt.code_for(preempt.signals()) == exit_codes.TERMINATED
            with pytest.raises(preempt.Stopped) as stop, preempt.at_once():
                pass  # a stop that came before the evaluation ends it on entry
            assert not stop.value.aborted and stop.value.code == exit_codes.TERMINATED
            os.kill(os.getpid(), signal.SIGINT)  # the first SIGINT: a request
            assert preempt.signals() == ["SIGTERM", "SIGINT"]
            with pytest.raises(preempt.Stopped) as stop:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)  # the handler raises at once
            assert stop.value.aborted and stop.value.code == exit_codes.INTERRUPTED
        assert signal.getsignal(signal.SIGINT) is before  # restored
    finally:
        preempt.clear()


@pytest.mark.parametrize(
    "ended, code",
    [
        ([(0, 0), (1, 0)], 0),
        ([(1, 1), (0, exit_codes.PEER_FAILED)], 1),  # the failing rank's code, not its peer's
        ([(0, exit_codes.PEER_FAILED), (1, 3)], 3),
        ([(0, 143), (1, 143)], 143),
        ([(0, 75), (1, 143)], 143),  # a person's stop wins: never requeued
        ([(1, 130), (0, 75)], 130),
        ([(0, 143), (1, 4)], 4),
    ],
)
def test_the_run_code_is_the_first_rank_that_failed_for_its_own_reason(ended, code):
    assert outcome(ended) == code


def test_a_killed_rank_is_named_and_lost_peers_alone_are_a_bug(capsys):
    assert outcome([(1, -signal.SIGKILL), (0, exit_codes.PEER_FAILED)]) == 137
    assert capsys.readouterr().err == "opmask-train: error: rank 1 was killed by SIGKILL\n"
    both = [(0, exit_codes.PEER_FAILED), (1, exit_codes.PEER_FAILED)]
    assert outcome(both) == exit_codes.BUG
    assert "internal error" in capsys.readouterr().err


# ---------------------------------------------------------------- opmask-train
# Each test below runs opmask-train in processes of its own (one or two starts, one or three
# processes each; the command forked from a warm interpreter, its ranks spawned fresh): tens of
# seconds on 2 cores, hence `slow`.
def _cmd(run, *flags, opts=(), script=None):
    head = [sys.executable, "-c", script] if script else [sys.executable, "-m", "opmask.cli.train"]
    return [
        *head,
        "--config-file",
        SHAPES_OPMASK,
        "--output",
        str(run),
        *flags,
        *TINY,
        "SOLVER.MAX_ITER",
        str(MAX_ITER),
        "SOLVER.CHECKPOINT_PERIOD",
        "1000",
        *opts,
    ]


def _start(cmd, root, tmp_path):
    """The command in its own session (a terminal's process group), output into files."""
    env = dict(os.environ, OPMASK_DATASETS=root, PYTHONUNBUFFERED="1")
    env["OPMASK_TEST_MARKER"] = str(tmp_path / "marker")
    out = open(tmp_path / "stdout.txt", "w")
    err = open(tmp_path / "stderr.txt", "w")
    proc = warm.Popen(cmd, env=env, cwd=tmp_path, stdout=out, stderr=err, start_new_session=True)
    out.close(), err.close()
    return proc


def _end(proc, tmp_path, timeout=120) -> tuple[int, list[str]]:
    code = proc.wait(timeout=timeout)
    return code, (tmp_path / "stderr.txt").read_text().strip().splitlines()


def _iterations(run) -> list[int]:
    path = run / "metrics.json"
    if not path.exists():
        return []
    return [m["iteration"] for m in map(json.loads, open(path)) if "total_loss" in m]


def _wait(predicate, proc, what, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        assert proc.poll() is None, f"ended with {proc.returncode} before {what}"
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _resume(run, root, tmp_path, *flags, opts=()):
    env = dict(os.environ, OPMASK_DATASETS=root, PYTHONUNBUFFERED="1")
    return warm.run(
        _cmd(run, "--resume", *flags, opts=opts),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "procs, sig, code",
    [
        (1, signal.SIGTERM, exit_codes.TERMINATED),
        (1, signal.SIGINT, exit_codes.INTERRUPTED),
        (2, signal.SIGTERM, exit_codes.TERMINATED),
        (2, signal.SIGINT, exit_codes.INTERRUPTED),
    ],
    ids=["1-SIGTERM", "1-SIGINT", "2-SIGTERM", "2-SIGINT"],
)
def test_stop_signal_checkpoints_and_resume_finishes(datasets_root, tmp_path, procs, sig, code):
    """The signal goes to the whole process group: with one process its DataLoader worker gets
    it too (and ignores it); with two, only the parent (the ranks have their own groups), which
    forwards it once."""
    run = tmp_path / "run"
    flags = ["--num-gpus", "2"] if procs == 2 else []
    workers = ["DATALOADER.NUM_WORKERS", "1"] if procs == 1 else []
    proc = _start(_cmd(run, *flags, opts=NO_EVAL + workers), datasets_root, tmp_path)
    _wait(lambda: len(_iterations(run)) >= 2, proc, "two iterations")
    os.killpg(proc.pid, sig)
    rc, err = _end(proc, tmp_path)
    name = (run / "models" / "last_checkpoint").read_text()
    it = load_verified(str(run / "models" / name))["iteration"]
    path = run / "models" / f"model_{it:07d}.pth"
    assert rc == code, err
    assert err == [
        f"opmask-train: stopped by {sig.name} at iteration {it}; checkpoint {path}; "
        "continue with --resume"
    ]
    assert it < MAX_ITER - 1 and max(_iterations(run)) == it
    if procs == 2:
        assert "rank 1 of 2" in (run / "log.txt.rank1").read_text()
    done = _resume(run, datasets_root, tmp_path, *flags, opts=NO_EVAL)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Resumed from {path}" in (run / "log.txt").read_text()
    assert _iterations(run) == list(range(MAX_ITER))  # no step lost, none twice
    assert load_verified(str(run / "models" / "model_final.pth"))["iteration"] == MAX_ITER - 1


@pytest.mark.slow
def test_second_sigint_aborts_at_once_in_one_line(datasets_root, tmp_path):
    run = tmp_path / "run"
    proc = _start(_cmd(run, opts=NO_EVAL, script=SLOW_STOPPING_STEP), datasets_root, tmp_path)
    _wait(lambda: len(_iterations(run)) >= 1, proc, "one iteration")
    os.killpg(proc.pid, signal.SIGINT)
    _wait((tmp_path / "marker").exists, proc, "the stop's slow step")
    start = time.time()
    os.killpg(proc.pid, signal.SIGINT)
    rc, err = _end(proc, tmp_path)
    assert time.time() - start < 15  # not after the step's minute
    assert rc == exit_codes.INTERRUPTED
    assert err == [
        "opmask-train: aborted by a second SIGINT; nothing more saved; "
        "--resume continues from the start"
    ]
    assert not (run / "models").exists()  # no checkpoint at the stop
    assert (run / "config.yaml").is_file() and not (run / "run.lock").exists()


@pytest.mark.slow
def test_stop_during_the_evaluation_says_it_was_not_finished(datasets_root, tmp_path):
    run = tmp_path / "run"
    opts = ["DATASETS.TEST", "('shapes_val',)", "VIS_PERIOD", "0", "SOLVER.MAX_ITER", "3"]
    opts += ["SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "(2,)"]
    proc = _start(_cmd(run, opts=opts, script=SLOW_EVALUATION), datasets_root, tmp_path)
    _wait((tmp_path / "marker").exists, proc, "the evaluation")
    os.killpg(proc.pid, signal.SIGTERM)
    rc, err = _end(proc, tmp_path)
    final = run / "models" / "model_final.pth"
    assert rc == exit_codes.TERMINATED
    assert err == [
        "opmask-train: stopped by SIGTERM during the evaluation, which was not finished; "
        f"checkpoint {final} is on disk; --resume runs the evaluation again"
    ]
    assert load_verified(str(final))["iteration"] == 2
    assert not (run / "inference" / "shapes_val" / "results.json").exists()
    done = _resume(run, datasets_root, tmp_path, opts=opts)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((run / "inference" / "shapes_val" / "results.json").read_text())
    assert "bbox" in results and _iterations(run) == [0, 1, 2]  # evaluated, not trained again


@pytest.mark.slow
def test_a_bad_image_on_one_of_two_ranks_is_one_line_and_keeps_the_run(tmp_path):
    """A truncated training image (its header intact, so the up-front check passes) fails the
    rank that decodes it; the other rank loses its peer and says nothing."""
    root = tmp_path / "datasets"
    generate(str(root / "shapes"), seed=3, num_train=4, num_val=2, image_size=96)
    images = sorted((root / "shapes" / "train" / "images").glob("*.png"))
    bad = images[1]
    bad.write_bytes(bad.read_bytes()[:200])
    run = tmp_path / "run"
    proc = _start(_cmd(run, "--num-gpus", "2", opts=NO_EVAL), str(root), tmp_path)
    rc, err = _end(proc, tmp_path)
    assert rc == exit_codes.ERROR, err
    assert len(err) == 1 and err[0].startswith("opmask-train: error: "), err
    assert bad.name in err[0] and "Traceback" not in "\n".join(err)
    assert (run / "log.txt").is_file() and (run / "log.txt.rank1").is_file()
    assert (run / "config.yaml").is_file() and not (run / "run.lock").exists()
