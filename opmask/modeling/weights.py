"""Backbone weights from files, mapped by name; never executes code stored in the file.

- ``.pth`` / ``.pt``: a torchvision ResNet state dict (``conv1.weight``, ``layer1.0.bn1.weight``…),
  or a checkpoint of ours (``{"model": state_dict}``); read with ``torch.load(weights_only=True)``.
- ``.pkl``: Detectron2 / Caffe2 MSRA backbones, with Caffe2 blob names (``res2_0_branch2a_w``) or
  Detectron2 module names (``res2.0.conv1.weight``); read with an unpickler that only rebuilds
  numpy arrays and plain containers.
"""

from __future__ import annotations

import logging
import pickle
import re
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..safeload import check_tensors, check_weights_path, refusal_reason

logger = logging.getLogger(__name__)

BODY = "backbone.fpn.body."  # where the ResNet lives inside OPMask


class UnsafeWeightsError(ValueError):
    """The file asks to run code (or cannot be read as weights)."""


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafeWeightsError(f"refusing to load {module}.{name} (not plain weight data)")


def safe_load_pickle(path: str) -> dict:
    with open(path, "rb") as f:
        try:
            data = _SafeUnpickler(f, encoding="latin1").load()
        except UnsafeWeightsError as e:
            raise UnsafeWeightsError(f"{path}: {e}") from None
        except Exception as e:  # truncated or not a pickle
            raise UnsafeWeightsError(f"{path}: not a readable weights pickle: {e}") from None
    if not isinstance(data, dict):
        raise UnsafeWeightsError(f"{path}: expected a dict of weights")
    return data


_CAFFE2_BN = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}


def _caffe2_to_torchvision(name: str) -> str | None:
    """``res2_0_branch2a_bn_s`` -> ``layer1.0.bn1.weight`` and friends; None if not backbone."""
    if name == "conv1_w":
        return "conv1.weight"
    m = re.fullmatch(r"res_conv1_bn_(s|b|rm|riv)", name)
    if m:
        return f"bn1.{_CAFFE2_BN[m.group(1)]}"
    m = re.fullmatch(r"res(\d)_(\d+)_branch(1|2[abc])_(w|bn_s|bn_b|bn_rm|bn_riv)", name)
    if not m:
        return None
    stage, block, branch, kind = m.groups()
    prefix = f"layer{int(stage) - 1}.{block}."
    if branch == "1":
        mod = "downsample.0" if kind == "w" else "downsample.1"
    else:
        idx = "abc".index(branch[1]) + 1
        mod = f"conv{idx}" if kind == "w" else f"bn{idx}"
    return prefix + mod + ("." + (_CAFFE2_BN[kind[3:]] if kind != "w" else "weight"))


def _detectron2_to_torchvision(name: str) -> str | None:
    """``res2.0.conv1.norm.weight`` -> ``layer1.0.bn1.weight``; ``stem.conv1.*`` -> stem."""
    name = name.removeprefix("backbone.bottom_up.")
    m = re.fullmatch(r"stem\.conv1\.(norm\.)?(\w+)", name)
    if m:
        return ("bn1." if m.group(1) else "conv1.") + m.group(2)
    m = re.fullmatch(r"res(\d)\.(\d+)\.(conv[123]|shortcut)\.(norm\.)?(\w+)", name)
    if not m:
        return None
    stage, block, conv, norm, leaf = m.groups()
    if conv == "shortcut":
        mod = "downsample.1" if norm else "downsample.0"
    else:
        mod = f"bn{conv[-1]}" if norm else conv
    return f"layer{int(stage) - 1}.{block}.{mod}.{leaf}"


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # backbone keys the file did not provide
    unexpected: list[str] = field(default_factory=list)  # file keys that map to nothing


def check_weights_file(path: str) -> None:
    """Read ``path`` as :func:`load_weights` would, so a bad file fails before anything is
    written (raises what ``load_weights`` raises)."""
    _read_state(path)


def _read_state(path: str) -> tuple[dict, str]:
    check_weights_path(path)
    if path.endswith(".pkl"):
        data = safe_load_pickle(path)
        blobs = data.get("model", data.get("blobs", data))
        return {k: v for k, v in blobs.items() if isinstance(v, np.ndarray)}, "pkl"
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeWeightsError(f"{path}: refused: {refusal_reason(e)}") from None
    except Exception as e:  # truncated, not a torch file, or corrupt inside
        reason = f"{type(e).__name__}: {e}".splitlines()[0]
        raise UnsafeWeightsError(f"{path}: not a readable weights file ({reason})") from None
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise UnsafeWeightsError(f"{path}: expected a state dict")
    return check_tensors(path, state), "pth"


def _target_name(key: str, kind: str, own: dict) -> str | None:
    if key in own:  # a checkpoint of this very model
        return key
    if kind == "pkl":
        tv = _caffe2_to_torchvision(key) or _detectron2_to_torchvision(key)
    else:
        tv = key
    return BODY + tv if tv is not None and BODY + tv in own else None


def load_weights(model: nn.Module, path: str) -> LoadReport:
    """Copy matching tensors from ``path`` into ``model``; logs and returns what matched."""
    state, kind = _read_state(path)
    own = model.state_dict()
    report = LoadReport()
    for key, value in state.items():
        target = _target_name(key, kind, own)
        if target is None:
            report.unexpected.append(key)
            continue
        tensor = torch.as_tensor(np.asarray(value)) if kind == "pkl" else value
        if tuple(tensor.shape) != tuple(own[target].shape):
            raise ValueError(
                f"{path}: {key} has shape {tuple(tensor.shape)}, model's {target} "
                f"has {tuple(own[target].shape)}"
            )
        own[target].copy_(tensor)
        report.loaded.append(target)
    body_keys = [k for k in own if k.startswith(BODY) and "num_batches_tracked" not in k]
    report.missing = sorted(set(body_keys) - set(report.loaded))
    logger.info("Loaded %d tensors from %s", len(report.loaded), path)
    if report.missing:
        logger.warning("Backbone keys missing from %s: %s", path, report.missing)
    if report.unexpected:
        logger.info("Keys in %s not used: %s", path, report.unexpected)
    return report
