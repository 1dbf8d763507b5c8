"""Config schema (Detectron2 keys + OPMask keys) and strict loading."""

from .checks import check_device, validate
from .config import ConfigError, config_diff, get_cfg, load_config, merge_file, merge_overrides

__all__ = [
    "ConfigError",
    "check_device",
    "config_diff",
    "get_cfg",
    "load_config",
    "merge_file",
    "merge_overrides",
    "validate",
]
