"""``opmask-data check`` names every kind of problem by image id and exits 1; a clean dataset
passes; ``opmask-data coco-like`` writes a dataset that passes."""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

from opmask.cli.data import main


def test_coco_like_passes_check_which_writes_nothing(tmp_path, capsys, monkeypatch):
    out = tmp_path / "ds"
    assert main(["coco-like", "--images", "30", "--output", str(out)]) == 0
    before = sorted(tmp_path.rglob("*"))
    monkeypatch.setenv("OPMASK_CACHE", str(tmp_path / "cache"))
    spec = f"{out}/annotations.json:{out}/images"
    assert main(["check", spec, "--workers", "2"]) == 0
    text = capsys.readouterr().out
    assert "30 images" in text and "80 categories" in text and text.strip().endswith("OK")
    assert sorted(tmp_path.rglob("*")) == before  # no record, no index cache
    assert main(["coco-like", "--images", "3", "--output", str(out)]) == 1  # not empty


def test_check_reports_missing_image_wrong_size_bad_polygon(tmp_path, capsys):
    out = tmp_path / "ds"
    main(["coco-like", "--images", "30", "--output", str(out)])
    data = json.load(open(out / "annotations.json"))
    os.remove(out / "images" / "000000000004.jpg")
    os.remove(out / "images" / "000000000007.jpg")  # hard-linked: replace, never overwrite
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(out / "images" / "000000000007.jpg")
    ann = next(a for a in data["annotations"] if a["image_id"] == 12 and not a["iscrowd"])
    ann["segmentation"] = [[10, 10, "x", 20, 30, 30]]
    json.dump(data, open(out / "annotations.json", "w"))
    rc = main(["check", f"{out}/annotations.json:{out}/images", "--workers", "2"])
    text = capsys.readouterr().out
    assert rc == 1
    assert "missing image file: 1 (first image ids: 4)" in text
    assert "image size mismatch: 1 (first image ids: 7)" in text
    assert "is 30x20, annotations say 640x480" in text
    assert "bad annotation: 1 (first image ids: 12)" in text
    assert f"annotation {ann['id']}: polygon" in text and "not a list of finite numbers" in text
    assert "FAILED: 3 problems" in text


def test_check_unreadable_json_is_one_line(tmp_path, capsys):
    (tmp_path / "a.json").write_text("{")
    assert main(["check", f"{tmp_path}/a.json:{tmp_path}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("opmask-data: error:") and "malformed JSON" in err
