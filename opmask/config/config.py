"""Loading configs: YAML with ``_BASE_`` inheritance, ``KEY VALUE`` overrides, strict checking.

Every error is a :class:`ConfigError` whose message names the culprit (file, key, expected and
given type) so the CLI can print one line and exit non-zero.
"""

from __future__ import annotations

import ast
import difflib
import os
from typing import Any, Iterable, Sequence

import yaml
from fvcore.common.config import CfgNode

from ..utils.resources import config_path
from .checks import ConfigError, lookup, plain, validate, warn_unread
from .defaults import _C

BASE_KEY = "_BASE_"

# Names used by the original OPMask configs, mapped to ours.
_VALUE_ALIASES = {
    "MODEL.ROI_BOX_HEAD.NAME": {"CAMBoxHeadConv": "CAMBoxHead"},
    "MODEL.ROI_MASK_HEAD.NAME": {"CamMaskHead": "CAMMaskHead"},
}


def get_cfg() -> CfgNode:
    """A fresh copy of the defaults."""
    return _C.clone()


def _all_keys(node: CfgNode, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        full = prefix + k
        keys.append(full)
        if isinstance(v, CfgNode):
            keys.extend(_all_keys(v, full + "."))
    return keys


def _unknown_key_error(full_key: str, where: str) -> ConfigError:
    valid = _all_keys(_C)
    close = difflib.get_close_matches(full_key, valid, n=1, cutoff=0.5)
    if not close:  # fall back to matching the last component
        leaf = full_key.rsplit(".", 1)[-1]
        close = [k for k in valid if k.rsplit(".", 1)[-1] == leaf][:1]
    hint = f"; did you mean {close[0]}?" if close else ""
    return ConfigError(f"{where}: unknown config key {full_key}{hint}")


def _section_error(full_key: str, section: CfgNode, where: str) -> ConfigError:
    example = next(iter(section), "")
    return ConfigError(
        f"{where}: {full_key} is a section, not a key: give a value to one of its keys, "
        f"e.g. {full_key}.{example}"
    )


def _decode(value: Any) -> Any:
    """Strings that look like Python literals become them (as yacs does): "(1, 2)" -> (1, 2)."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def _coerce(full_key: str, default: Any, value: Any, where: str) -> Any:
    value = _decode(value)
    if isinstance(value, str):
        value = _VALUE_ALIASES.get(full_key, {}).get(value, value)
    if default is None:
        return value
    if value is None:
        raise ConfigError(
            f"{where}: config key {full_key} expects {type(default).__name__}, got None"
        )
    if isinstance(default, bool) or isinstance(value, bool):
        if isinstance(default, bool) and isinstance(value, bool):
            return value
    elif isinstance(default, float) and isinstance(value, int):
        return float(value)
    elif isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(default)(value)
    elif isinstance(value, type(default)):
        return value
    raise ConfigError(
        f"{where}: config key {full_key} expects {type(default).__name__}, "
        f"got {type(value).__name__} {value!r}"
    )


def _merge_dict(cfg: CfgNode, data: dict, where: str, prefix: str = "") -> None:
    """Merge a plain dict into cfg, refusing unknown keys and wrong types."""
    for key, value in data.items():
        full = prefix + str(key)
        if key not in cfg:
            raise _unknown_key_error(full, where)
        if isinstance(cfg[key], CfgNode):
            if not isinstance(value, dict):
                raise _section_error(full, cfg[key], where)
            _merge_dict(cfg[key], value, where, full + ".")
        else:
            cfg[key] = _coerce(full, _C_lookup(full), value, where)


def _C_lookup(full_key: str) -> Any:
    return lookup(_C, full_key)


def _load_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping of keys")
    return data


def merge_file(cfg: CfgNode, path: str, _seen: tuple[str, ...] = ()) -> None:
    """Merge a YAML file (and its ``_BASE_`` chain, base first) into cfg, checking each file."""
    path = os.path.abspath(path)
    if path in _seen:
        raise ConfigError(f"{path}: _BASE_ cycle through {' -> '.join(_seen)}")
    data = _load_yaml(path)
    base = data.pop(BASE_KEY, None)
    if base is not None:
        base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
        merge_file(cfg, base_path, _seen + (path,))
    _merge_dict(cfg, data, path)


def merge_overrides(cfg: CfgNode, opts: Sequence[str]) -> None:
    """Apply ``KEY VALUE`` pairs from the command line."""
    if len(opts) % 2:
        raise ConfigError(f"overrides must be KEY VALUE pairs; {opts[-1]!r} has no value")
    for key, value in zip(opts[0::2], opts[1::2]):
        section, _, leaf = key.rpartition(".")
        node = lookup(cfg, section, None) if section else cfg
        if not isinstance(node, CfgNode) or leaf not in node:
            raise _unknown_key_error(key, "command line")
        if isinstance(node[leaf], CfgNode):
            raise _section_error(key, node[leaf], "command line")
        node[leaf] = _coerce(key, _C_lookup(key), value, "command line")


def load_config(config_file: str | None, opts: Iterable[str] = ()) -> CfgNode:
    """Defaults, then the file chain, then the overrides; every value checked; frozen.

    Raises:
        ConfigError: missing/invalid file, unknown key, wrong type, or a value outside its
            declared range or choices (``checks.CHECKS``).
    """
    cfg = get_cfg()
    if config_file:
        path = config_path(config_file)  # the user's file, else a shipped config of that name
        if not os.path.isfile(path):  # report it as the user wrote it
            raise ConfigError(f"config file not found: {config_file}")
        merge_file(cfg, path)
    merge_overrides(cfg, list(opts))
    validate(cfg)
    warn_unread(cfg, get_cfg())
    cfg.freeze()
    return cfg


def config_diff(a: CfgNode, b: CfgNode, prefix: str = "") -> list[str]:
    """Full keys whose values differ between two configs of the same schema."""
    out = []
    for k in a:
        if isinstance(a[k], CfgNode):
            out += config_diff(a[k], b.get(k, CfgNode()), prefix + k + ".")
        elif plain(a[k]) != plain(b.get(k)):
            out.append(prefix + k)
    return out
