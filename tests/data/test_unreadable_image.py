"""An image that cannot be decoded is one line naming the file and the decoder's reason, also
when a loader worker reads it (torch would re-raise it with the worker's traceback)."""

from __future__ import annotations

import pytest

from opmask.config import load_config
from opmask.data.build import build_test_loader, build_train_loader
from opmask.data.catalog import load_datasets
from opmask.data.coco import DatasetError
from opmask.data.shapes import generate
from tests.conftest import SHAPES_OPMASK, TINY, run_cli


@pytest.fixture(scope="module")
def cut_root(tmp_path_factory):
    """$OPMASK_DATASETS with shapes train/val of 2 images; train image 1 cut in half."""
    root = tmp_path_factory.mktemp("cut")
    generate(str(root / "shapes"), seed=5, num_train=2, num_val=2, image_size=64)
    path = root / "shapes" / "train" / "images" / "000001.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return root, str(path)


def _first_error(loader) -> str:
    with pytest.raises(DatasetError) as e:
        for _ in zip(range(8), loader):
            pass
    return str(e.value)


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_raises_the_one_line_error(cut_root, workers, monkeypatch):
    root, bad = cut_root
    monkeypatch.setenv("OPMASK_DATASETS", str(root))
    cfg = load_config(SHAPES_OPMASK, [*TINY, "DATALOADER.NUM_WORKERS", str(workers)])
    dicts, _ = load_datasets(["shapes_train"])
    want = f"image id 1: cannot read image {bad}: "
    loader = build_train_loader(cfg, dicts, seed=0, rank=0, world_size=1, start_iter=0)
    msg = _first_error(loader)
    assert msg.startswith(want) and "truncated" in msg and "\n" not in msg, msg
    msg = _first_error(build_test_loader(cfg, dicts))
    assert msg.startswith(want) and "\n" not in msg, msg


@pytest.mark.slow
def test_opmask_train_reports_one_line_and_exits_1(cut_root, tmp_path):
    """End to end through a real ``opmask-train`` (slow: ~14 s on 2 busy cores, a fresh
    interpreter importing torch and building the model before the first batch is read; the
    loader tests above prove the same in-process in under a second)."""
    root, bad = cut_root
    run = tmp_path / "run"
    argv = ["opmask.cli.train", "--config-file", SHAPES_OPMASK, "--output", str(run), *TINY]
    argv += ["DATALOADER.NUM_WORKERS", "1", "DATALOADER.FILTER_EMPTY_ANNOTATIONS", "False"]
    proc = run_cli(argv, str(root), str(tmp_path))
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert errors[0].startswith(f"opmask-train: error: image id 1: cannot read image {bad}: ")
    assert "truncated" in errors[0]
