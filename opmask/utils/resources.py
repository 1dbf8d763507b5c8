"""The files OPMask ships besides code: training configs (``configs/``) and cluster profiles
(``slurm/profiles/``), found the same way in a source checkout and in an installed wheel.

An installed wheel holds copies under ``opmask/_resources/`` (``setup.py`` copies them into the
build tree; the source tree never has that folder), found with :mod:`importlib.resources`. A
source checkout or an editable install uses the repository's own ``configs/`` and ``slurm/``.

A path the user gives that exists always wins; otherwise a name relative to the repository
(``configs/shapes/opmask_R18_shapes.yaml``), to ``configs/`` (``opmask_R50_FPN_130k.yaml``) or,
for profiles, a bare profile name (``local``) resolves to the shipped copy. ``_BASE_`` references
keep working because the shipped configs keep their folder layout.

This module is the lowest layer: it imports nothing from OPMask.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path, PurePosixPath

_CHECKOUT = Path(__file__).resolve().parents[2]  # opmask/utils/resources.py -> the repository
_YAML = (".yaml", ".yml")


def resource_root() -> Path:
    """The folder holding ``configs/`` and ``slurm/profiles/``.

    Returns:
        ``opmask/_resources`` of an installed wheel when present, else the source checkout.
    """
    packaged = importlib.resources.files("opmask") / "_resources"
    if packaged.is_dir():
        return Path(str(packaged))  # pip installs wheels unzipped: a real folder
    return _CHECKOUT


def config_dir() -> Path:
    """The shipped ``configs/`` folder."""
    return resource_root() / "configs"


def profile_dir() -> Path:
    """The shipped ``slurm/profiles/`` folder."""
    return resource_root() / "slurm" / "profiles"


def _relative_parts(name: str, prefix: tuple[str, ...]) -> tuple[str, ...] | None:
    """``name``'s parts below ``prefix`` (which it may start with); None for absolute or ``..``."""
    rel = PurePosixPath(name.replace(os.sep, "/"))
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        return None
    parts = rel.parts
    return parts[len(prefix) :] if parts[: len(prefix)] == prefix else parts


def config_path(name: str) -> str:
    """The config file to open for ``name``.

    Args:
        name: a path (used as given when it exists), or a shipped config's name relative to the
            repository (``configs/shapes/opmask_R18_shapes.yaml``) or to ``configs/``
            (``opmask_R50_FPN_130k.yaml``, ``shapes/opmask_R18_shapes.yaml``).

    Returns:
        ``name`` when it exists or names no shipped config (so the caller's "not found" error
        shows what the user wrote), else the shipped copy's absolute path.
    """
    if os.path.isfile(name):
        return name
    parts = _relative_parts(name, ("configs",))
    if not parts:
        return name
    shipped = config_dir().joinpath(*parts)
    return str(shipped) if shipped.is_file() else name


def profile_path(name: str) -> str:
    """The cluster profile file to open for ``name``.

    Args:
        name: a YAML path (used as given when it exists), a shipped profile's file name or path
            relative to the repository (``slurm/profiles/local.yaml``), or a bare profile name
            (``local``).

    Returns:
        The file to open: for a bare name, the shipped ``NAME.yaml`` (which may not exist); for a
        YAML name, the shipped copy when ``name`` itself does not exist and one is shipped, else
        ``name``.
    """
    if not name.endswith(_YAML):
        return str(profile_dir() / (name + ".yaml"))
    if os.path.isfile(name):
        return name
    parts = _relative_parts(name, ("slurm", "profiles"))
    if not parts:
        return name
    shipped = profile_dir().joinpath(*parts)
    return str(shipped) if shipped.is_file() else name


def profile_names() -> list[str]:
    """The shipped cluster profiles' names (``local``, ...), sorted."""
    folder = profile_dir()
    if not folder.is_dir():
        return []
    return sorted(p.name.rsplit(".", 1)[0] for p in folder.iterdir() if p.name.endswith(_YAML))
