"""Config schema (Detectron2 keys + OPMask keys) and strict loading."""

from .config import ConfigError, config_diff, get_cfg, load_config, merge_file, merge_overrides

__all__ = ["ConfigError", "config_diff", "get_cfg", "load_config", "merge_file", "merge_overrides"]
