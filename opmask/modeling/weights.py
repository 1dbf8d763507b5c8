"""Weights from files, mapped by name; never executes code stored in the file. And back out.

- ``.pth`` / ``.pt``: a torchvision ResNet state dict (``conv1.weight``, ``layer1.0.bn1.weight``…),
  a checkpoint of ours (``{"model": state_dict}``), or a Detectron2 ``GeneralizedRCNN``
  checkpoint (``{"model": state_dict}`` in Detectron2's names; the official OPMask code's for
  OPMask); read with ``torch.load(weights_only=True)``.
- ``.pkl``: Detectron2 model-zoo files (``{"model": {name: ndarray}, "__author__": …}``, full
  detectors or backbones such as ``res2.0.conv1.weight``) and Caffe2 MSRA backbones
  (``res2_0_branch2a_w``); read with an unpickler that only rebuilds numpy arrays and plain
  containers.

Detectron2 names and class order are converted by :mod:`.detectron2_names`; every file key that
maps to nothing is reported by name. :func:`detectron2_file` writes a model in Detectron2's names.
"""

from __future__ import annotations

import io
import logging
import pickle
import pickletools
import re
import zipfile
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..utils.errors import OPMaskInputError
from ..utils.safeload import check_tensors, check_weights_path, refusal_reason
from .detectron2_names import detectron2_aliases, from_detectron2_value, to_detectron2

logger = logging.getLogger(__name__)

BODY = "backbone.fpn.body."  # where the ResNet lives inside OPMask


class UnsafeWeightsError(OPMaskInputError):
    """The file asks to run code (or cannot be read as weights)."""


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
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


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    # model keys the file did not provide (only the backbone's when the file is a backbone)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # file keys that map to nothing
    ignored: list[str] = field(default_factory=list)  # file keys the config gives (pixel_mean…)


def check_weights_file(path: str) -> None:
    """Read ``path`` as :func:`load_weights` would, so a bad file fails before anything is
    written (raises what ``load_weights`` raises)."""
    _read_state(path)


def _read_state(path: str) -> tuple[dict, str]:
    check_weights_path(path)
    if path.endswith(".pkl"):
        data = safe_load_pickle(path)
        blobs = data.get("model", data.get("blobs", data))
        if not isinstance(blobs, dict):
            raise UnsafeWeightsError(f"{path}: expected a dict of arrays ({type(blobs).__name__})")
        return {k: v for k, v in blobs.items() if isinstance(v, np.ndarray)}, "pkl"
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeWeightsError(f"{path}: refused: {_refusal(path, e)}") from None
    except Exception as e:  # truncated, not a torch file, or corrupt inside
        reason = f"{type(e).__name__}: {e}".splitlines()[0]
        raise UnsafeWeightsError(f"{path}: not a readable weights file ({reason})") from None
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise UnsafeWeightsError(f"{path}: expected a state dict")
    return check_tensors(path, state), "pth"


def _refusal(path: str, e: Exception) -> str:
    """torch's reason, or (when it names no global, e.g. an opcode it stops at first) the
    globals outside torch the pickle references, found by reading its opcodes without running
    them."""
    reason = refusal_reason(e)
    if "global" in reason.lower():
        return reason
    found = [g for g in _pickle_globals(path) if not g.startswith(_PLAIN_GLOBALS)]
    return f"it references {', '.join(found)} (not plain weight data)" if found else reason


_PLAIN_GLOBALS = ("torch.", "collections.OrderedDict", "_codecs.encode", "numpy.")


def _pickle_globals(path: str) -> list[str]:
    """``module.name`` of every GLOBAL / STACK_GLOBAL in the file's pickle (a torch zip's
    ``data.pkl`` or a plain pickle), in order; [] when it cannot be parsed."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        if zipfile.is_zipfile(io.BytesIO(data)):
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
        return _globals_of(data)
    except Exception:  # noqa: BLE001 - only used to word an error message
        return []


def _globals_of(data: bytes) -> list[str]:
    """Globals named by the opcodes; STACK_GLOBAL's operands are the last two strings pushed
    (directly or from the memo)."""
    strings, memo, out, top = [], {}, [], None
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":
            out.append(arg.replace(" ", "."))
        elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
            out.append(f"{strings[-2]}.{strings[-1]}")
        if op.name == "MEMOIZE":
            memo[len(memo)] = top
        elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = top
        else:
            top = memo.get(arg) if op.name in ("GET", "BINGET", "LONG_BINGET") else arg
            if isinstance(top, str) and ("UNICODE" in op.name or "GET" in op.name):
                strings.append(top)
    return list(dict.fromkeys(out))


# Keys of old Detectron2 / Caffe2 files whose values come from the config, as Detectron2 skips them.
_IGNORED = re.compile(r"pixel_(mean|std)|.*anchor_generator\.cell_anchors\..*|.*_momentum")


def _target_name(key: str, kind: str, own: dict, aliases: dict) -> tuple[str | None, bool]:
    """Our key for file key ``key``, and whether it is in Detectron2's class order."""
    if key in own:  # a checkpoint of this very model
        return key, False
    if key in aliases:
        return aliases[key], True
    tv = _caffe2_to_torchvision(key) if kind == "pkl" else key
    return (BODY + tv if tv is not None and BODY + tv in own else None), False


def _as_tensor(value, kind: str) -> torch.Tensor:
    return torch.as_tensor(np.asarray(value)) if kind == "pkl" else value


def load_weights(model: nn.Module, path: str) -> LoadReport:
    """Copy matching tensors from ``path`` into ``model``; logs and returns what matched."""
    state, kind = _read_state(path)
    own, aliases = model.state_dict(), detectron2_aliases(model)
    report = LoadReport()
    for key, value in state.items():
        target, from_d2 = _target_name(key, kind, own, aliases)
        if target is None:
            (report.ignored if _IGNORED.fullmatch(key) else report.unexpected).append(key)
            continue
        tensor = _as_tensor(value, kind)
        tensor = from_detectron2_value(target, tensor) if from_d2 else tensor
        if tuple(tensor.shape) != tuple(own[target].shape):
            raise ValueError(
                f"{path}: {key} has shape {tuple(value.shape)}, model's {target} "
                f"has {tuple(own[target].shape)}"
            )
        own[target].copy_(tensor)
        report.loaded.append(target)
    report.missing = _missing(own, report.loaded)
    _log(report, path)
    return report


def _missing(own: dict, loaded: list[str]) -> list[str]:
    """Model keys not loaded: all of them for a detector checkpoint, else the backbone's."""
    whole = any(not k.startswith(BODY) for k in loaded)
    keys = [k for k in own if (whole or k.startswith(BODY)) and "num_batches_tracked" not in k]
    return sorted(set(keys) - set(loaded))


def _log(report: LoadReport, path: str) -> None:
    logger.info("Loaded %d tensors from %s", len(report.loaded), path)
    if report.missing:
        logger.warning("Model keys missing from %s: %s", path, report.missing)
    if report.unexpected:
        logger.warning("Keys in %s that map to nothing: %s", path, report.unexpected)
    if report.ignored:
        logger.info("Keys in %s taken from the config instead: %s", path, report.ignored)


def detectron2_file(model: nn.Module, pkl: bool, state: dict | None = None) -> tuple[bytes, list]:
    """The bytes of a file holding ``state`` (default the model's) in Detectron2's names and class
    order: a Detectron2 model-zoo ``.pkl`` (numpy arrays) if ``pkl``, else a ``.pth``
    ``{"model": state_dict}``; and the keys that have no Detectron2 name (left out)."""
    d2, left_out = to_detectron2(model, state)
    d2 = {k: v.detach().cpu().clone() for k, v in d2.items()}  # clone: no shared storage
    if pkl:
        payload = {"model": {k: v.numpy() for k, v in d2.items()}, "__author__": "opmask"}
        return pickle.dumps(payload, protocol=4), left_out
    buf = io.BytesIO()
    torch.save({"model": d2, "__author__": "opmask"}, buf)
    return buf.getvalue(), left_out
