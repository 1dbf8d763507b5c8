"""Layers import downwards only: utils < config < data < modeling < evaluation < train < run <
tools < bench < cli,
and the launcher (``launch/``) sits above the whole library. Every import statement counts,
also those inside functions (a lazy import is still a dependency)."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYERS = [
    "utils",
    "config",
    "data",
    "modeling",
    "evaluation",
    "train",
    "run",
    "tools",
    "bench",
    "cli",
]


def _imported_modules(path: pathlib.Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file at ``path`` of ``package``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((node.lineno, name))
            if node.module is None or name in ("opmask",):  # from . import comm, checks
                out += [(node.lineno, f"{name}.{a.name}") for a in node.names]
    return out


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] in ("launch", "opmask_launch"):
        return len(LAYERS)
    if parts[0] != "opmask" or len(parts) < 2 or parts[1] not in LAYERS:
        return None
    return LAYERS.index(parts[1])


def upward_imports(root: pathlib.Path) -> list[str]:
    """``file:line imports module`` for every import of a higher layer under ``root/opmask``."""
    bad = []
    for path in sorted((root / "opmask").rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        package = ".".join(rel.parts[:-1])
        own = _layer(".".join(rel.parts))
        if own is None:
            continue
        for line, module in _imported_modules(path, package):
            other = _layer(module)
            if other is not None and other > own:
                bad.append(f"{rel}.py:{line} imports {module}")
    return bad


def test_the_package_imports_downwards_only():
    assert upward_imports(ROOT) == []


@pytest.mark.parametrize(
    "lower,statement",
    [
        ("evaluation/bad.py", "from ..train.checkpoint import Checkpointer\n"),
        ("utils/bad.py", "def f():\n    from opmask.config import load_config\n"),
        ("modeling/bad.py", "import opmask.cli.train\n"),
        ("train/bad.py", "from ..run.folder import RunFolder\n"),
        ("bench/bad.py", "from opmask_launch import job\n"),
    ],
)
def test_an_upward_import_is_found(tmp_path, lower, statement):
    for layer in LAYERS:
        (tmp_path / "opmask" / layer).mkdir(parents=True)
    (tmp_path / "opmask" / lower).write_text(statement)
    (found,) = upward_imports(tmp_path)
    assert found.startswith(f"opmask/{lower}:")
