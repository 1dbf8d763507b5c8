"""One flag name per concept across all console scripts (``opmask.cli.flags.NAMES``): the new
name works, the old one still works with exactly one deprecation note on stderr, ``--help`` shows
the new name only, and no command shows an old name."""

from __future__ import annotations

import argparse
import configparser
import json
import os
import re

import pytest

from opmask.cli import bench, data, demo, diagnose, export, predict, train
from opmask.cli.flags import NAMES, NEW_NAME
from opmask_launch import submit, sweep
from tests.conftest import REPO, SHAPES_OPMASK

PARSERS = {
    "opmask-train": train.parser,
    "opmask-data": data.parser,
    "opmask-demo": demo.parser,
    "opmask-bench": bench.parser,
    "opmask-export": export.parser,
    "opmask-diagnose": diagnose.parser,
    "opmask-predict": predict.parser,
    "opmask-submit": submit.parser,
    "opmask-sweep": sweep.parser,
}


def _all_parsers() -> list[argparse.ArgumentParser]:
    """Every command's parser and sub-command parsers."""
    todo, found = [make() for make in PARSERS.values()], []
    while todo:
        p = todo.pop()
        found.append(p)
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                todo += list(a.choices.values())
    return found


def _shown(p: argparse.ArgumentParser) -> set[str]:
    return {s for a in p._actions for s in a.option_strings}


def test_every_console_script_is_walked():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(REPO, "setup.cfg"))
    scripts = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    assert sorted(line.split("=")[0].strip() for line in scripts) == sorted(PARSERS)


def test_no_command_shows_an_old_name_and_every_hidden_name_is_an_alias():
    """Two commands with different names for one concept of the table fail here: an old name
    may exist only as the hidden alias of its new name."""
    parsers = _all_parsers()
    assert len(parsers) > len(PARSERS)  # the sub-commands too
    used = {new: set() for new, _ in NAMES.values()}
    for p in parsers:
        shown = _shown(p)
        assert not shown & set(NEW_NAME), (p.prog, sorted(shown & set(NEW_NAME)))
        for name, action in p._option_string_actions.items():
            if name not in shown:
                assert name in NEW_NAME and action.option_strings[0] == NEW_NAME[name], (
                    p.prog,
                    name,
                )
        for new in used:
            if new in shown:
                used[new].add(p.prog)
    assert all(used.values()), used  # every name of the table is used somewhere


# (command, words before the flag, old name, new name, value, dest)
RENAMED = [
    ("opmask-train", ["--config-file", "c.yaml"], "--output-dir", "--output", "r", "output_dir"),
    ("opmask-submit", ["--config-file", "c.yaml"], "--output-dir", "--output", "r", "output_dir"),
    (
        "opmask-submit",
        ["--config-file", "c.yaml"],
        "--gpus-per-node",
        "--num-gpus",
        "4",
        "gpus_per_node",
    ),
    ("opmask-demo", [], "--out", "--output", "d", "output"),
    ("opmask-demo", [], "--data-seed", "--seed", "3", "seed"),
    ("opmask-data", ["shapes"], "--out", "--output", "d", "output"),
    ("opmask-data", ["coco-like", "--images", "1"], "--out", "--output", "d", "output"),
    ("opmask-sweep", ["submit", "s.yaml"], "--out", "--output", "d", "output"),
    ("opmask-sweep", ["submit", "s.yaml"], "--gpus-per-node", "--num-gpus", "4", "gpus_per_node"),
    ("opmask-sweep", ["resume", "sw"], "--gpus-per-node", "--num-gpus", "4", "gpus_per_node"),
]


SUBCOMMANDS = ("opmask-data", "opmask-sweep")


def _value(dest: str, text: str):
    return int(text) if dest in ("seed", "gpus_per_node") else text


@pytest.mark.parametrize("command, head, old, new, value, dest", RENAMED)
def test_the_new_name_works_and_the_old_one_with_one_note(
    command, head, old, new, value, dest, capsys
):
    args = PARSERS[command]().parse_args([*head, new, value])
    assert getattr(args, dest) == _value(dest, value)
    assert capsys.readouterr().err == ""
    args = PARSERS[command]().parse_args([*head, f"{old}={value}"])  # also with =
    assert getattr(args, dest) == _value(dest, value)
    prog = f"{command} {head[0]}" if command in SUBCOMMANDS else command
    assert capsys.readouterr().err == f"{prog}: note: {old} is deprecated, use {new}\n"


@pytest.mark.parametrize("command, head, old, new, value, dest", RENAMED)
def test_help_shows_the_new_name_only(command, head, old, new, value, dest, capsys):
    with pytest.raises(SystemExit) as e:
        PARSERS[command]().parse_args(
            [*head[:1], "--help"] if command in SUBCOMMANDS else ["--help"]
        )
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert re.search(rf"(?<![\w-]){new}(?![\w-])", text), text
    assert not re.search(rf"(?<![\w-]){old}(?![\w-])", text), text


def test_an_old_required_name_still_satisfies_it(tmp_path, capsys):
    """opmask-data coco-like --out (its --output is required) writes the fixture as before."""
    out = tmp_path / "cl"
    assert data.main(["coco-like", "--images", "2", "--out", str(out)]) == 0
    assert json.loads((out / "annotations.json").read_text())["images"][1]["id"] == 2
    err = capsys.readouterr().err
    assert err == "opmask-data coco-like: note: --out is deprecated, use --output\n"


def test_submit_old_names_reach_the_job(tmp_path, monkeypatch, capsys):
    """opmask-submit --gpus-per-node / --output-dir: the dry run's script and the eval-only check
    use their values exactly as --num-gpus / --output do."""
    monkeypatch.setenv("PATH", str(tmp_path))  # no SLURM here
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    base = ["--config-file", SHAPES_OPMASK, "--profile", "local", "--no-data-check"]
    for flag in ("--output-dir", "--output"):
        assert submit.main([*base, flag, str(run), "--eval-only"]) == 1
        err = capsys.readouterr().err.splitlines()
        assert err[-1] == (
            f"opmask-submit: error: --eval-only: no run folder {run} to evaluate "
            "(check --exp-id / --output)"
        )
        assert len(err) == (2 if flag == "--output-dir" else 1)
    for flag in ("--gpus-per-node", "--num-gpus"):
        argv = [*base, "--output", str(run), flag, "2", "--dry-run", "SOLVER.IMS_PER_BATCH", "2"]
        assert submit.main(argv) == 0
        out, err = capsys.readouterr()
        assert "#SBATCH --gpus-per-node=2" in out.splitlines()
        notes = [x for x in err.splitlines() if ": note: " in x]
        assert notes == (
            ["opmask-submit: note: --gpus-per-node is deprecated, use --num-gpus"]
            if flag == "--gpus-per-node"
            else []
        )
    assert not run.exists()
