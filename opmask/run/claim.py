"""Claiming a run folder: where it is, the lock that gives it to one process, the settled config
(seed fixed, a resume checked against the saved config) written once every input was checked,
and what a failed start must leave behind (nothing). Paths come from :class:`RunFolder`."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import tempfile
import time

import numpy as np
import yaml
from fvcore.common.config import CfgNode

from ..config import config_diff
from ..config.checks import RESUME_SAFE_KEYS, lookup
from ..data.catalog import short_name
from ..utils.errors import OPMaskInputError
from ..utils.fs import TMP_PREFIX, atomic_write_bytes
from .folder import RunFolder

logger = logging.getLogger("opmask.run_dir")

LOCK_NAME = RunFolder.LOCK


class RunFolderError(OPMaskInputError, RuntimeError):
    """The run folder cannot be used as asked (exists, unwritable, incompatible config)."""


def run_folder(cfg, exp_id: str, output_dir: str | None = None) -> str:
    """``OUTPUT_DIR/EXP.FOLDER_NAME/{dataset}_{exp_id}`` unless ``output_dir`` is given."""
    if output_dir:
        return output_dir
    names = cfg.DATASETS.TRAIN or cfg.DATASETS.TEST
    dataset = short_name(names[0]) if names else "nodata"
    return os.path.join(cfg.OUTPUT_DIR, cfg.EXP.FOLDER_NAME, f"{dataset}_{exp_id}")


def _check_writable(folder: str) -> None:
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise RunFolderError(f"output folder {folder} is not writable: {e.strerror or e}") from None


def saved_config(run_dir: str) -> CfgNode | None:
    """``config.yaml`` of the run, None when absent.

    Raises:
        RunFolderError: it exists but cannot be read as a config (corrupt).
    """
    path = RunFolder(run_dir).config
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
        if not isinstance(data, dict) or "SEED" not in data:
            raise ValueError("not a config mapping")
        return CfgNode(data)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RunFolderError(f"{path} is corrupt ({reason})") from None


def incompatible_keys(old: CfgNode, new: CfgNode) -> list[str]:
    return [k for k in config_diff(new, old) if k not in RESUME_SAFE_KEYS]


def _value(cfg: CfgNode, key: str):
    text = repr(lookup(cfg, key, None))
    return text if len(text) <= 40 else text[:37] + "..."


def _resume_config(run_dir: str) -> tuple[CfgNode | None, str]:
    """The config a resume must match: ``config.yaml``, or the newest usable checkpoint's stored
    config when that file is missing or corrupt; and a note saying so ('' when nothing to say).

    Raises:
        CheckpointError: ``models/`` holds checkpoint files and none is usable.
    """
    try:
        old, problem = saved_config(run_dir), "missing"
    except RunFolderError as e:
        old, problem = None, str(e)
    found = RunFolder(run_dir).latest_checkpoint()
    if old is not None or found is None:
        note = "" if problem == "missing" else f"{problem}; no checkpoint to recover it from"
        return old, note
    path, state = found
    note = f"{RunFolder.CONFIG} {problem}: recovered the run's config from {path}"
    return CfgNode.load_cfg(state["meta"]["config"]), note


def settle_config(cfg: CfgNode, run_dir: str, *, resume: bool) -> CfgNode:
    """Fix the seed (the saved one, else drawn) and refuse a resume that changes unsafe keys."""
    old, note = _resume_config(run_dir) if resume else (_saved_or_none(run_dir), "")
    cfg = cfg.clone()
    cfg.defrost()
    if cfg.SEED < 0:
        cfg.SEED = (
            int(old.SEED)
            if old is not None and int(old.get("SEED", -1)) >= 0
            else int(np.random.SeedSequence().entropy % (2**31))
        )
    cfg.freeze()
    bad = incompatible_keys(old, cfg) if resume and old is not None else []
    if bad:
        diffs = ", ".join(f"{k} (saved {_value(old, k)}, now {_value(cfg, k)})" for k in bad)
        raise RunFolderError(
            f"cannot resume {run_dir}: config differs from the saved one in {diffs} "
            f"(nothing was changed{'; ' + note if note else ''})"
        )
    if note:
        logger.warning("%s", note)
    return cfg


def _saved_or_none(run_dir: str) -> CfgNode | None:
    try:
        return saved_config(run_dir)
    except RunFolderError:
        return None


def claim(
    cfg: CfgNode, run_dir: str, *, resume: bool, eval_only: bool
) -> tuple[CfgNode, "RunLock"]:
    """Check the folder against the request, lock it, fix the seed, write ``config.yaml``.

    Call it only after every other input was validated: it is the first step that writes.
    Only the main process of machine 0 claims; other ranks use :func:`settle_config`.
    The caller releases the returned lock (``lock.release()``), or ``lock.abandon()`` after a
    failed start (removes what this start created in a new folder).

    Raises:
        RunFolderError: the folder holds an earlier run and neither ``resume`` nor ``eval_only``
            was asked; it is in use by another process; it is unwritable; or ``resume`` meets
            an incompatible config.
        CheckpointError: ``resume`` and ``models/`` holds checkpoints of which none is usable.
    """
    occupied = os.path.isdir(run_dir) and bool(os.listdir(run_dir))
    if occupied and not (resume or eval_only):
        raise RunFolderError(
            f"run folder {run_dir} already holds a run; pass --resume to continue it, or choose "
            "another --exp-id (nothing was changed)"
        )
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise RunFolderError(f"output folder {run_dir} is a file, not a folder")
    top = _first_missing(run_dir)
    _check_writable(run_dir)
    lock = RunLock(run_dir, created=top, fresh=not occupied)
    try:
        lock.acquire()
        cfg = settle_config(cfg, run_dir, resume=resume)
        if not eval_only:
            atomic_write_bytes(RunFolder(run_dir).config, cfg.dump().encode())
    except BaseException:
        lock.abandon()
        raise
    return cfg, lock


def _first_missing(path: str) -> str | None:
    """The outermost folder of ``path`` that does not exist yet (what creating it would add)."""
    path, top = os.path.abspath(path), None
    while not os.path.exists(path):
        top, parent = path, os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return top


# ---------------------------------------------------------------------- one process per folder
def _holder() -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def describe_holder(text: str) -> str:
    """``host H, PID P, SLURM job J, since T`` from a lock file's content."""
    try:
        h = json.loads(text)
        job = f", SLURM job {h['slurm_job_id']}" if h.get("slurm_job_id") else ""
        return f"host {h['host']}, PID {h['pid']}{job}, since {h['since']}"
    except (ValueError, KeyError, TypeError):
        return "an unknown process"


def _holder_alive(text: str) -> bool:
    """Whether a lock file's holder may still run: on this host, its PID exists; elsewhere we
    cannot tell, so yes. Used only where the file system refuses locks."""
    try:
        h = json.loads(text)
    except ValueError:
        return False
    if not isinstance(h, dict):
        return False
    if h.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(h["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, TypeError, ValueError):
        return True
    return True


class RunLock:
    """Exclusive lock on a run folder: ``RUN/run.lock`` holds a POSIX lock (released by the
    kernel when the holder dies, never inherited by its children) and names its holder.

    Acquiring removes the ``.tmp-*`` fragments that dead writers left in the folder.
    """

    def __init__(self, run_dir: str, *, created: str | None = None, fresh: bool = False):
        self.run_dir, self.path = run_dir, RunFolder(run_dir).lock
        self.created, self.fresh, self.fd = created, fresh, None

    def acquire(self, wait_s: float = 0.0) -> "RunLock":
        """Take the lock; wait up to ``wait_s`` seconds for a live holder.

        Raises:
            RunFolderError: another live process holds it (named in the message).
        """
        deadline = time.time() + wait_s
        while not self._try():
            if time.time() >= deadline:
                raise self._in_use()
            time.sleep(0.5)
        previous = os.pread(self.fd, 4096, 0).decode(errors="replace")
        if previous.strip():
            logger.warning(
                "run folder %s: taking over the stale lock of %s (no longer running)",
                self.run_dir,
                describe_holder(previous),
            )
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps(_holder()).encode(), 0)
        os.fsync(self.fd)
        remove_temp_fragments(self.run_dir)
        return self

    def ensure_free(self) -> None:
        """Fail at once, naming the holder, if another live process holds the folder; takes
        nothing (checked before the slower input validation; ``acquire`` decides later)."""
        if not os.path.isfile(self.path):
            return
        if not self._try():
            raise self._in_use()
        os.close(self.fd)  # let go at once: only a probe
        self.fd = None

    def _in_use(self) -> RunFolderError:
        return RunFolderError(
            f"run folder {self.run_dir} is in use by {describe_holder(self._peek())} "
            f"(lock file {self.path}); wait for it to end or stop it first"
        )

    def _try(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EAGAIN):
                os.close(fd)
                return False
            if _holder_alive(os.pread(fd, 4096, 0).decode(errors="replace")):
                os.close(fd)  # a file system without locks: trust the holder's record
                return False
        try:
            same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            same = False  # the previous holder removed it between our open and lock
        if not same:
            os.close(fd)
            return self._try()
        self.fd = fd
        return True

    def _peek(self) -> str:
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                return f.read(4096)
        except OSError:
            return ""

    def release(self) -> None:
        """Remove the lock file and let go (the file first: no one locks a stale inode)."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = None

    def abandon(self) -> None:
        """After a failed start: in a folder this start made or found empty and that holds no
        checkpoint, remove everything it wrote; then release."""
        models = RunFolder(self.run_dir).models
        if self.fresh and not os.path.isdir(models) and self.fd is not None:
            for name in os.listdir(self.run_dir):
                if name != LOCK_NAME:
                    _remove(os.path.join(self.run_dir, name))
        self.release()
        if self.fresh and self.created and not os.path.isdir(models):
            _remove_empty_up_to(self.run_dir, self.created)

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def _remove_empty_up_to(folder: str, top: str) -> None:
    """rmdir ``folder`` and its parents up to ``top`` while they are empty."""
    folder, top = os.path.abspath(folder), os.path.abspath(top)
    while folder.startswith(top):
        try:
            os.rmdir(folder)
        except OSError:
            return
        if folder == top:
            return
        folder = os.path.dirname(folder)


def remove_temp_fragments(run_dir: str) -> int:
    """Delete the ``.tmp-*`` files of interrupted writes under ``run_dir`` (call it only while
    holding the lock: then no live writer owns one). Returns the bytes freed."""
    freed, count = 0, 0
    for folder, _, files in os.walk(run_dir):
        for name in files:
            if name.startswith(TMP_PREFIX):
                path = os.path.join(folder, name)
                with contextlib.suppress(OSError):
                    size = os.path.getsize(path)
                    os.unlink(path)
                    freed, count = freed + size, count + 1
    if count:
        logger.warning(
            "run folder %s: removed %d temporary fragment(s) of interrupted writes (%.1f MB)",
            run_dir,
            count,
            freed / 2**20,
        )
    return freed
