"""Every count and size flag of ``opmask-data`` refuses a value it cannot use in one line that
names the flag (exit 2, a bad command line), before anything is written."""

from __future__ import annotations

import os

import pytest

from opmask.cli.data import MIN_SHAPES_SIZE, main

CASES = [
    (["shapes", "--num-train", "-3"], "shapes", "--num-train", "must be >= 1, got -3"),
    (["shapes", "--num-train", "0"], "shapes", "--num-train", "must be >= 1, got 0"),
    (["shapes", "--num-val", "0"], "shapes", "--num-val", "must be >= 1, got 0"),
    (["shapes", "--image-size", "4"], "shapes", "--image-size", f"must be >= {MIN_SHAPES_SIZE}"),
    (
        ["shapes", "--image-size", "0"],
        "shapes",
        "--image-size",
        f"must be >= {MIN_SHAPES_SIZE}, got 0",
    ),
    (["shapes", "--seed", "-1"], "shapes", "--seed", "must be >= 0, got -1"),
    (["shapes", "--num-val", "x"], "shapes", "--num-val", "invalid int value: 'x'"),
    (["check", "shapes_train", "--workers", "-1"], "check", "--workers", "must be >= 1"),
    (["check", "shapes_train", "--workers", "0"], "check", "--workers", "must be >= 1, got 0"),
    (["coco-like", "--images", "0"], "coco-like", "--images", "must be >= 1, got 0"),
    (["coco-like", "--images", "-5"], "coco-like", "--images", "must be >= 1, got -5"),
    (["coco-like", "--images", "2", "--seed", "-2"], "coco-like", "--seed", "must be >= 0"),
]


@pytest.mark.parametrize("argv,command,flag,why", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_count_is_one_line_naming_the_flag(argv, command, flag, why, tmp_path, capsys):
    out = tmp_path / "out"
    if command != "check":
        argv = [*argv, "--output", str(out)]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"opmask-data {command}: error: argument {flag}: {why}"), err
    assert not out.exists()


def test_smallest_shapes_image_size_is_drawn(tmp_path, capsys):
    """MIN_SHAPES_SIZE itself works and gives images of that short side."""
    out = tmp_path / "s"
    argv = ["shapes", "--output", str(out), "--num-train", "2", "--num-val", "1"]
    assert main([*argv, "--image-size", str(MIN_SHAPES_SIZE)]) == 0
    assert "wrote" in capsys.readouterr().out
    names = sorted(os.listdir(out / "train" / "images"))
    assert names == ["000001.png", "000002.png"]
