"""Shared fixtures: a tiny synthetic dataset and a tiny CPU config built on the shapes configs."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

from opmask.data.shapes import generate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES_OPMASK = os.path.join(REPO, "configs", "shapes", "opmask_R18_shapes.yaml")
SHAPES_BASELINE = os.path.join(REPO, "configs", "shapes", "baseline_R18_shapes.yaml")

# A few-iteration setting of the shapes configs that runs in seconds on 2 cores.
TINY = [
    "MODEL.FPN.OUT_CHANNELS",
    "32",
    "MODEL.ROI_BOX_HEAD.CONV_DIM",
    "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM",
    "32",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "16",
    "INPUT.MIN_SIZE_TRAIN",
    "(96,)",
    "INPUT.MIN_SIZE_TEST",
    "96",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SOLVER.MAX_ITER",
    "6",
    "SOLVER.WARMUP_ITERS",
    "2",
    "SOLVER.STEPS",
    "(4,)",
    "SOLVER.CHECKPOINT_PERIOD",
    "3",
    "DATALOADER.NUM_WORKERS",
    "0",
    "VIS_PERIOD",
    "2",
    "EXP.PRINT_PERIOD",
    "2",
    "SOLVER.BASE_LR",
    "0.01",
]


SHARED_ENV = "OPMASK_TEST_SHARED"  # a folder shared by every process of one test run


def pytest_configure(config):
    """The controller (or the only process) makes the run's shared folder before any
    pytest-xdist worker starts; workers inherit it through the environment."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Parallel workers share 2 cores: one thread each (and in every process a test starts),
        # or they oversubscribe the cores and slow each other down many times over.
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)
    elif SHARED_ENV not in os.environ:
        os.environ[SHARED_ENV] = tempfile.mkdtemp(prefix="opmask-tests-")
        config._opmask_shared = os.environ[SHARED_ENV]


def pytest_sessionfinish(session):
    """The controller stops the shared SLURM cluster (if a test started one) once every worker
    has finished, and removes the shared folder."""
    shared = getattr(session.config, "_opmask_shared", None)
    if shared is None:  # a worker, or a run inside another test run
        return
    cluster = shared_cluster_folder()
    if (cluster / "slurm.conf").exists():
        stop = os.path.join(REPO, "slurm", "local", "stop.sh")
        subprocess.run(["bash", stop, str(cluster)], timeout=120)
    if session.testsfailed:  # keep the cluster's logs for the failure's reader
        print(f"\nshared test folder kept (SLURM logs in slurm-cluster/log): {shared}")
    else:
        shutil.rmtree(shared, ignore_errors=True)
    os.environ.pop(SHARED_ENV, None)


def pytest_collection_modifyitems(config, items):
    """Every test that uses the SLURM cluster carries the ``slurm`` marker (deselect them with
    ``-m "not slurm"``); under pytest-xdist the long tests are spread over the workers."""
    for item in items:
        if "slurm" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slurm)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        items[:] = spread_long_tests(items, workers)


def spread_long_tests(items: list, workers: int) -> list:
    """The order that starts every worker on its share of the long tests (``slurm``, then
    ``slow``), each of which mostly waits for a job or a subprocess.

    ``--dist worksteal`` first hands worker ``i`` the next ``len(pending) // (workers - i)``
    tests of this order, then lets idle workers steal from the tail of busy ones. Without this
    order, the SLURM scenarios (one file) would all start on one worker, one after another.
    The order is a pure function of the collected items, so every worker computes the same.
    """
    marked = lambda it, name: it.get_closest_marker(name) is not None  # noqa: E731
    slurm = [it for it in items if marked(it, "slurm")]
    slow = [it for it in items if marked(it, "slow") and not marked(it, "slurm")]
    rest = [it for it in items if not marked(it, "slurm") and not marked(it, "slow")]
    heads = [slurm[i::workers] + slow[i::workers] for i in range(workers)]
    order, left = [], len(items)
    for i, head in enumerate(heads):
        size = left // (workers - i)
        take = max(0, size - len(head))
        order += head + rest[:take]
        rest = rest[take:]
        left -= len(head) + take
    return order + rest


def shared_cluster_folder() -> pathlib.Path:
    """Where the test run's one SLURM cluster lives (``tests/launch/conftest.py`` starts it)."""
    folder = pathlib.Path(os.environ[SHARED_ENV]) / "slurm-cluster"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """A test that sets torch's thread count (to run single-threaded) must not change it for the
    tests after it: bitwise comparisons with subprocesses (e.g. the SLURM resume test) need the
    same count in both."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _restore_root_logger():
    """A command run in this process (``setup_logging``) replaces the root logger's handlers
    with ones writing to that test's stdout and run folder; put the previous ones back, so a
    later test does not log into a closed capture stream ("--- Logging error ---")."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    for h in handlers:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(level)


@pytest.fixture(scope="session", autouse=True)
def _dataset_index_cache(tmp_path_factory):
    """Dataset index caches of the whole session (subprocesses too) in a temporary folder, not in
    the user's ~/.cache/opmask."""
    old = os.environ.get("OPMASK_CACHE")
    os.environ["OPMASK_CACHE"] = str(tmp_path_factory.mktemp("index_cache"))
    yield
    if old is None:
        os.environ.pop("OPMASK_CACHE", None)
    else:
        os.environ["OPMASK_CACHE"] = old


@pytest.fixture(scope="session")
def datasets_root(tmp_path_factory):
    """``$OPMASK_DATASETS`` holding shapes/{train,val} (12 + 6 images of 96 px)."""
    root = tmp_path_factory.mktemp("datasets")
    generate(str(root / "shapes"), seed=3, num_train=12, num_val=6, image_size=96)
    return str(root)


@pytest.fixture
def shapes_env(datasets_root, monkeypatch):
    monkeypatch.setenv("OPMASK_DATASETS", datasets_root)
    return datasets_root


def run_cli(args: list[str], env_root: str, cwd: str, timeout: int = 600):
    """Run a console entry point in a process of its own (to see exit code and stderr), forked
    from a warm interpreter (``tests/warm.py``)."""
    from tests import warm

    env = dict(os.environ, OPMASK_DATASETS=env_root, PYTHONUNBUFFERED="1")
    return warm.run(
        [sys.executable, "-m", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
