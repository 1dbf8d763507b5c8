"""One table of bad inputs against the real console commands (issue 12).

Every row must end with the row's exit code (1 bad input, 2 bad command line), exactly one line on
stderr that names the culprit, no traceback, within a timeout, and every file under the case's
work folder (run folders included) unchanged: a failed start leaves nothing behind.

Most rows run in this process through the command's ``main(argv)`` with stderr captured (starting
torch in a fresh interpreter per row would take minutes); rows with ``subprocess=True`` run the
real command in a fresh interpreter to check the exit code end to end.

Adding a row: append a :class:`Case` to ``CASES`` (or build one in a ``_*_cases()`` function).
``setup(ws)`` may create files (run-folder states, profiles, sweep files) under ``ws.tmp``; they
are snapshotted after ``setup`` and must be unchanged after the command. It returns the argv,
whose first word is the console command (``opmask-train``, ``opmask-submit``, ...).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import io
import json
import os
import pickle
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from opmask.data.coco import mask_to_rle
from tests.conftest import SHAPES_BASELINE, SHAPES_OPMASK, TINY

COMMANDS = {  # console script -> module with main(argv)
    "opmask-train": "opmask.cli.train",
    "opmask-data": "opmask.cli.data",
    "opmask-submit": "opmask_launch.submit",
    "opmask-sweep": "opmask_launch.sweep",
    "opmask-bench": "opmask.cli.bench",
    "opmask-export": "opmask.cli.export",
    "opmask-demo": "opmask.cli.demo",
}
TIMEOUT_S = 60


@dataclass
class Workspace:
    """A case's own folder: ``tmp`` (cwd of the command), ``run`` (its run folder), datasets."""

    tmp: Path
    datasets: str

    @property
    def run(self) -> Path:
        return self.tmp / "run"

    def train(self, *opts: str, flags: tuple[str, ...] = ()) -> list[str]:
        """``opmask-train`` on the tiny shapes setting, run folder ``ws.run``."""
        return [
            "opmask-train",
            "--config-file",
            SHAPES_OPMASK,
            "--output",
            str(self.run),
            *flags,
            *TINY,
            *opts,
        ]


@dataclass
class Case:
    id: str
    setup: Callable[[Workspace], list[str]]
    code: int  # expected exit code
    culprit: str  # the stderr line must contain this
    subprocess: bool = False  # run in a fresh interpreter (slow: a few per command)
    check: Callable[[Workspace], None] | None = None  # extra assertions after the command


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file (and '/' for every folder) under ``folder``."""
    out = {}
    for root, _dirs, files in os.walk(folder):
        rel = os.path.relpath(root, folder)
        out[rel + "/"] = "/"
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                out[os.path.join(rel, name)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _alarm(signum, frame):
    raise TimeoutError(f"no exit within {TIMEOUT_S} s")


def run_in_process(argv: list[str], ws: Workspace) -> tuple[int, str]:
    """``main(argv[1:])`` of the command here, with stdout/stderr captured; (code, stderr)."""
    main = importlib.import_module(COMMANDS[argv[0]]).main
    err, out = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIMEOUT_S)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = main(argv[1:])
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return code, err.getvalue()


def run_subprocess(argv: list[str], ws: Workspace) -> tuple[int, str]:
    env = dict(os.environ, OPMASK_DATASETS=ws.datasets, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-m", COMMANDS[argv[0]], *argv[1:]],
        cwd=ws.tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S * 2,
    )
    assert "Traceback" not in proc.stdout, proc.stdout[-2000:]
    return proc.returncode, proc.stderr


# ------------------------------------------------------------------------------ config values


def _opts(*opts: str, flags: tuple[str, ...] = ()) -> Callable[[Workspace], list[str]]:
    return lambda ws: ws.train(*opts, flags=flags)


def _config_cases() -> list[Case]:
    bad_values = [  # (key, value, culprit in the message)
        ("SOLVER.IMS_PER_BATCH", "-2", "SOLVER.IMS_PER_BATCH"),
        ("SOLVER.IMS_PER_BATCH", "0", "SOLVER.IMS_PER_BATCH"),
        ("SOLVER.BASE_LR", "0", "SOLVER.BASE_LR"),
        ("SOLVER.BASE_LR", "-0.1", "SOLVER.BASE_LR"),
        ("SOLVER.BASE_LR", "1e999", "SOLVER.BASE_LR"),
        ("SOLVER.MAX_ITER", "None", "SOLVER.MAX_ITER"),
        ("SOLVER.MAX_ITER", "0", "SOLVER.MAX_ITER"),
        ("SOLVER.CHECKPOINT_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD"),
        ("EXP.PRINT_PERIOD", "0", "EXP.PRINT_PERIOD"),
        ("TEST.EVAL_PERIOD", "-1", "TEST.EVAL_PERIOD"),
        ("VIS_PERIOD", "-5", "VIS_PERIOD"),
        ("EXP.HPARAMS", "['SOLVER.NOPE']", "EXP.HPARAMS names 'SOLVER.NOPE'"),
        ("SOLVER.STEPS", "(3, 1)", "SOLVER.STEPS"),
        ("SOLVER.STEPS", "(0,)", "SOLVER.STEPS"),
        ("SOLVER.GAMMA", "0", "SOLVER.GAMMA"),
        ("SOLVER.MOMENTUM", "1.5", "SOLVER.MOMENTUM"),
        ("SOLVER.WEIGHT_DECAY", "-1e-4", "SOLVER.WEIGHT_DECAY"),
        ("SOLVER.WARMUP_METHOD", "cosine", "SOLVER.WARMUP_METHOD"),
        ("SOLVER.OPTIMIZER", "Adam", "SOLVER.OPTIMIZER"),
        ("SOLVER.AMP.DTYPE", "float8", "SOLVER.AMP.DTYPE"),
        ("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "full", "SOLVER.CLIP_GRADIENTS.CLIP_TYPE"),
        ("SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "0", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE"),
        ("SOLVER.MAX_TO_KEEP", "-1", "SOLVER.MAX_TO_KEEP"),
        ("MODEL.DEVICE", "tpu", "MODEL.DEVICE"),
        ("MODEL.DEVICE", "None", "MODEL.DEVICE"),
        ("MODEL.RESNETS.DEPTH", "42", "MODEL.RESNETS.DEPTH"),
        ("MODEL.PIXEL_STD", "[1.0, 0.0, 1.0]", "MODEL.PIXEL_STD"),
        ("MODEL.PIXEL_MEAN", "[1.0, 2.0]", "MODEL.PIXEL_MEAN"),
        ("MODEL.ROI_HEADS.NUM_CLASSES", "0", "MODEL.ROI_HEADS.NUM_CLASSES"),
        ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", "1.5", "MODEL.ROI_HEADS.SCORE_THRESH_TEST"),
        ("MODEL.RPN.IOU_THRESHOLDS", "[0.7, 0.3]", "MODEL.RPN.IOU_THRESHOLDS"),
        ("MODEL.ANCHOR_GENERATOR.SIZES", "[[32], [-64]]", "MODEL.ANCHOR_GENERATOR.SIZES"),
        ("INPUT.MIN_SIZE_TRAIN", "()", "INPUT.MIN_SIZE_TRAIN"),
        ("INPUT.FORMAT", "YUV", "INPUT.FORMAT"),
        ("INPUT.MIN_SIZE_TRAIN_SAMPLING", "range", "INPUT.MIN_SIZE_TRAIN_SAMPLING"),
        ("DATALOADER.NUM_WORKERS", "-1", "DATALOADER.NUM_WORKERS"),
        ("EXP.PS", "coco", "EXP.PS"),
        ("EXP.STRONG_CATEGORY_IDS", "[99]", "99"),
        ("EXP.STRONG_CATEGORY_IDS", "['a']", "EXP.STRONG_CATEGORY_IDS"),
        ("TEST.DETECTIONS_PER_IMAGE", "0", "TEST.DETECTIONS_PER_IMAGE"),
        ("SOLVER", "3", "SOLVER"),
        ("MODEL.ROI_BOX_HEAD", "x", "MODEL.ROI_BOX_HEAD"),
    ]
    cases = [
        Case(f"cfg {key}={value}", _opts(key, value), 1, culprit)
        for key, value, culprit in bad_values
    ]
    cases += [
        Case("cfg odd overrides", _opts("SOLVER.MAX_ITER"), 1, "SOLVER.MAX_ITER"),
        Case("cfg unknown key", _opts("SOLVER.NOT_A_KEY", "1"), 1, "SOLVER.NOT_A_KEY"),
        Case("yaml unknown key", _yaml_cfg("MODEL:\n  NOT_A_KEY: 3\n"), 1, "MODEL.NOT_A_KEY"),
        Case("yaml None", _yaml_cfg("SOLVER:\n  IMS_PER_BATCH: null\n"), 1, "IMS_PER_BATCH"),
        Case("yaml nan gamma", _yaml_cfg("SOLVER:\n  GAMMA: .nan\n"), 1, "SOLVER.GAMMA"),
        Case("yaml inf lr", _yaml_cfg("SOLVER:\n  MOMENTUM: .inf\n"), 1, "SOLVER.MOMENTUM"),
        Case("yaml section as value", _yaml_cfg("MODEL: cpu\n"), 1, "MODEL"),
        Case("cuda without gpu", _no_gpu("MODEL.DEVICE", "cuda"), 1, "MODEL.DEVICE"),
        Case("num-gpus 0", _opts(flags=("--num-gpus", "0")), 2, "--num-gpus"),
        Case("num-gpus -1", _opts(flags=("--num-gpus", "-1")), 2, "--num-gpus"),
        Case("num-machines 0", _opts(flags=("--num-machines", "0")), 2, "--num-machines"),
        Case("machine-rank", _opts(flags=("--machine-rank", "3")), 2, "--machine-rank"),
        Case("dist-timeout 0", _opts(flags=("--dist-timeout", "0")), 2, "--dist-timeout"),
        Case("dist-url auto, 2 machines", _opts(flags=("--num-machines", "2")), 2, "--dist-url"),
        Case("dist-url no port", _opts(flags=("--dist-url", "tcp://h")), 2, "--dist-url"),
        Case("num-gpus word", _opts(flags=("--num-gpus", "two")), 2, "--num-gpus"),
        Case("unknown flag", _opts(flags=("--gpus", "2")), 2, "--gpus"),
        Case("no config file", lambda ws: ["opmask-train"], 2, "--config-file"),
        Case(
            "batch vs processes",
            _opts("SOLVER.IMS_PER_BATCH", "3", flags=("--num-gpus", "2")),
            1,
            "SOLVER.IMS_PER_BATCH",
        ),
        # a few end to end, in a fresh interpreter
        Case("sub num-gpus 0", _opts(flags=("--num-gpus", "0")), 2, "--num-gpus", True),
        Case("sub IMS -2", _opts("SOLVER.IMS_PER_BATCH", "-2"), 1, "SOLVER.IMS_PER_BATCH", True),
        Case("sub unknown key", _opts("SOLVER.NOT_A_KEY", "1"), 1, "SOLVER.NOT_A_KEY", True),
    ]
    return cases


def _yaml_cfg(text: str) -> Callable[[Workspace], list[str]]:
    def setup(ws: Workspace) -> list[str]:
        path = ws.tmp / "bad.yaml"
        path.write_text(f'_BASE_: "{SHAPES_OPMASK}"\n{text}')
        argv = ws.train()
        argv[argv.index(SHAPES_OPMASK)] = str(path)
        return argv

    return setup


def _no_gpu(*opts: str) -> Callable[[Workspace], list[str]]:
    def setup(ws: Workspace) -> list[str]:
        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
        return ws.train(*opts)

    return setup


# ------------------------------------------------------------------------------ dataset fields


def _valid_coco() -> dict:
    """Two 40x50 images, two categories (ids 3, 7), a polygon, an RLE and a crowd annotation."""
    poly = [[5.0, 5.0, 25.0, 5.0, 25.0, 15.0, 5.0, 15.0]]
    box = np.zeros((40, 50), np.uint8)
    box[20:25, 20:25] = 1
    rle = mask_to_rle(box)
    return {
        "images": [
            {"id": 1, "file_name": "1.png", "height": 40, "width": 50},
            {"id": 2, "file_name": "2.png", "height": 40, "width": 50},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "bbox": [5, 5, 20, 10],
             "segmentation": poly, "iscrowd": 0, "area": 200.0},
            {"id": 11, "image_id": 2, "category_id": 7, "bbox": [0, 0, 10, 10],
             "segmentation": [[0.0, 0.0, 10.0, 0.0, 10.0, 10.0, 0.0, 10.0]], "iscrowd": 0,
             "area": 100.0},
            {"id": 12, "image_id": 2, "category_id": 7, "bbox": [20, 20, 5, 5],
             "segmentation": rle, "iscrowd": 1, "area": 25.0},
        ],
        "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}],
    }  # fmt: skip


def write_coco(folder: Path, data: dict) -> str:
    """Write images and ``ann.json`` into folder; the ``ANNOTATIONS.json:IMAGE_DIR`` spec."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    for name in ("1.png", "2.png"):
        Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(folder / "img" / name)
    (folder / "ann.json").write_text(json.dumps(data))
    return f"{folder / 'ann.json'}:{folder / 'img'}"


def _coco_opts(spec: str) -> list[str]:
    return [
        "DATASETS.TRAIN", repr((spec,)), "DATASETS.TEST", repr((spec,)),
        "MODEL.ROI_HEADS.NUM_CLASSES", "2", "EXP.PS", "''",
    ]  # fmt: skip


def _dataset(mutate: Callable[[dict], object]) -> Callable[[Workspace], list[str]]:
    def setup(ws: Workspace) -> list[str]:
        data = copy.deepcopy(_valid_coco())
        mutate(data)
        return ws.train(*_coco_opts(write_coco(ws.tmp / "data", data)))

    return setup


def _set(*path_and_value) -> Callable[[dict], None]:
    *path, value = path_and_value

    def mutate(data: dict) -> None:
        node = data
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value

    return mutate


def _del(*path) -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        node = data
        for p in path[:-1]:
            node = node[p]
        del node[path[-1]]

    return mutate


def _every_annotation(crowd: int | None = None, **fields) -> Callable[[dict], None]:
    """Set ``fields`` in every annotation (whose iscrowd is ``crowd``, if given)."""

    def mutate(data: dict) -> None:
        for a in data["annotations"]:
            if crowd is None or a["iscrowd"] == crowd:
                a.update(fields)

    return mutate


def _dataset_cases() -> list[Case]:
    A, I = "annotations", "images"  # noqa: E741
    rows = [  # (id, mutation, culprit)
        ("no file_name", _del(I, 0, "file_name"), "image id 1"),
        ("list image id", _set(I, 0, "id", [1]), "image id [1]"),
        ("str image id", _set(I, 0, "id", "1"), "image id '1'"),
        ("duplicate image id", _set(I, 1, "id", 1), "duplicate image id 1"),
        ("height str", _set(I, 0, "height", "tall"), "image id 1"),
        ("width 0", _set(I, 1, "width", 0), "image id 2"),
        ("width float", _set(I, 1, "width", 50.5), "image id 2"),
        ("category without id", _del("categories", 1, "id"), "categor"),
        ("duplicate category id", _set("categories", 1, "id", 3), "duplicate category id 3"),
        ("annotation not a dict", _set(A, 1, "oops"), "annotation"),
        ("annotation without image", _set(A, 0, "image_id", 99), "image id 99"),
        ("annotation str image_id", _set(A, 0, "image_id", "1"), "annotation 10"),
        ("duplicate annotation id", _set(A, 1, "id", 10), "duplicate annotation id 10"),
        ("unknown category", _set(A, 0, "category_id", 5), "annotation 10"),
        ("bbox 3 numbers", _set(A, 0, "bbox", [1, 2, 3]), "annotation 10"),
        ("bbox inf", _set(A, 0, "bbox", [0, 0, float("inf"), 5]), "annotation 10"),
        ("bbox nan", _set(A, 1, "bbox", [float("nan"), 0, 5, 5]), "annotation 11"),
        ("bbox 1e30", _set(A, 0, "bbox", [0, 0, 1e30, 5]), "annotation 10"),
        ("bbox outside", _set(A, 1, "bbox", [100, 100, 5, 5]), "annotation 11"),
        ("bbox negative w", _set(A, 0, "bbox", [10, 10, -5, 5]), "annotation 10"),
        ("bbox str", _set(A, 0, "bbox", ["a", 0, 1, 1]), "annotation 10"),
        ("segm str", _set(A, 0, "segmentation", "mask"), "annotation 10"),
        ("polygon str coords", _set(A, 0, "segmentation", [["a", 1, 2, 3, 4, 5]]), "annotation 10"),
        ("rle size differs", _set(A, 2, "segmentation", "size", [80, 100]), "annotation 12"),
        ("rle no counts", _del(A, 2, "segmentation", "counts"), "annotation 12"),
        ("iscrowd str", _set(A, 0, "iscrowd", "no"), "annotation 10"),
        ("images not list", _set(I, {"1": 1}), "images"),
        ("area negative", _set(A, 1, "area", -3.0), "annotation 11"),
        ("test set without area", _del(A, 1, "area"), "annotation 11: no area"),
        ("test set without iscrowd", _del(A, 0, "iscrowd"), "annotation 10: no iscrowd"),
        ("test set segm None", _set(A, 0, "segmentation", None), "no segmentation"),
    ]
    rows += [  # nothing left to train on after DATALOADER.FILTER_EMPTY_ANNOTATIONS
        ("all crowd", _every_annotation(iscrowd=1), "all 3 annotations are crowd"),
        ("polygons of 2 points", _every_annotation(segmentation=[[1.0, 1.0, 9.0, 9.0]], crowd=0),
         "no polygon has 3 points (2 annotations dropped)"),
    ]  # fmt: skip
    cases = [Case(f"data {i}", _dataset(m), 1, culprit) for i, m, culprit in rows]
    cases.append(
        Case("sub data inf box", _dataset(rows[15][1]), 1, "annotation 10", subprocess=True)
    )
    return cases


# ------------------------------------------------------------------------------ weights files


class _Payload:
    """Pickles to a call of os.system: a weights file that tries to run code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _weights(make: Callable[[Path], None], name: str = "w.pth") -> Callable[[Workspace], list]:
    def setup(ws: Workspace) -> list[str]:
        path = ws.tmp / name
        make(path)
        return ws.train("MODEL.WEIGHTS", str(path))

    return setup


def _no_payload_ran(ws: Workspace) -> None:
    assert not (ws.tmp / "PWNED").exists()


def _weights_cases() -> list[Case]:
    def save(obj):
        return lambda p: torch.save(obj, p)

    def pkl(obj):
        return lambda p: p.write_bytes(pickle.dumps(obj))

    def evil(p: Path):
        torch.save({"conv1.weight": _Payload(p.parent / "PWNED")}, p)

    def evil_pkl(p: Path):
        with open(p, "wb") as f:
            pickle.dump({"blobs": _Payload(p.parent / "PWNED")}, f)

    return [
        Case("weights directory", _weights(lambda p: p.mkdir()), 1, "w.pth"),
        Case("weights missing", _weights(lambda p: None), 1, "w.pth"),
        Case("weights int value", _weights(save({"conv1.weight": 3})), 1, "conv1.weight"),
        Case("weights str in model", _weights(save({"model": {"fc.bias": "x"}})), 1, "fc.bias"),
        Case("weights a list", _weights(save([torch.zeros(1)])), 1, "w.pth"),
        Case("weights text", _weights(lambda p: p.write_text("hello")), 1, "w.pth"),
        Case("weights empty", _weights(lambda p: p.write_bytes(b"")), 1, "w.pth"),
        Case("weights code", _weights(evil), 1, "posix.system", check=_no_payload_ran),
        Case("weights pkl list", _weights(pkl({"model": [1.0]}), "w.pkl"), 1, "w.pkl"),
        Case("weights pkl not a dict", _weights(pkl([1.0]), "w.pkl"), 1, "w.pkl"),
        Case("weights pkl code", _weights(evil_pkl, "w.pkl"), 1, "system", check=_no_payload_ran),
        Case("sub weights dir", _weights(lambda p: p.mkdir()), 1, "w.pth", subprocess=True),
    ]


# ------------------------------------------------------------------------------ run-folder states
# and launcher flags, profiles, sweep files (run folder / launcher helper's section)


def _fake_run(ws: Workspace, *, damage: Callable[[Path], None] | None = None) -> Path:
    """``ws.run`` as a finished run of the tiny setting would leave it: config.yaml (SEED 1) and
    a hashed checkpoint holding that config; ``damage(models)`` then alters the checkpoints."""
    from opmask.config import load_config
    from opmask.run.folder import RunFolder
    from opmask.train.checkpoint import Checkpointer

    cfg = load_config(SHAPES_OPMASK, list(TINY))
    ws.run.mkdir(parents=True)
    (ws.run / "config.yaml").write_text(cfg.dump())
    state = {"model": {"w": torch.zeros(2)}, "iteration": 2, "optimizer": {}, "scheduler": {}}
    state.update(scaler={}, rng=[], meta={"world_size": 1, "config": cfg.dump()})
    Checkpointer(str(ws.run / "models"), RunFolder.CHECKPOINTS).save("model_0000002.pth", state)
    if damage is not None:
        damage(ws.run / "models")
    return ws.run


def _resume(*opts: str, damage=None, config: str | None = None, lock: bool = False):
    def setup(ws: Workspace) -> list[str]:
        run = _fake_run(ws, damage=damage)
        if config is not None:
            (run / "config.yaml").write_text(config)
        if lock:
            _HOLDERS[str(ws.tmp)] = _hold_lock(run)
        return ws.train(*opts, flags=("--resume",))

    return setup


def _hashes_gone_truncated(models: Path) -> None:
    for p in models.glob("*.sha256"):
        p.unlink()
    for p in models.glob("*.pth"):
        p.write_bytes(p.read_bytes()[:500])


def _flip_a_byte(models: Path) -> None:
    p = models / "model_0000002.pth"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))


def _replace_checkpoint(obj, hashed: bool) -> Callable[[Path], None]:
    def damage(models: Path) -> None:
        p = models / "model_0000002.pth"
        torch.save(obj(models) if callable(obj) else obj, p)
        (models / "model_0000002.pth.sha256").unlink()
        if hashed:
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            (models / "model_0000002.pth.sha256").write_text(digest)

    return damage


_HOLDERS: dict[str, subprocess.Popen] = {}


def _hold_lock(run: Path) -> subprocess.Popen:
    """Another live process holding ``run``'s lock (as a training would), for 120 s at most."""
    code = (
        "import fcntl, json, os, socket, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)\n"
        "fcntl.lockf(fd, fcntl.LOCK_EX)\n"
        "h = {'host': socket.gethostname(), 'pid': os.getpid(), 'slurm_job_id': '4242',"
        " 'since': 'now'}\n"
        "os.write(fd, json.dumps(h).encode())\n"
        "print('locked', flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(run / "run.lock")], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _release_holder(ws: Workspace) -> None:
    proc = _HOLDERS.pop(str(ws.tmp))
    proc.kill()
    proc.wait()


def _output_is_a_file(ws: Workspace) -> list[str]:
    ws.run.write_text("not a folder")
    return ws.train()


def _existing_run(ws: Workspace) -> list[str]:
    _fake_run(ws)
    return ws.train()


def _run_folder_cases() -> list[Case]:
    def list_of_tensors(models):
        return [torch.zeros(1)]

    def payload(models):
        return {"model": _Payload(models / "PWNED")}

    def no_payload(ws):
        assert not (ws.run / "models" / "PWNED").exists()

    return [
        Case("run lock held", _resume(lock=True), 1, "is in use by host", True, _release_holder),
        Case("run hashes gone, files cut", _resume(damage=_hashes_gone_truncated), 1, "usable"),
        Case("run checkpoint bit flip", _resume(damage=_flip_a_byte), 1, "recorded hash"),
        Case(
            "run checkpoint a list",
            _resume(damage=_replace_checkpoint(list_of_tensors, True)),
            1,
            "not a checkpoint",
        ),
        Case(
            "run unhashed code checkpoint",
            _resume(damage=_replace_checkpoint(payload, False)),
            1,
            "model_0000002.pth: refused to load",
            check=no_payload,
        ),
        Case("run resume other SEED", _resume("SEED", "7"), 1, "SEED (saved 1, now 7)"),
        Case(
            "run corrupt config, other SEED",
            _resume("SEED", "7", config="SOLVER: [unclosed\n"),
            1,
            "SEED (saved 1, now 7)",
        ),
        Case(
            "run resume unsafe key",
            _resume("MODEL.ROI_MASK_HEAD.NUM_CONV", "3"),
            1,
            "MODEL.ROI_MASK_HEAD.NUM_CONV",
        ),
        Case("run output is a file", _output_is_a_file, 1, "is a file"),
        Case("run exists, no --resume", _existing_run, 1, "already holds a run"),
    ]


def _submit(*flags: str, profile: str | None = None) -> Callable[[Workspace], list[str]]:
    def setup(ws: Workspace) -> list[str]:
        extra = []
        if profile is not None:
            (ws.tmp / "p.yaml").write_text(profile)
            extra = ["--profile", str(ws.tmp / "p.yaml")]
        return [
            "opmask-submit",
            "--config-file",
            SHAPES_OPMASK,
            "--output",
            str(ws.run),
            *extra,
            *flags,
            *TINY,
        ]

    return setup


def _sweep_file(text: str | None = None, **spec) -> Callable[[Workspace], list[str]]:
    def setup(ws: Workspace) -> list[str]:
        body = text if text is not None else json.dumps({"config": SHAPES_OPMASK, **spec})
        (ws.tmp / "s.yaml").write_text(body)
        return ["opmask-sweep", "submit", str(ws.tmp / "s.yaml"), "--output", str(ws.tmp / "sw")]

    return setup


def _launcher_cases() -> list[Case]:
    return [
        Case("submit nodes 0", _submit("--nodes", "0"), 1, "--nodes must be >= 1"),
        Case("submit time 0", _submit("--time", "0"), 1, "--time must be >= 1"),
        Case("submit cpus -1", _submit("--cpus-per-task", "-1"), 1, "--cpus-per-task"),
        Case("profile nodes two", _submit(profile="nodes: two\n"), 1, "nodes must be an integer"),
        Case("profile bad yaml", _submit(profile="nodes: [1\n"), 1, "not valid YAML at line"),
        Case("profile a list", _submit(profile="- 1\n"), 1, "p.yaml"),
        Case("partition, no cluster", _submit("--partition", "X"), 1, "'X'"),
        Case("sweep grid a list", _sweep_file(grid=[1, 2]), 1, "'grid' must be a mapping"),
        Case("sweep overrides str", _sweep_file(overrides="x"), 1, "'overrides' must be a"),
        Case("sweep points ints", _sweep_file(points=[1, 2]), 1, "'points' must be a list"),
        Case("sweep grid int key", _sweep_file("config: a.yaml\ngrid: {1: [2]}\n"), 1, "[1]"),
        Case("sweep nodes 0", _sweep_file(resources={"nodes": 0}), 1, "resources.nodes"),
        Case("sweep bad yaml", _sweep_file("grid: {a: [1\n"), 1, "not valid YAML at line"),
        Case("sweep resume nothing", lambda ws: ["opmask-sweep", "resume", "nope"], 1, "nope"),
        Case(
            "submit dataset missing",
            _submit("DATASETS.TRAIN", "('/nope/a.json:/nope',)"),
            1,
            "annotation file not found: /nope/a.json",
        ),
        Case(
            "sweep dataset missing",  # a dry run: no cluster to reach here, the data is checked
            lambda ws: (
                _sweep_file(grid={"DATASETS.TEST": ["('/nope/v.json:/nope',)"]})(ws) + ["--dry-run"]
            ),
            1,
            "annotation file not found: /nope/v.json",
        ),
    ]


# ------------------------------------------------------------------------------ values builders
# refused after the run folder was claimed (traceback, exit 4) before the checks owned them
# (tests/config/test_builder_raises.py walks every builder raise)


def _with_config(config: str, *opts: str, submit: bool = False) -> Callable[[Workspace], list]:
    """``opmask-train`` (or ``opmask-submit --dry-run``) on ``config`` with the tiny setting,
    ``opts`` after it."""

    def setup(ws: Workspace) -> list[str]:
        argv = ws.train()
        argv[argv.index(SHAPES_OPMASK)] = config
        argv += opts
        if submit:
            argv[0] = "opmask-submit"
            argv.insert(1, "--dry-run")
        return argv

    return setup


def _builder_cases() -> list[Case]:
    gn = "is GN: width 3 (MODEL.FPN.OUT_CHANNELS) is not a multiple of 8"
    rows = [  # (id, config, overrides, culprit)
        ("baseline box NUM_CONV 4", SHAPES_BASELINE, ("MODEL.ROI_BOX_HEAD.NUM_CONV", "4"),
         "MODEL.ROI_BOX_HEAD.NUM_CONV must be 0 with FastRCNNConvFCHead"),
        ("opmask box NUM_CONV 0", SHAPES_OPMASK, ("MODEL.ROI_BOX_HEAD.NUM_CONV", "0"),
         "MODEL.ROI_BOX_HEAD.NUM_CONV must be >= 1 with CAMBoxHead"),
        ("anchor SIZES 3 lists", SHAPES_OPMASK,
         ("MODEL.ANCHOR_GENERATOR.SIZES", "[[16], [32], [64]]"),
         "MODEL.ANCHOR_GENERATOR.SIZES has 3 lists for 5 RPN level(s)"),
        ("anchors uneven", SHAPES_OPMASK,
         ("MODEL.ANCHOR_GENERATOR.SIZES", "[[16, 24], [32], [64], [128], [256]]"),
         "MODEL.ANCHOR_GENERATOR.SIZES x ASPECT_RATIOS give the levels [6, 3, 3, 3, 3] anchors"),
        ("anchor ASPECT_RATIOS 2 lists", SHAPES_OPMASK,
         ("MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[0.5, 1.0, 2.0], [1.0]]"),
         "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS has 2 lists for 5 RPN level(s)"),
        ("RPN IN_FEATURES p2 alone", SHAPES_OPMASK, ("MODEL.RPN.IN_FEATURES", "['p2']"),
         "has 5 lists for 1 RPN level(s) (MODEL.RPN.IN_FEATURES ['p2'])"),
        ("FPN IN_FEATURES res5", SHAPES_OPMASK, ("MODEL.FPN.IN_FEATURES", "['res5']"),
         "MODEL.RPN.IN_FEATURES names p2, which MODEL.FPN.IN_FEATURES ['res5'] does not give"),
        ("MAX_SIZE_TRAIN 1", SHAPES_OPMASK, ("INPUT.MAX_SIZE_TRAIN", "1"),
         "INPUT.MAX_SIZE_TRAIN must be >= 32, got 1"),
        ("range sampling descending", SHAPES_OPMASK,
         ("INPUT.MIN_SIZE_TRAIN_SAMPLING", "range", "INPUT.MIN_SIZE_TRAIN", "(128, 96)"),
         "INPUT.MIN_SIZE_TRAIN must be (low, high) with low <= high"),
        ("GN width 3", SHAPES_OPMASK, ("MODEL.FPN.NORM", "GN", "MODEL.FPN.OUT_CHANNELS", "3"),
         f"MODEL.FPN.NORM {gn}"),
        ("AMP float32", SHAPES_OPMASK, ("SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.DTYPE",
         "float32"), "SOLVER.AMP.DTYPE must be one of ['float16', 'bfloat16']"),
    ]  # fmt: skip
    cases = [Case(f"build {i}", _with_config(c, *o), 1, culprit) for i, c, o, culprit in rows]
    cases += [
        Case(f"submit {i}", _with_config(c, *o, submit=True), 1, culprit)
        for i, c, o, culprit in rows
    ]
    cases += [
        Case(f"sub build {i}", _with_config(c, *o), 1, culprit, subprocess=True)
        for i, c, o, culprit in rows[6:7]  # one end to end (a fresh interpreter: ~13 s)
    ]
    return cases


def _usage_cases() -> list[Case]:
    """Command-line errors of every console script: one line (argparse's usage block is not)."""
    argvs = [
        (["opmask-submit", "--nodes", "abc"], "--nodes: invalid int value: 'abc'"),
        (["opmask-sweep", "bogus"], "invalid choice: 'bogus'"),
        (["opmask-sweep", "status"], "required: folder"),
        (["opmask-data", "shapes", "--seed", "x"], "--seed: invalid int value: 'x'"),
        (["opmask-data"], "required: command"),
        (["opmask-bench", "--steps", "x"], "--steps: expects an integer, got 'x'"),
        (["opmask-export"], "required: RUN"),
        (["opmask-demo", "--bogus"], "unrecognized arguments: --bogus"),
    ]
    return [
        Case(f"usage {' '.join(a[:2])}", lambda ws, a=a: list(a), 2, culprit)
        for a, culprit in argvs
    ]


CASES: list[Case] = (
    _config_cases()
    + _dataset_cases()
    + _weights_cases()
    + _run_folder_cases()
    + _launcher_cases()
    + _builder_cases()
    + _usage_cases()
)


def test_table_is_large_and_ids_unique():
    assert len({c.id for c in CASES}) == len(CASES)
    assert len(CASES) >= 50


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path, datasets_root, monkeypatch):
    monkeypatch.setenv("OPMASK_DATASETS", datasets_root)
    monkeypatch.setenv("OPMASK_PROFILE", "local")  # the launcher rows' profile (no default)
    monkeypatch.chdir(tmp_path)
    ws = Workspace(tmp_path, datasets_root)
    argv = case.setup(ws)
    before = snapshot(tmp_path)
    runner = run_subprocess if case.subprocess else run_in_process
    code, stderr = runner(argv, ws)
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr, stderr[-3000:]
    assert code == case.code, (code, stderr[-2000:])
    assert len(lines) == 1, stderr[-2000:]
    assert case.culprit in lines[0], lines[0]
    assert "weights_only" not in lines[0]  # never advise unsafe loading
    assert snapshot(tmp_path) == before
    if case.check is not None:
        case.check(ws)


def test_valid_dataset_passes_validation(tmp_path, datasets_root, monkeypatch):
    """The control: the table's dataset, before mutation, loads (so each row fails for its own
    reason)."""
    from opmask.data.catalog import load_datasets

    spec = write_coco(tmp_path, _valid_coco())
    dicts, info = load_datasets([spec])
    assert [d["image_id"] for d in dicts] == [1, 2] and info.category_ids == [3, 7]
    assert [len(d["annotations"]) for d in dicts] == [1, 2]
