"""Reading a sweep file: its keys and their types, the points it expands to, their exp-ids."""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import os
import re

from .executor import LaunchError, Resources, check_resource, read_yaml


def exp_id(overrides: dict, *, hashed: bool = False) -> str:
    """Stable, readable id from a point's overrides: ``PS-voc_SEED-1``. A short hash of the
    overrides is appended (``NOTE-caf-1a2b3c4d``) when the readable form drops characters (non-ASCII
    letters, parentheses, commas, spaces ...), is long, or ``hashed``: different overrides then
    never share an id."""
    if not overrides:
        return "base"
    text = "_".join(f"{k.rsplit('.', 1)[-1]}-{v}" for k, v in overrides.items())
    slug = re.sub(r"[^A-Za-z0-9_.=-]+", "", text)
    if slug == text and len(slug) <= 60 and not hashed:
        return slug
    digest = hashlib.sha1(json.dumps(overrides, default=str).encode()).hexdigest()[:8]
    return (slug[:50] or "base") + "-" + digest


def run_names(points: list[dict]) -> list[str]:
    """The exp-id of each point's overrides (:func:`exp_id`); two different points whose
    readable ids would be equal (keys that differ before their last dot) both get the hash.

    Raises:
        LaunchError: two points have the same overrides (naming both and the overrides).
    """
    first: dict[str, int] = {}
    for i, overrides in enumerate(points):
        key = json.dumps(overrides, sort_keys=True, default=str)
        j = first.setdefault(key, i)
        if j != i:
            raise LaunchError(
                f"points {j} and {i} have the same overrides {overrides}: "
                "remove one (a grid value or a point listed twice)"
            )
    names = [exp_id(o) for o in points]
    counts = collections.Counter(names)
    names = [exp_id(o, hashed=True) if counts[n] > 1 else n for o, n in zip(points, names)]
    taken: dict[str, int] = {}
    for i, name in enumerate(names):
        j = taken.setdefault(name, i)
        if j != i:  # a hash collision: vanishingly rare, but never two points in one folder
            raise LaunchError(
                f"points {j} and {i} get the same run name {name!r} "
                f"(overrides {points[j]} and {points[i]})"
            )
    return names


def expand_points(spec: dict) -> list[dict]:
    grid = spec.get("grid") or {}
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    listed = spec.get("points") or [{}]
    return [{**spec.get("overrides", {}), **c, **p} for p in listed for c in combos]


def read_sweep_file(path: str) -> dict:
    if not os.path.isfile(path):
        raise LaunchError(f"sweep file not found: {path}")
    spec = read_yaml(path)
    if not isinstance(spec, dict) or "config" not in spec:
        raise LaunchError(f"{path}: a sweep file needs at least 'config' (and 'grid' or 'points')")
    unknown = sorted(set(spec) - {"name", "config", "overrides", "grid", "points", "resources"})
    if unknown:
        raise LaunchError(f"{path}: unknown sweep keys {unknown}")
    _check_types(spec, path)
    # A config path is relative to the current folder, else to the sweep file's folder, else a
    # shipped config's name (load_config finds those).
    beside = os.path.join(os.path.dirname(os.path.abspath(path)), spec["config"])
    if not os.path.isfile(spec["config"]) and os.path.isfile(beside):
        spec["config"] = beside
    spec.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    return spec


def _check_types(spec: dict, path: str) -> None:
    """Each sweep key has its shape: strings, mappings of KEY: value, a list of mappings."""
    for key in ("name", "config"):
        if key in spec and not (isinstance(spec[key], str) and spec[key]):
            raise LaunchError(f"{path}: '{key}' must be a non-empty string, got {spec[key]!r}")
    for key in ("overrides", "grid", "resources"):
        if not isinstance(spec.get(key) or {}, dict):
            raise LaunchError(f"{path}: '{key}' must be a mapping, got {spec[key]!r}")
    grid = spec.get("grid") or {}
    bad = [k for k, v in grid.items() if not isinstance(v, list) or not v]
    if bad:
        raise LaunchError(f"{path}: grid values must be non-empty lists ({bad})")
    points = spec.get("points") or []
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise LaunchError(f"{path}: 'points' must be a list of mappings, got {points!r}")
    for where, mapping in [("overrides", spec.get("overrides") or {}), ("grid", grid)] + [
        (f"points[{i}]", p) for i, p in enumerate(points)
    ]:
        bad = [k for k in mapping if not isinstance(k, str)]
        if bad:
            raise LaunchError(f"{path}: {where} keys must be config keys (strings), got {bad}")
    for key, value in (spec.get("resources") or {}).items():
        if key not in Resources.__dataclass_fields__:
            raise LaunchError(f"{path}: unknown resources key {key!r}")
        check_resource(key, value, f"{path}: resources.{key}")
