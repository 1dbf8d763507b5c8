"""The run folder: one process at a time (lock), resume never destroys, config recovery, SEED,
a failed start leaves nothing behind, files follow the umask. Real processes, real files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from opmask.config import load_config
from opmask.run.claim import LOCK_NAME, _holder_alive, claim, describe_holder
from opmask.run.folder import RunFolder
from opmask.train.checkpoint import load_verified
from tests import warm
from tests.conftest import SHAPES_OPMASK, TINY
from tests.run.test_distributed import NO_EVAL


def _cli(run, *flags, opts=()):
    return [
        sys.executable,
        "-m",
        "opmask.cli.train",
        "--config-file",
        SHAPES_OPMASK,
        "--output",
        str(run),
        *flags,
        *TINY,
        *NO_EVAL,
        *opts,
    ]


def _run(args, root, cwd, timeout=300):
    env = dict(os.environ, OPMASK_DATASETS=root, PYTHONUNBUFFERED="1")
    return warm.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _snapshot(folder) -> dict:
    """Every file under ``folder`` -> its SHA-256."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _iterations(run) -> list[int]:
    out = []
    for line in open(run / "metrics.json"):
        try:
            out.append(json.loads(line)["iteration"])
        except (json.JSONDecodeError, KeyError):
            pass
    return out


@pytest.fixture(scope="module")
def finished(datasets_root, tmp_path_factory):
    """A finished 6-iteration run (checkpoints at iteration 2 and final) to copy from."""
    work = tmp_path_factory.mktemp("finished")
    proc = _run(_cli(work / "run"), datasets_root, str(work))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work / "run"


@pytest.fixture
def run(finished, tmp_path):
    shutil.copytree(finished, tmp_path / "run")
    return tmp_path / "run"


# ---------------------------------------------------------------- resume never destroys
@pytest.mark.slow
def test_hashes_gone_and_checkpoints_damaged_refuses_and_changes_nothing(
    run, datasets_root, tmp_path
):
    models = run / "models"
    for h in models.glob("*.sha256"):
        h.unlink()
    for ck in models.glob("*.pth"):
        ck.write_bytes(ck.read_bytes()[:1000])  # e.g. an interrupted copy
    before = _snapshot(run)
    proc = _run(_cli(run, "--resume", opts=["SOLVER.MAX_ITER", "8"]), datasets_root, str(tmp_path))
    assert proc.returncode == 1, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("opmask-train: error: no usable checkpoint"), err
    for name in ("model_final.pth", "model_0000002.pth"):
        assert f"{name}: refused to load" in err[0]
    assert "starting from scratch" not in proc.stdout + proc.stderr
    assert _snapshot(run) == before  # every checkpoint byte, config.yaml, logs unchanged


def test_hashes_gone_valid_checkpoints_warn_and_resume(run, datasets_root, tmp_path):
    for h in (run / "models").glob("*.sha256"):
        h.unlink()
    old = {p.name: p.read_bytes() for p in (run / "models").glob("*.pth")}
    proc = _run(_cli(run, "--resume", opts=["SOLVER.MAX_ITER", "8"]), datasets_root, str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert "model_final.pth has no .sha256 hash file" in out and "used unverified" in out
    assert "Resumed from" in out and "(iteration 5)" in out
    assert "starting from scratch" not in out
    assert _iterations(run) == list(range(8))
    assert (run / "models" / "model_0000002.pth").read_bytes() == old["model_0000002.pth"]


@pytest.mark.slow
def test_corrupt_config_is_recovered_from_the_newest_checkpoint(run, datasets_root, tmp_path):
    seed = load_verified(str(run / "models" / "model_final.pth"))["meta"]["config"]
    (run / "config.yaml").write_text("SOLVER: [unclosed\n")
    proc = _run(_cli(run, "--resume", opts=["SOLVER.MAX_ITER", "7"]), datasets_root, str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "recovered the run's config from" in proc.stderr and "model_final.pth" in proc.stderr
    assert "SEED: 1" in seed and "SEED: 1" in (run / "config.yaml").read_text()
    # a change the saved config forbids is still refused after recovery
    (run / "config.yaml").unlink()
    bad = _run(
        _cli(run, "--resume", opts=["MODEL.ROI_MASK_HEAD.NUM_CONV", "3"]),
        datasets_root,
        str(tmp_path),
    )
    assert bad.returncode == 1 and "MODEL.ROI_MASK_HEAD.NUM_CONV" in bad.stderr


def test_resume_with_another_seed_is_refused_and_config_kept(run, datasets_root, tmp_path):
    before = _snapshot(run)
    proc = _run(_cli(run, "--resume", opts=["SEED", "7"]), datasets_root, str(tmp_path))
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "SEED (saved 1, now 7)" in err[0], err
    assert _snapshot(run) == before


# ---------------------------------------------------------------- a failed start
@pytest.mark.slow
def test_failed_start_leaves_nothing_and_the_same_command_then_works(datasets_root, tmp_path):
    out = tmp_path / "out"
    run = out / "deep" / "run"
    bad = _run(_cli(run, opts=["DATASETS.TEST", "('nope_val',)"]), datasets_root, str(tmp_path))
    assert bad.returncode == 1 and "nope_val" in bad.stderr, bad.stderr[-2000:]
    assert not (out / "deep").exists()  # the folders this start made are gone too
    good = _run(_cli(run, opts=["SOLVER.MAX_ITER", "1"]), datasets_root, str(tmp_path))
    assert good.returncode == 0, good.stderr[-2000:]
    assert not (run / LOCK_NAME).exists()  # released at the end


# ---------------------------------------------------------------- one process per folder
@pytest.mark.slow
def test_second_process_fails_at_once_then_kill_9_is_taken_over(datasets_root, tmp_path):
    run = tmp_path / "run"
    opts = ["SOLVER.MAX_ITER", "100000", "SOLVER.CHECKPOINT_PERIOD", "1", "SOLVER.MAX_TO_KEEP", "2"]
    env = dict(os.environ, OPMASK_DATASETS=datasets_root, PYTHONUNBUFFERED="1")
    holder = warm.Popen(_cli(run, opts=opts), env=env, cwd=str(tmp_path), stdout=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while not list((run / "models").glob("model_*.pth")):
            assert holder.poll() is None and time.time() < deadline, "training did not start"
            time.sleep(0.1)
        t0 = time.time()
        # also with a bad input: the busy folder is named first, before the (slower) validation
        bad = opts + ["MODEL.WEIGHTS", str(tmp_path / "missing.pth")]
        second = _run(_cli(run, "--resume", opts=bad), datasets_root, str(tmp_path), timeout=60)
        assert second.returncode == 1
        err = second.stderr.strip().splitlines()
        assert len(err) == 1 and "is in use by" in err[0], err
        assert f"host {socket.gethostname()}, PID {holder.pid}," in err[0]
        # at once: it does not wait for the holder, which trains on (importing torch takes the
        # seconds on the shared test machine)
        assert time.time() - t0 < 120 and holder.poll() is None
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    fragments = [run / "models" / ".tmp-model_0009999.pth.1.dead", run / ".tmp-config.yaml.1.x"]
    for f in fragments:  # what a writer killed mid-write leaves
        f.write_bytes(b"\0" * 4096)
    last = RunFolder(run).checkpointer().load_latest_valid()[1]["iteration"]
    third = _run(
        _cli(run, "--resume", opts=["SOLVER.MAX_ITER", str(last + 3)]),
        datasets_root,
        str(tmp_path),
    )
    assert third.returncode == 0, third.stderr[-2000:]
    assert f"taking over the stale lock of host {socket.gethostname()}, PID {holder.pid}," in (
        third.stderr
    )
    assert "removed" in third.stderr and "temporary fragment" in third.stderr
    leftovers = [p for p in run.rglob(".tmp-*")]
    assert leftovers == [] and not (run / LOCK_NAME).exists()
    assert f"Resumed from {run / 'models'}" in (run / "log.txt").read_text()


# ---------------------------------------------------------------- permissions
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o007, 0o660)])
def test_files_follow_the_umask(shapes_env, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        cfg = load_config(SHAPES_OPMASK, TINY)
        run = tmp_path / "run"
        cfg, lock = claim(cfg, str(run), resume=False, eval_only=False)
        RunFolder(run).checkpointer().save("model_0000000.pth", {"model": {}, "iteration": 0})
        lock.release()
    finally:
        os.umask(old)
    for name in ("config.yaml", "models/model_0000000.pth", "models/model_0000000.pth.sha256"):
        assert (run / name).stat().st_mode & 0o777 == mode, name
    assert (run / "models" / "last_checkpoint").stat().st_mode & 0o777 == mode


def test_holder_record_where_the_file_system_has_no_locks():
    """Without working locks the record decides: a live PID on this host, or another host,
    holds the folder; a PID gone on this host, or garbage, does not."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = socket.gethostname()
    rec = lambda host, pid: json.dumps({"host": host, "pid": pid, "since": "t"})  # noqa: E731
    assert _holder_alive(rec(here, os.getpid()))
    assert not _holder_alive(rec(here, dead.pid))
    assert _holder_alive(rec("other-node", dead.pid))
    assert not _holder_alive("") and not _holder_alive("[1]")
    assert describe_holder(rec("n1", 7)) == "host n1, PID 7, since t"
