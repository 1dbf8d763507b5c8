"""Dataset names to files, and one opened index per dataset and process."""

from __future__ import annotations

import json
import os

from opmask.data.catalog import load_dataset

from .test_check_outside import _dataset


def test_an_index_is_opened_once_per_process_until_its_file_changes(tmp_path):
    """The checks, the training loop and the evaluator of one start read the same dataset: they
    share one opened index; a rewritten annotation file is read again."""
    spec = _dataset(tmp_path)
    cache = str(tmp_path / "cache")
    first = load_dataset(spec, index=True, cache_dir=cache)
    assert load_dataset(spec, index=True, cache_dir=cache) is first
    assert load_dataset(spec, index=True, cache_dir=str(tmp_path / "other")) is not first
    assert load_dataset(spec, index=False) is not first  # the JSON path: fresh dicts each time

    path = tmp_path / "a.json"
    data = json.loads(path.read_text())
    data["annotations"] = data["annotations"][:1]
    path.write_text(json.dumps(data))
    os.utime(path, ns=(1, 1))  # another modification time, whatever the clock's resolution
    dicts, _ = load_dataset(spec, index=True, cache_dir=cache)
    assert sum(len(d["annotations"]) for d in dicts) == 1
    assert sum(len(d["annotations"]) for d in first[0]) == 3
