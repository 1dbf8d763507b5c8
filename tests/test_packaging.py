"""A wheel works anywhere: built with ``pip wheel``, installed (not editable) into a fresh virtual
environment, and run from an empty folder, the console scripts find the shipped configs and
cluster profiles, and nothing installs a top-level ``launch`` package.

The environment reuses this interpreter's installed dependencies (torch, ...) without downloading
anything: its ``site-packages`` holds a ``.pth`` file naming this interpreter's site folders. A
``.pth`` line that is a folder is only added to ``sys.path``; the ``.pth`` files inside it (such as
an editable install's import hook for this checkout) are not run, so ``opmask`` can only come from
the wheel, which the test checks.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY

pytestmark = pytest.mark.slow

SHAPES = "configs/shapes/opmask_R18_shapes.yaml"  # a packaged name, not a path here
# What the wheel is built from, copied out of the checkout (no build/ of the checkout is used
# or written: a stale build/lib would end up in the wheel).
SOURCES = (
    "setup.py",
    "setup.cfg",
    "pyproject.toml",
    "MANIFEST.in",
    "README.md",
    "opmask",
    "launch",
    "configs",
    "slurm/profiles",
)
TIMEOUT_S = 300


def _site_folders(repo: str) -> list[str]:
    """This interpreter's ``sys.path`` folders outside the checkout (torch, fvcore, ...)."""
    repo_path = Path(repo).resolve()
    out = []
    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        path = Path(entry).resolve()
        if path == repo_path or repo_path in path.parents or path.suffix == ".zip":
            continue
        out.append(str(path))
    return list(dict.fromkeys(out + site.getsitepackages()))


def _run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv, wheel, env, empty work folder): the wheel of this checkout installed into a venv."""
    root = tmp_path_factory.mktemp("packaging")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PYTHONNOUSERSITE="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INDEX="1")
    source, wheels = root / "source", root / "wheels"
    for rel in SOURCES:
        src, dst = Path(REPO, rel), source / rel
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", str(source)]
        + ["-w", str(wheels), "-q"],
        cwd=root,
        env=env,
    )
    (wheel,) = wheels.glob("opmask-*.whl")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=root, env=env)
    python = venv / "bin" / "python"
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        cwd=root,
        env=env,
    ).stdout.strip()
    Path(purelib, "_outer_site.pth").write_text("\n".join(_site_folders(REPO)) + "\n")
    _run(
        [str(python), "-m", "pip", "install", "--no-deps", "--ignore-installed", "-q", str(wheel)],
        cwd=root,
        env=env,
    )
    work = root / "work"
    work.mkdir()
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        OPMASK_DATASETS=str(work / "datasets"),
        VIRTUAL_ENV=str(venv),
    )
    return venv, wheel, env, work


def test_the_wheel_ships_the_yaml_files_and_no_launch_package(installed):
    _, wheel, _, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert "launch" not in tops and "opmask_launch" in tops, sorted(tops)
    shipped = {n for n in names if n.startswith("opmask/_resources/")}
    for rel in (
        "configs/Base-RCNN-FPN.yaml",
        "configs/opmask_R50_FPN_130k.yaml",
        "configs/shapes/Base-shapes.yaml",
        SHAPES,
        "slurm/profiles/local.yaml",
    ):
        assert f"opmask/_resources/{rel}" in shipped, sorted(shipped)


def test_the_venv_imports_the_installed_wheel_only(installed):
    venv, _, env, work = installed
    code = (
        "import importlib.util, json, opmask, opmask_launch.submit\n"
        "from opmask.utils.resources import config_path, profile_path\n"
        "print(json.dumps({'opmask': opmask.__file__, 'launch': opmask_launch.__file__,\n"
        "    'top_launch': importlib.util.find_spec('launch') is not None,\n"
        f"    'config': config_path({SHAPES!r}), 'profile': profile_path('local')}}))"
    )
    out = json.loads(_run([str(venv / "bin" / "python"), "-c", code], work, env).stdout)
    for key in ("opmask", "launch", "config", "profile"):
        assert Path(out[key]).resolve().is_relative_to(venv.resolve()), out
    assert not out["top_launch"], out
    assert Path(out["config"]).is_file() and Path(out["profile"]).is_file(), out


def test_console_scripts_run_from_an_empty_folder(installed):
    venv, _, env, work = installed
    bin_ = venv / "bin"

    dry = _run(
        [str(bin_ / "opmask-submit"), "--config-file", "opmask_R50_FPN_130k.yaml"]
        + ["--exp-id", "x", "--dry-run", "--local", "--no-data-check"],
        work,
        env,
    )
    assert "#SBATCH" in dry.stdout and "# resolved training config:" in dry.stdout
    assert "FPN" in dry.stdout  # _BASE_ (Base-RCNN-FPN.yaml) was merged
    assert not any(work.iterdir()), "a dry run writes nothing"

    _run(
        [str(bin_ / "opmask-data"), "shapes", "--num-train", "6", "--num-val", "3"]
        + ["--image-size", "96"],
        work,
        env,
    )
    shapes = work / "datasets" / "shapes"
    assert (shapes / "train" / "annotations.json").is_file()
    assert (shapes / "val" / "annotations.json").is_file()

    run = work / "run"
    tiny = TINY + ["SOLVER.MAX_ITER", "4", "SOLVER.STEPS", "(3,)", "VIS_PERIOD", "0"]
    _run(
        [str(bin_ / "opmask-train"), "--config-file", SHAPES, "--output", str(run), *tiny],
        work,
        env,
    )
    iterations = [
        json.loads(line).get("iteration")
        for line in (run / "metrics.json").read_text().splitlines()
    ]
    assert max(i for i in iterations if i is not None) == 3, iterations
    assert (run / "models" / "model_final.pth").is_file()

    bench = _run([str(bin_ / "opmask-bench"), "--help"], work, env)
    assert bench.stdout.startswith("usage: opmask-bench")


def test_names_resolve_in_the_checkout_and_a_users_file_wins(tmp_path, monkeypatch):
    from opmask.utils.resources import config_path, profile_names, profile_path

    monkeypatch.chdir(tmp_path)
    shipped = os.path.join(REPO, "configs", "shapes", "opmask_R18_shapes.yaml")
    assert config_path(SHAPES) == shipped
    assert config_path("shapes/opmask_R18_shapes.yaml") == shipped
    assert config_path("opmask_R50_FPN_130k.yaml") == os.path.join(
        REPO, "configs", "opmask_R50_FPN_130k.yaml"
    )
    assert config_path("no_such.yaml") == "no_such.yaml"  # reported as the user wrote it
    assert config_path("../configs/opmask_R50_FPN_130k.yaml").startswith("..")
    own = tmp_path / "configs" / "shapes" / "opmask_R18_shapes.yaml"
    own.parent.mkdir(parents=True)
    own.write_text("SEED: 1\n")
    assert config_path(SHAPES) == SHAPES  # the user's file of that name wins

    local = os.path.join(REPO, "slurm", "profiles", "local.yaml")
    assert profile_path("local") == local
    assert profile_path("slurm/profiles/local.yaml") == local
    assert profile_path("mine") == os.path.join(REPO, "slurm", "profiles", "mine.yaml")
    (tmp_path / "local.yaml").write_text("nodes: 1\n")
    assert profile_path("local.yaml") == "local.yaml"
    assert {"local", "example-gpu-cluster"} <= set(profile_names())
