"""Reading a sweep file: its keys and their types, the points it expands to, their exp-ids."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re

from .executor import LaunchError, Resources, check_resource, read_yaml


def exp_id(overrides: dict) -> str:
    """Stable, readable id from a point's overrides: ``PS-voc_SEED-1`` (hashed when long)."""
    slug = "_".join(f"{k.rsplit('.', 1)[-1]}-{v}" for k, v in overrides.items())
    slug = re.sub(r"[^A-Za-z0-9_.=-]+", "", slug.replace(" ", "")) or "base"
    if len(slug) <= 60:
        return slug
    return slug[:50] + "-" + hashlib.sha1(json.dumps(overrides).encode()).hexdigest()[:8]


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
