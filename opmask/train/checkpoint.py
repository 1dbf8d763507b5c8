"""Checkpoints that survive crashes: atomic writes, hashes verified on load, safe reading.

A checkpoint folder holds periodic checkpoints, a final one, a pointer file naming the newest, and
``NAME.sha256`` beside each checkpoint; their names (Detectron2's) are given by the run folder's
layout owner (:class:`CheckpointNames`, ``opmask.run.folder``). A file is written to a
temporary name, fsynced, then renamed, and the pointer is updated only afterwards, so a crash at
any moment leaves the previous checkpoint usable.

``save_async`` takes the checkpoint without stopping training for the write: it copies the state
to CPU memory at once (the step boundary; the caller may change its tensors as soon as it
returns) and a background thread serialises and writes it in the same order as ``save`` (data
durable first, then hash, rename, pointer). The next checkpoint and ``wait``/``close``
wait for it. The copy costs one more checkpoint's size of CPU memory while the write runs.
"""

from __future__ import annotations

import copy as copy_module
import hashlib
import io
import logging
import os
import random
import threading

import numpy as np
import torch

from ..utils.errors import OPMaskInputError
from ..utils.fs import atomic_write_bytes, durable_tmp, publish
from ..utils.safeload import refusal_reason
from .checkpoint_names import CheckpointNames

logger = logging.getLogger(__name__)

HASH_SUFFIX = ".sha256"  # a checkpoint file's SHA-256 lives in NAME + HASH_SUFFIX beside it


class CheckpointError(OPMaskInputError, RuntimeError):
    """No usable checkpoint, or an incompatible one."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint's tensors do not fit the model its config builds (the config was changed)."""


def load_model_state(model: torch.nn.Module, state: dict, path: str) -> None:
    """Load a run's checkpoint ``state`` (its ``"model"`` dict) into a freshly built ``model``,
    strictly: every key present on both sides, every shape equal.

    Raises:
        CheckpointMismatchError: one line naming the first mismatched keys and their shapes,
            e.g. "checkpoint RUN/models/model_final.pth does not match the config:
            mask_head.layers.0.0.weight (32, 256, 3, 3) in the checkpoint vs (16, 256, 3, 3) in
            the model; 12 more".
    """
    own = model.state_dict()
    problems = []
    for key, value in own.items():
        if key not in state:
            problems.append(f"{key} {tuple(value.shape)} in the model, not in the checkpoint")
        elif not isinstance(state[key], torch.Tensor):
            problems.append(
                f"{key} is a {type(state[key]).__name__} in the checkpoint, not a tensor"
            )
        elif tuple(state[key].shape) != tuple(value.shape):
            problems.append(
                f"{key} {tuple(state[key].shape)} in the checkpoint vs {tuple(value.shape)} "
                "in the model"
            )
    problems += [f"{k} in the checkpoint, not in the model" for k in state if k not in own]
    if problems:
        more = f"; {len(problems) - 2} more" if len(problems) > 2 else ""
        raise CheckpointMismatchError(
            f"checkpoint {path} does not match the config: {'; '.join(problems[:2])}{more}"
        )
    model.load_state_dict(state)


def capture_rng() -> dict:
    """Python, numpy, torch CPU and CUDA generator states, in weights-only-loadable types."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    """Saves and finds checkpoints in one folder, named by ``names``; ``max_to_keep`` periodic
    files (0: all)."""

    def __init__(self, folder: str, names: CheckpointNames, max_to_keep: int = 0):
        self.folder, self.names, self.max_to_keep = folder, names, max_to_keep
        self.protected: set[str] = set()  # never deleted by retention (the resume source)
        self._writer: threading.Thread | None = None  # the background write in flight
        self._error: BaseException | None = None  # its failure, raised by the next wait()

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def save(self, name: str, state: dict) -> str:
        """Write ``state`` now; returns when it is durable (after any background write)."""
        self.wait()
        return self._write(name, state)

    def save_async(self, name: str, state: dict) -> str:
        """Copy ``state`` to CPU memory and write it in a background thread; returns the path
        it will have. The caller may change the state's tensors as soon as this returns."""
        self.wait()
        snap = cpu_snapshot(state)
        self._writer = threading.Thread(
            target=self._write_in_background, args=(name, snap), name=f"checkpoint {name}"
        )
        self._writer.start()  # not a daemon: the interpreter waits for it at exit
        return self.path(name)

    def wait(self) -> None:
        """Block until the background write (if any) is durable; raise its failure."""
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        if self._error is not None:
            err, self._error = self._error, None
            raise CheckpointError(f"background checkpoint write failed: {err}") from err

    def close(self) -> None:
        """``wait``, but a failure is logged, not raised (for exits already under way)."""
        try:
            self.wait()
        except CheckpointError as e:
            logger.error("%s", e)

    def _write_in_background(self, name: str, state: dict) -> None:
        try:
            self._write(name, state)
        except BaseException as e:  # reported by the training thread's next wait()
            self._error = e

    def _write(self, name: str, state: dict) -> str:
        """Data durable under a temporary name, then its hash, the rename, the pointer."""
        os.makedirs(self.folder, exist_ok=True)
        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getvalue()
        tmp = durable_tmp(self.path(name), data)
        try:
            atomic_write_bytes(
                self.path(name + HASH_SUFFIX), hashlib.sha256(data).hexdigest().encode()
            )
        except BaseException:
            os.unlink(tmp)
            raise
        publish(tmp, self.path(name))
        atomic_write_bytes(self.path(self.names.pointer), name.encode())
        logger.info("Saved checkpoint %s", self.path(name))
        self._retain()
        return self.path(name)

    def _retain(self) -> None:
        if self.max_to_keep <= 0:
            return
        periodic = sorted(
            (n for n in os.listdir(self.folder) if self.names.iteration_of(n) is not None),
            key=self.names.iteration_of,
        )
        for name in periodic[: -self.max_to_keep]:
            if self.path(name) in self.protected:
                continue
            for p in (self.path(name), self.path(name + HASH_SUFFIX)):
                if os.path.exists(p):
                    os.unlink(p)

    def last_name(self) -> str | None:
        """The file the pointer names (e.g. ``model_0000099.pth``), or None."""
        return self.names.pointed(self.folder)

    def candidates(self) -> list[str]:
        """Checkpoint files (``*.pth``), newest first (:meth:`CheckpointNames.candidates`)."""
        return self.names.candidates(self.folder)

    def load_latest_valid(self) -> tuple[str, dict] | None:
        """The newest usable checkpoint: its hash verifies, or it has no hash file but a valid
        container (used after a warning naming it). Unusable ones are reported and skipped.

        Returns:
            ``(path, state)``, or None when the folder holds no checkpoint file at all.

        Raises:
            CheckpointError: there are checkpoint files but none is usable; the message lists
                each file and why (nothing is changed, nothing starts over them).
        """
        problems = []
        for path in self.candidates():
            try:
                state = load_verified(path, allow_unhashed=True)
            except CheckpointError as e:
                problems.append(str(e).replace(self.folder + os.sep, ""))
                continue
            for problem in problems:
                logger.warning("Skipping checkpoint: %s", problem)
            return path, state
        if problems:
            raise CheckpointError(
                f"no usable checkpoint in {self.folder} (refusing to start over "
                f"{len(problems)} file(s)): " + "; ".join(problems)
            )
        return None


def cpu_snapshot(obj):
    """A deep copy of a checkpoint state whose tensors are new CPU tensors with the same values,
    dtype, shape and strides. Every object referenced twice (a tensor, a tuple shared by the
    optimizer's groups) is copied once and shared likewise, so ``torch.save`` writes the same
    bytes for the copy as for the original."""
    memo: dict[int, object] = {}
    todo = [obj]
    while todo:
        x = todo.pop()
        if isinstance(x, torch.Tensor):
            if id(x) not in memo:
                memo[id(x)] = x.detach().to("cpu", copy=True)
        elif isinstance(x, dict):
            todo.extend(x.values())
        elif isinstance(x, (list, tuple)):
            todo.extend(x)
    return copy_module.deepcopy(obj, memo)  # tensors come from memo; the rest is copied


def load_verified(path: str, *, allow_unhashed: bool = False) -> dict:
    """Read a checkpoint after checking its recorded SHA-256; never unrestricted unpickling.

    With ``allow_unhashed``, a file without ``.sha256`` is accepted (with a warning naming it)
    when it is a readable weights-only checkpoint holding ``model`` and ``iteration``.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read it: {e.strerror or e}") from None
    unhashed = allow_unhashed and not os.path.lexists(path + HASH_SUFFIX)
    if not unhashed:
        try:
            with open(path + HASH_SUFFIX, encoding="utf-8") as f:
                expected = f.read().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path}: cannot read its hash file: {e}") from None
        if hashlib.sha256(data).hexdigest() != expected:
            raise CheckpointError(f"{path}: content does not match its recorded hash (corrupt)")
    state = load_safely(io.BytesIO(data), path)
    if not (
        isinstance(state, dict)
        and isinstance(state.get("model"), dict)
        and isinstance(state.get("iteration"), int)
    ):
        raise CheckpointError(f"{path}: not a checkpoint (no 'model' and 'iteration')")
    if unhashed:
        logger.warning(
            "%s has no .sha256 hash file; its container is a valid checkpoint, so it is used "
            "unverified",
            path,
        )
    return state


def load_safely(f, name: str) -> dict:
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for code-carrying pickles, others for garbage
        raise CheckpointError(f"{name}: refused to load: {refusal_reason(e)}") from None
