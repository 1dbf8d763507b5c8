"""Checkpoints: atomic, verified, safe; exact resume; crash and signal behaviour."""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch

from opmask.config import load_config
from opmask.run.folder import RunFolder
from opmask.run.spawn import launch
from opmask.train.checkpoint import Checkpointer, CheckpointError, load_verified
from opmask.train.loop import train
from tests import warm
from tests.conftest import REPO, SHAPES_OPMASK, TINY
from tests.run.test_distributed import NO_EVAL

STATE = {"model": {"w": torch.arange(6.0)}, "iteration": 0}


def _state(it):
    return {**STATE, "iteration": it}


# ---------------------------------------------------------------- the file layer
def test_newest_corrupt_checkpoint_falls_back_with_warning(tmp_path, caplog):
    ck = Checkpointer(str(tmp_path), RunFolder.CHECKPOINTS)
    for it in (1, 2, 3):
        ck.save(f"model_{it:07d}.pth", _state(it))
    newest = tmp_path / "model_0000003.pth"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    newest.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        path, state = ck.load_latest_valid()
    assert state["iteration"] == 2 and path.endswith("model_0000002.pth")
    assert "model_0000003.pth" in caplog.text and "corrupt" in caplog.text
    (tmp_path / "model_0000002.pth").write_bytes(b"truncated")  # also truncate the next one
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        path, state = ck.load_latest_valid()
    assert state["iteration"] == 1 and "model_0000002.pth" in caplog.text


def test_code_execution_payload_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    ck = Checkpointer(str(tmp_path), RunFolder.CHECKPOINTS)
    ck.save("model_0000001.pth", _state(1))  # gives a valid .sha256 to impersonate
    evil = pickle.dumps({"model": Payload()})
    (tmp_path / "model_0000001.pth").write_bytes(evil)
    import hashlib

    (tmp_path / "model_0000001.pth.sha256").write_text(hashlib.sha256(evil).hexdigest())
    with pytest.raises(CheckpointError, match="refused to load"):
        load_verified(str(tmp_path / "model_0000001.pth"))
    assert not marker.exists()


def test_keep_last_n_across_restarts_never_deletes_resume_source(tmp_path):
    ck = Checkpointer(str(tmp_path), RunFolder.CHECKPOINTS, max_to_keep=2)
    for it in range(1, 5):
        ck.save(f"model_{it:07d}.pth", _state(it))
    assert sorted(p.name for p in tmp_path.glob("model_*.pth")) == [
        "model_0000003.pth",
        "model_0000004.pth",
    ]
    # a restart resumes from 3 (4 is corrupt); 3 is protected while later saves rotate
    (tmp_path / "model_0000004.pth").write_bytes(b"x")
    ck2 = Checkpointer(str(tmp_path), RunFolder.CHECKPOINTS, max_to_keep=2)
    path, _ = ck2.load_latest_valid()
    ck2.protected.add(path)
    for it in range(5, 8):
        ck2.save(f"model_{it:07d}.pth", _state(it))
    names = sorted(p.name for p in tmp_path.glob("model_*.pth"))
    assert names == ["model_0000003.pth", "model_0000006.pth", "model_0000007.pth"]
    assert not (tmp_path / "model_0000004.pth.sha256").exists()


def test_last_checkpoint_only_names_complete_files(tmp_path, monkeypatch):
    ck = Checkpointer(str(tmp_path), RunFolder.CHECKPOINTS)
    ck.save("model_0000001.pth", _state(1))

    import opmask.train.checkpoint as mod

    real = mod.os.replace

    def flaky_replace(src, dst):  # the disk fills up while the checkpoint itself is renamed
        if dst.endswith("model_0000002.pth"):
            raise OSError("disk full")
        return real(src, dst)

    monkeypatch.setattr(mod.os, "replace", flaky_replace)
    with pytest.raises(OSError):
        ck.save("model_0000002.pth", _state(2))
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    assert ck.load_latest_valid()[1]["iteration"] == 1


def test_all_unusable_raises_listing_each_file_and_why(tmp_path):
    ck = Checkpointer(str(tmp_path), RunFolder.CHECKPOINTS)
    for it in (1, 2):
        ck.save(f"model_{it:07d}.pth", _state(it))
    (tmp_path / "model_0000002.pth").write_bytes(b"cut")
    (tmp_path / "model_0000001.pth.sha256").unlink()
    (tmp_path / "model_0000001.pth").write_bytes(b"not a zip")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(CheckpointError) as e:
        ck.load_latest_valid()
    msg = str(e.value)
    assert msg.startswith(f"no usable checkpoint in {tmp_path} (refusing to start over 2 file")
    assert "model_0000002.pth: content does not match its recorded hash" in msg
    assert "model_0000001.pth: refused to load" in msg
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert (
        Checkpointer(str(tmp_path / "empty"), RunFolder.CHECKPOINTS).load_latest_valid() is None
    )  # nothing: fresh


def test_unhashed_valid_checkpoint_is_used_after_a_warning(tmp_path, caplog):
    ck = Checkpointer(str(tmp_path), RunFolder.CHECKPOINTS)
    ck.save("model_0000001.pth", _state(1))
    ck.save("model_final.pth", _state(2))
    for p in tmp_path.glob("*.sha256"):
        p.unlink()
    (tmp_path / "last_checkpoint").unlink()  # copied without it: model_final is still first
    with caplog.at_level(logging.WARNING):
        path, state = ck.load_latest_valid()
    assert path.endswith("model_final.pth") and state["iteration"] == 2
    assert "model_final.pth has no .sha256 hash file" in caplog.text
    with pytest.raises(CheckpointError, match="cannot read its hash file"):
        load_verified(path)  # the strict reader still insists on the hash


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        Checkpointer(str(tmp_path), RunFolder.CHECKPOINTS).save("model_0000001.pth", _state(1))
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert set(modes.values()) == {0o640}, modes


# ---------------------------------------------------------------- exact resume
def _losses(run):
    out = []
    for line in open(run / "metrics.json"):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # torn by a kill; purged on resume
            pass
    return out


def _final_params(run):
    return load_verified(str(run / "models" / "model_final.pth"))["model"]


@pytest.mark.slow
@pytest.mark.parametrize("procs", [1, 2])
def test_resume_is_exact(shapes_env, tmp_path, procs):
    def go(run, max_iter, resume=False):
        cfg = load_config(SHAPES_OPMASK, TINY + NO_EVAL + ["SOLVER.MAX_ITER", str(max_iter)])
        if procs == 1:
            train(cfg, RunFolder(str(run)), resume=resume)
        else:
            flag = "resume" if resume else "same"
            assert (
                launch(
                    _resume_worker,
                    (cfg.dump(), str(run), flag),
                    num_procs=2,
                    device="cpu",
                    timeout_min=5,
                )
                == 0
            )

    go(tmp_path / "a", 6)
    go(tmp_path / "b", 3)
    go(tmp_path / "b", 6, resume=True)
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    keys = ["total_loss", "loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"]
    assert [m["iteration"] for m in b] == list(range(6))
    assert [[m[k] for k in keys] for m in a] == [[m[k] for k in keys] for m in b]
    pa, pb = _final_params(tmp_path / "a"), _final_params(tmp_path / "b")
    assert all(torch.equal(pa[k], pb[k]) for k in pa)


def test_resume_purges_events_logged_after_the_checkpoint(shapes_env, tmp_path):
    """Iterations 3-5 were logged, then the run 'crashed' back to its iteration-2 checkpoint:
    after --resume, metrics.json and TensorBoard hold each step once, with the re-run values."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config(SHAPES_OPMASK, TINY + NO_EVAL + ["SOLVER.MAX_ITER", "6"])
    train(cfg, RunFolder(str(tmp_path)), resume=False)
    first = {m["iteration"]: m["total_loss"] for m in _losses(tmp_path)}
    models = tmp_path / "models"
    (models / "model_final.pth").unlink()
    (models / "last_checkpoint").write_text("model_0000002.pth")
    train(cfg, RunFolder(str(tmp_path)), resume=True)
    again = _losses(tmp_path)
    assert [m["iteration"] for m in again] == list(range(6))
    assert {m["iteration"]: m["total_loss"] for m in again} == first  # exact re-run
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("total_loss")] == list(range(6))


def _resume_worker(cfg_yaml, run_dir, flag):
    from fvcore.common.config import CfgNode

    train(CfgNode.load_cfg(cfg_yaml), RunFolder(run_dir), resume=flag == "resume")
    return 0


# ---------------------------------------------------------------- crashes and signals
def _cli(out, *extra, max_iter=200):
    return [
        sys.executable,
        "-m",
        "opmask.cli.train",
        "--config-file",
        SHAPES_OPMASK,
        "--output",
        str(out),
        *extra,
        *TINY,
        *NO_EVAL,
        "SOLVER.MAX_ITER",
        str(max_iter),
        "SOLVER.CHECKPOINT_PERIOD",
        "1",
        "SOLVER.MAX_TO_KEEP",
        "3",
    ]


def _env(root):
    return dict(os.environ, OPMASK_DATASETS=root, PYTHONUNBUFFERED="1")


def _wait_for_iteration(run, n, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (run / "metrics.json").exists() and len(_losses(run)) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("training did not start")


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume(datasets_root, tmp_path):
    """10 SIGKILLs during training and checkpoint writing (scripts/kill_stress.py is the longer
    stress run): each time the newest valid checkpoint loads and at most two checkpoint periods
    are lost (the newest write runs in the background); the final resume leaves metrics.json
    with no duplicate and no missing step."""
    script = os.path.join(REPO, "scripts", "kill_stress.py")
    proc = warm.run(
        [sys.executable, script, "--trials", "10", "--out", str(tmp_path)],
        env=_env(datasets_root),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "10/10 trials resumed from a valid checkpoint" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("procs", [1, 2])
def test_signal_requests_checkpoint_at_next_step(datasets_root, tmp_path, procs):
    run = tmp_path / "run"
    extra = ["--num-gpus", "2"] if procs == 2 else []
    proc = warm.Popen(
        _cli(run, *extra, max_iter=10000) + ["SOLVER.CHECKPOINT_PERIOD", "100000"],
        env=_env(datasets_root),
        cwd=str(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_iteration(run, 3, proc)
    target = proc.pid
    if procs == 2:  # signal one rank only (the last child); the ranks must agree
        children = subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
        ).stdout.split()
        target = int(children[-1])
    os.kill(target, signal.SIGUSR1)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-2000:]
    name = (run / "models" / "last_checkpoint").read_text()
    state = load_verified(str(run / "models" / name))
    assert name == f"model_{state['iteration']:07d}.pth"
    assert max(m["iteration"] for m in _losses(run)) == state["iteration"]
    log = (run / "log.txt").read_text()
    assert "exiting with code 75" in log
    # rank 0 writes the log: it names the signal it got, or that another rank asked
    why = "(SIGUSR1)" if procs == 1 else "(on another rank)"
    assert f"checkpoint requested {why}, written at iteration {state['iteration']}" in log
    assert state["meta"]["world_size"] == procs and len(state["rng"]) == procs


@pytest.mark.slow
def test_incompatible_resume_is_refused_naming_keys(datasets_root, tmp_path):
    run = tmp_path / "run"
    ok = warm.run(
        _cli(run, max_iter=2),
        env=_env(datasets_root),
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    bad = warm.run(
        _cli(run, "--resume", max_iter=4)
        + ["MODEL.ROI_MASK_HEAD.NUM_CONV", "3", "SOLVER.BASE_LR", "0.5"],
        env=_env(datasets_root),
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 1
    assert "MODEL.ROI_MASK_HEAD.NUM_CONV" in bad.stderr and "SOLVER.BASE_LR" in bad.stderr
    fine = warm.run(
        _cli(run, "--resume", max_iter=4),
        env=_env(datasets_root),
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert fine.returncode == 0, fine.stderr[-2000:]  # a longer MAX_ITER is harmless
