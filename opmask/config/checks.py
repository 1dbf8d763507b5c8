"""The allowed values of every config key: one table, checked by ``load_config``.

``CHECKS`` maps each leaf key of ``defaults.py`` to a check (a test keeps the two in step); a
check wrapped in :func:`resumable` marks a key that may change when a run is resumed (its second
column: :data:`RESUME_SAFE_KEYS`);
``CROSS_CHECKS`` relate keys to each other. A check returns what is wrong (``"must be >= 1"``) or
None; :func:`validate` turns the first problem into a :class:`ConfigError` naming key and value.
Whether a device is present is not a property of the config but of the machine, so it is checked
by :func:`check_device` where training starts, not at load time (a login node has no GPU).

This table is the one owner of what a config value may be: the builders (model, solver, loaders,
evaluator) trust the checked config, so whatever a builder needs of a value (a head's NUM_CONV,
anchors per RPN level, FPN levels, GroupNorm widths, image sizes) is a row or a cross-check here,
refused before any run folder exists. ``tests/config/test_builder_raises.py`` maps every ``raise``
of the builders to the check that refuses its value first.
"""

from __future__ import annotations

import logging
import math
import operator
import re
from typing import Any, Callable, Iterator

from fvcore.common.config import CfgNode

from ..utils.errors import OPMaskInputError

logger = logging.getLogger(__name__)

Check = Callable[[Any], "str | None"]


class ConfigError(OPMaskInputError):
    """A config file, key or value is wrong; the message names which."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _outside(v, lo=None, hi=None, gt=None, lt=None) -> str | None:
    """The bound the number ``v`` breaks (``> gt``, ``< lt``, ``>= lo``, ``<= hi``), or None."""
    rules = ((gt, ">", operator.gt), (lt, "<", operator.lt), (lo, ">=", operator.ge))
    for bound, sign, holds in (*rules, (hi, "<=", operator.le)):
        if bound is not None and not holds(v, bound):
            return f"must be {sign} {bound}"
    return None


def integer(lo: int | None = None, hi: int | None = None) -> Check:
    return lambda v: "must be an integer" if not _is_int(v) else _outside(v, lo, hi)


def resumable(check: Check) -> Check:
    """``check``, marking its key resume-safe: a run may be resumed with another value (how far,
    how often, where and how fast it runs, what it evaluates on; never what it learns)."""

    def marked(v):
        return check(v)

    marked.resume_safe = True
    return marked


def period(off: bool) -> Check:
    """Every N iterations: N >= 1, or also 0 (= off) when ``off``."""
    inner = integer(0 if off else 1)

    def check(v):
        problem = inner(v)
        return problem and problem + (" (0: off)" if off else "")

    return check


def number(
    lo: float | None = None,
    hi: float | None = None,
    *,
    gt: float | None = None,
    lt: float | None = None,
) -> Check:
    def check(v):
        if not _is_num(v) or not math.isfinite(v):
            return "must be a finite number"
        return _outside(v, lo, hi, gt, lt)

    return check


def choice(*options: Any) -> Check:
    return lambda v: (
        None
        if v in options and type(v) is type(options[0])
        else (f"must be one of {list(options)}")
    )


def text(nonempty: bool = False) -> Check:
    def check(v):
        if not isinstance(v, str):
            return "must be a string"
        return "must not be empty" if nonempty and not v.strip() else None

    return check


def flag(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def anything(v: Any) -> None:
    return None


def seq(
    item: Check, *, length: int | None = None, min_len: int = 0, increasing: bool = False
) -> Check:
    """A list/tuple whose items pass ``item``."""

    def check(v):
        if not isinstance(v, (list, tuple)):
            return "must be a list"
        if length is not None and len(v) != length:
            return f"must have {length} items"
        if len(v) < min_len:
            return f"must have at least {min_len} item{'s' if min_len > 1 else ''}"
        for i, x in enumerate(v):
            problem = item(x)
            if problem:
                return f"item {i} ({x!r}) {problem}"
        if increasing and any(b <= a for a, b in zip(v, v[1:])):
            return "must be strictly increasing"
        return None

    return check


def subset(*options: str) -> Check:
    return seq(choice(*options), min_len=1)


def ordered(*options: str, consecutive: bool = False) -> Check:
    """A non-empty list of ``options`` in their order, each at most once; ``consecutive``: no
    gaps either (``[res3, res4, res5]``, not ``[res2, res4]``)."""
    inner = subset(*options)

    def check(v):
        problem = inner(v)
        if problem:
            return problem
        pos = [options.index(x) for x in v]
        if any(b <= a for a, b in zip(pos, pos[1:])):
            return f"must be in the order {list(options)}, each at most once"
        if consecutive and pos[-1] - pos[0] != len(pos) - 1:
            return "must be consecutive (no gaps)"
        return None

    return check


def device(v: Any) -> str | None:
    ok = isinstance(v, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", v)
    return None if ok else "must be auto, cpu, cuda or cuda:N"


NORMS = ("", "BN", "SyncBN", "GN", "FrozenBN")
RES = ("res2", "res3", "res4", "res5")
LEVELS = ("p2", "p3", "p4", "p5", "p6")
POOLERS = choice("ROIAlignV2", "ROIAlign")
FRACTION = number(0.0, 1.0)
POSITIVE = integer(1)
NONNEG = integer(0)
GN_GROUPS_MIN = 8  # get_norm's GroupNorm: 32 groups, or 8 when the width is not a multiple of 32
# Resized image sides (INPUT.MIN_SIZE_*, MAX_SIZE_*) of at least the backbone's stride: a side of
# 1 px (MAX_SIZE_TRAIN 1) cannot be flipped into a tensor (negative stride), and the FPN would see
# less than one cell of its coarse levels.
IMAGE_SIDE = integer(32)

CHECKS: dict[str, Check] = {
    "VERSION": integer(1),
    "MODEL.META_ARCHITECTURE": text(nonempty=True),
    "MODEL.DEVICE": resumable(device),
    "MODEL.WEIGHTS": resumable(text()),
    "MODEL.MASK_ON": flag,
    "MODEL.CHANNELS_LAST": resumable(flag),
    "MODEL.COMPILE": resumable(flag),
    "MODEL.PIXEL_MEAN": seq(number(), length=3),
    "MODEL.PIXEL_STD": seq(number(gt=0), length=3),
    "MODEL.BACKBONE.NAME": choice("build_resnet_fpn_backbone"),
    "MODEL.BACKBONE.FREEZE_AT": integer(0, 5),
    "MODEL.RESNETS.DEPTH": choice(18, 34, 50, 101),
    "MODEL.RESNETS.OUT_FEATURES": subset(*RES),
    "MODEL.RESNETS.NORM": choice(*NORMS[1:]),
    "MODEL.RESNETS.STRIDE_IN_1X1": flag,
    "MODEL.FPN.IN_FEATURES": ordered(*RES, consecutive=True),  # level names follow the stages
    "MODEL.FPN.OUT_CHANNELS": POSITIVE,
    "MODEL.FPN.NORM": choice(*NORMS[:4]),
    "MODEL.ANCHOR_GENERATOR.SIZES": seq(seq(number(gt=0), min_len=1), min_len=1),
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": seq(seq(number(gt=0), min_len=1), min_len=1),
    "MODEL.ANCHOR_GENERATOR.OFFSET": number(0.0, lt=1.0),
    "MODEL.PROPOSAL_GENERATOR.MIN_SIZE": number(0.0),
    "MODEL.RPN.IN_FEATURES": ordered(*LEVELS),
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE": POSITIVE,
    "MODEL.RPN.POSITIVE_FRACTION": FRACTION,
    "MODEL.RPN.IOU_THRESHOLDS": seq(FRACTION, length=2, increasing=True),
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": POSITIVE,
    "MODEL.RPN.PRE_NMS_TOPK_TEST": POSITIVE,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": POSITIVE,
    "MODEL.RPN.POST_NMS_TOPK_TEST": POSITIVE,
    "MODEL.RPN.NMS_THRESH": FRACTION,
    "MODEL.RPN.BBOX_REG_WEIGHTS": seq(number(gt=0), length=4),
    "MODEL.RPN.SMOOTH_L1_BETA": number(0.0),
    "MODEL.RPN.LOSS_WEIGHT": number(0.0),
    "MODEL.RPN.BBOX_REG_LOSS_WEIGHT": number(0.0),
    "MODEL.ROI_HEADS.NAME": choice("StandardROIHeads", "FPNCamRoiHeads"),
    "MODEL.ROI_HEADS.NUM_CLASSES": POSITIVE,
    "MODEL.ROI_HEADS.IN_FEATURES": ordered(*LEVELS, consecutive=True),  # the pooler's levels
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": POSITIVE,
    "MODEL.ROI_HEADS.POSITIVE_FRACTION": FRACTION,
    "MODEL.ROI_HEADS.IOU_THRESHOLDS": seq(FRACTION, length=1),
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST": FRACTION,
    "MODEL.ROI_HEADS.NMS_THRESH_TEST": FRACTION,
    "MODEL.ROI_BOX_HEAD.NAME": choice("FastRCNNConvFCHead", "CAMBoxHead"),
    "MODEL.ROI_BOX_HEAD.NUM_CONV": NONNEG,
    "MODEL.ROI_BOX_HEAD.CONV_DIM": POSITIVE,
    "MODEL.ROI_BOX_HEAD.NUM_FC": NONNEG,
    "MODEL.ROI_BOX_HEAD.FC_DIM": POSITIVE,
    "MODEL.ROI_BOX_HEAD.NORM": choice(*NORMS[:4]),
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": POSITIVE,
    "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO": NONNEG,
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE": POOLERS,
    "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS": seq(number(gt=0), length=4),
    "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA": number(0.0),
    "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": choice(False),
    "MODEL.ROI_MASK_HEAD.NAME": choice("MaskRCNNConvUpsampleHead", "CAMMaskHead"),
    "MODEL.ROI_MASK_HEAD.NUM_CONV": NONNEG,
    "MODEL.ROI_MASK_HEAD.CONV_DIM": POSITIVE,
    "MODEL.ROI_MASK_HEAD.NUM_CONV_UP": NONNEG,
    "MODEL.ROI_MASK_HEAD.NORM": choice(*NORMS[:4]),
    "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION": POSITIVE,
    "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO": NONNEG,
    "MODEL.ROI_MASK_HEAD.POOLER_TYPE": POOLERS,
    "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK": choice(True),
    "INPUT.MIN_SIZE_TRAIN": seq(IMAGE_SIDE, min_len=1),
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": choice("choice", "range"),
    "INPUT.MAX_SIZE_TRAIN": IMAGE_SIDE,
    "INPUT.MIN_SIZE_TEST": IMAGE_SIDE,
    "INPUT.MAX_SIZE_TEST": IMAGE_SIDE,
    "INPUT.FORMAT": choice("BGR", "RGB"),
    "INPUT.RANDOM_FLIP": choice("horizontal", "none"),
    "DATASETS.TRAIN": seq(text(nonempty=True)),
    "DATASETS.TEST": resumable(seq(text(nonempty=True))),
    "DATASETS.CACHE_DIR": text(),
    "DATALOADER.NUM_WORKERS": resumable(NONNEG),
    "DATALOADER.ASPECT_RATIO_GROUPING": flag,
    "DATALOADER.FILTER_EMPTY_ANNOTATIONS": flag,
    "DATALOADER.WORKER_MMAP_THRESHOLD": resumable(NONNEG),
    "SOLVER.MAX_ITER": resumable(POSITIVE),
    "SOLVER.OPTIMIZER": choice("SGD", "AdamW"),
    "SOLVER.BASE_LR": number(gt=0.0),
    "SOLVER.MOMENTUM": number(0.0, 1.0),
    "SOLVER.NESTEROV": flag,
    "SOLVER.WEIGHT_DECAY": number(0.0),
    "SOLVER.WEIGHT_DECAY_NORM": number(0.0),
    "SOLVER.GAMMA": number(gt=0.0),
    "SOLVER.STEPS": seq(POSITIVE, increasing=True),
    "SOLVER.WARMUP_FACTOR": number(0.0, 1.0),
    "SOLVER.WARMUP_ITERS": NONNEG,
    "SOLVER.WARMUP_METHOD": choice("linear", "constant"),
    "SOLVER.CHECKPOINT_PERIOD": resumable(period(off=False)),
    "SOLVER.MAX_TO_KEEP": resumable(NONNEG),
    "SOLVER.IMS_PER_BATCH": POSITIVE,
    "SOLVER.CLIP_GRADIENTS.ENABLED": flag,
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": choice("value", "norm", "full_model"),
    "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": number(gt=0.0),
    "SOLVER.CLIP_GRADIENTS.NORM_TYPE": lambda v: None if v == math.inf else number(gt=0.0)(v),
    "SOLVER.TF32": resumable(flag),
    "SOLVER.AMP.ENABLED": flag,
    "SOLVER.AMP.DTYPE": choice("float16", "bfloat16"),
    "TEST.EVAL_PERIOD": resumable(period(off=True)),
    "TEST.DETECTIONS_PER_IMAGE": POSITIVE,
    "TEST.EVALUATOR": choice("pycocotools", "faster_coco_eval"),
    "TEST.EXPECTED_RESULTS": anything,
    "OUTPUT_DIR": resumable(text(nonempty=True)),
    "SEED": integer(hi=2**32 - 1),  # negative: drawn at random
    "CUDNN_BENCHMARK": resumable(flag),
    "VIS_PERIOD": resumable(period(off=True)),
    "EXP.PS": choice("voc", "nvoc", "40_classes_inc", "", "dataset"),
    "EXP.STRONG_CATEGORY_IDS": seq(integer()),
    "EXP.TRAINER": text(),
    "EXP.PRINT_PERIOD": resumable(period(off=False)),
    "EXP.FOLDER_NAME": text(nonempty=True),
    "EXP.VIS_ROIS": resumable(NONNEG),
    "EXP.VIS_PREDICTIONS": resumable(NONNEG),
    "EXP.HPARAMS": seq(text(nonempty=True)),
}


def _range_sampling(cfg: CfgNode) -> tuple[str, str] | None:
    sizes = cfg.INPUT.MIN_SIZE_TRAIN
    if cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING != "range":
        return None
    if len(sizes) != 2:
        return "INPUT.MIN_SIZE_TRAIN_SAMPLING", "is range: INPUT.MIN_SIZE_TRAIN needs 2 sizes"
    if sizes[0] > sizes[1]:
        return (
            "INPUT.MIN_SIZE_TRAIN",
            f"must be (low, high) with low <= high for range sampling, got {tuple(sizes)}",
        )
    return None


def fpn_levels(cfg: CfgNode) -> list[str]:
    """The FPN's outputs: one level per stage of MODEL.FPN.IN_FEATURES, then one more (max-pool),
    e.g. res2..res5 -> p2..p6 (``ResNetFPN.level_names``)."""
    first = int(cfg.MODEL.FPN.IN_FEATURES[0][-1])
    return [f"p{first + k}" for k in range(len(cfg.MODEL.FPN.IN_FEATURES) + 1)]


def _features_are_fpn_outputs(cfg: CfgNode) -> tuple[str, str] | None:
    levels = fpn_levels(cfg)
    for key in ("MODEL.RPN.IN_FEATURES", "MODEL.ROI_HEADS.IN_FEATURES"):
        section, leaf = key.split(".")[1:]
        missing = [f for f in cfg.MODEL[section][leaf] if f not in levels]
        if missing:
            fpn = list(cfg.MODEL.FPN.IN_FEATURES)
            return key, (
                f"names {missing[0]}, which MODEL.FPN.IN_FEATURES {fpn} does not give"
                f" (it gives {', '.join(levels)})"
            )
    return None


def _anchors_per_level(cfg: CfgNode) -> tuple[str, str] | None:
    """SIZES and ASPECT_RATIOS give one list for every RPN level (or one for all), and every
    level the same number of anchors (sizes x ratios): the RPN head is shared by the levels."""
    a, rpn = cfg.MODEL.ANCHOR_GENERATOR, list(cfg.MODEL.RPN.IN_FEATURES)
    n = len(rpn)
    for leaf in ("SIZES", "ASPECT_RATIOS"):
        if len(a[leaf]) not in (1, n):
            return f"MODEL.ANCHOR_GENERATOR.{leaf}", (
                f"has {len(a[leaf])} lists for {n} RPN level(s) (MODEL.RPN.IN_FEATURES {rpn}):"
                f" give 1 list, or {n}"
            )
    sizes = [len(s) for s in a.SIZES] * (n if len(a.SIZES) == 1 else 1)
    ratios = [len(r) for r in a.ASPECT_RATIOS] * (n if len(a.ASPECT_RATIOS) == 1 else 1)
    counts = [s * r for s, r in zip(sizes, ratios)]
    if len(set(counts)) > 1:
        return "MODEL.ANCHOR_GENERATOR.SIZES", (
            f"x ASPECT_RATIOS give the levels {counts} anchors; the RPN head shared by the"
            " levels needs the same number at every level"
        )
    return None


def _box_head_convs(cfg: CfgNode) -> tuple[str, str] | None:
    b = cfg.MODEL.ROI_BOX_HEAD
    if b.NAME == "FastRCNNConvFCHead" and b.NUM_CONV != 0:
        return "MODEL.ROI_BOX_HEAD.NUM_CONV", (
            f"must be 0 with FastRCNNConvFCHead (it has FC layers only), got {b.NUM_CONV}"
        )
    if b.NAME == "CAMBoxHead" and b.NUM_CONV < 1:
        return "MODEL.ROI_BOX_HEAD.NUM_CONV", (
            f"must be >= 1 with CAMBoxHead (the object mask prior is computed from its conv"
            f" maps), got {b.NUM_CONV}"
        )
    return None


def cam_box_head_widths(in_channels: int, num_conv: int, conv_dim: int) -> list[int]:
    """CAMBoxHead's conv widths: doubling from the input width, capped by and ending at
    ``conv_dim`` (the model builds its convs from this list)."""
    widths = [min(in_channels * 2 ** (i + 1), conv_dim) for i in range(num_conv)]
    return widths[:-1] + [conv_dim] if widths else []


def _group_norm_widths(cfg: CfgNode) -> tuple[str, str] | None:
    """GroupNorm takes 32 groups, or 8 when the width is not a multiple of 32 (``get_norm``):
    every normed width must be a multiple of 8."""
    m = cfg.MODEL
    normed = [("MODEL.FPN.NORM", m.FPN.NORM, [m.FPN.OUT_CHANNELS], "MODEL.FPN.OUT_CHANNELS")]
    if m.ROI_BOX_HEAD.NAME == "CAMBoxHead":
        widths = cam_box_head_widths(
            m.FPN.OUT_CHANNELS, m.ROI_BOX_HEAD.NUM_CONV, m.ROI_BOX_HEAD.CONV_DIM
        )
        source = "MODEL.FPN.OUT_CHANNELS doubled up to MODEL.ROI_BOX_HEAD.CONV_DIM"
        normed.append(("MODEL.ROI_BOX_HEAD.NORM", m.ROI_BOX_HEAD.NORM, widths, source))
    if m.MASK_ON and m.ROI_MASK_HEAD.NUM_CONV:
        mask = m.ROI_MASK_HEAD
        normed.append(
            ("MODEL.ROI_MASK_HEAD.NORM", mask.NORM, [mask.CONV_DIM], "MODEL.ROI_MASK_HEAD.CONV_DIM")
        )
    for key, norm, widths, source in normed:
        bad = [w for w in widths if w % GN_GROUPS_MIN]
        if norm == "GN" and bad:
            return key, (
                f"is GN: width {bad[0]} ({source}) is not a multiple of {GN_GROUPS_MIN}"
                " (GroupNorm uses 32 groups, or 8)"
            )
    return None


def _unique_strong_ids(cfg: CfgNode) -> tuple[str, str] | None:
    ids = cfg.EXP.STRONG_CATEGORY_IDS
    if len(set(ids)) != len(ids):
        return "EXP.STRONG_CATEGORY_IDS", "names a category twice"
    return None


def _hparams_are_keys(cfg: CfgNode) -> tuple[str, str] | None:
    known = {k for k, _ in leaves(cfg)}
    unknown = [k for k in cfg.EXP.HPARAMS if k not in known]
    if unknown:
        return "EXP.HPARAMS", f"names {unknown[0]!r}, which is not a config key"
    return None


def _prior_needs_cam_box_head(cfg: CfgNode) -> tuple[str, str] | None:
    heads = cfg.MODEL.ROI_MASK_HEAD.NAME, cfg.MODEL.ROI_BOX_HEAD.NAME
    if heads[0] == "CAMMaskHead" and heads[1] != "CAMBoxHead":
        return "MODEL.ROI_MASK_HEAD.NAME", "is CAMMaskHead: the prior needs ROI_BOX_HEAD CAMBoxHead"
    return None


CROSS_CHECKS: list[Callable[[CfgNode], "tuple[str, str] | None"]] = [
    _prior_needs_cam_box_head,
    _box_head_convs,
    _features_are_fpn_outputs,
    _anchors_per_level,
    _group_norm_widths,
    _range_sampling,
    _unique_strong_ids,
    _hparams_are_keys,
]


# Detectron2 keys that nothing here reads, with what serves instead: accepted so that Detectron2
# configs load, one warning each where a config gives another value than the default, and
# resume-safe (changing them changes nothing).
UNREAD_KEYS = {
    "VERSION": "one config schema is supported",
    "MODEL.META_ARCHITECTURE": "one detector class serves the baseline and OPMask",
    "MODEL.RESNETS.OUT_FEATURES": "the FPN reads the stages in MODEL.FPN.IN_FEATURES",
    "TEST.EXPECTED_RESULTS": "Detectron2's regression-test expectations are not checked",
    "EXP.TRAINER": "one training loop serves every config",
}


# Keys that may change between a run and its resumption: the resumable rows, and every key that
# nothing reads.
RESUME_SAFE_KEYS = frozenset(
    [k for k, check in CHECKS.items() if getattr(check, "resume_safe", False)] + list(UNREAD_KEYS)
)


def check_world(cfg: CfgNode, world_size: int, processes: str = "processes") -> None:
    """The global batch ``SOLVER.IMS_PER_BATCH`` splits evenly over ``world_size`` processes
    (``processes`` says how the user set that number, e.g. "--num-gpus x --num-machines").

    Raises:
        ConfigError: it does not.
    """
    if cfg.SOLVER.IMS_PER_BATCH % world_size:
        raise ConfigError(
            f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} is not a multiple of the "
            f"{world_size} {processes}"
        )


def warn_unread(cfg: CfgNode, defaults: CfgNode) -> list[str]:
    """Log one warning per ``UNREAD_KEYS`` key whose value differs from ``defaults``; returns
    those keys."""
    values = dict(leaves(cfg))
    default = dict(leaves(defaults))
    changed = [k for k in UNREAD_KEYS if plain(values[k]) != plain(default[k])]
    for k in changed:
        logger.warning(
            "config key %s = %r is not read (%s); accepted for Detectron2 compatibility",
            k,
            values[k],
            UNREAD_KEYS[k],
        )
    return changed


def plain(value: Any) -> Any:
    """Tuples and lists compare equal (YAML turns tuples into lists)."""
    return [plain(v) for v in value] if isinstance(value, (list, tuple)) else value


_MISSING = object()


def lookup(node: CfgNode, key: str, default: Any = _MISSING) -> Any:
    """The value (or section) at the dotted ``key`` of a config; ``default`` when a part of it is
    missing, else KeyError naming ``key``. With :func:`leaves`, the one walker of dotted keys."""
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is _MISSING:
                raise KeyError(key)
            return default
        node = node[part]
    return node


def leaves(node: CfgNode, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(full key, value) of every leaf."""
    for k, v in node.items():
        if isinstance(v, CfgNode):
            yield from leaves(v, prefix + k + ".")
        else:
            yield prefix + k, v


def validate(cfg: CfgNode) -> None:
    """Check every value against ``CHECKS`` and ``CROSS_CHECKS``.

    Raises:
        ConfigError: the first bad value, e.g. "SOLVER.IMS_PER_BATCH must be >= 1, got -2".
    """
    for key, value in leaves(cfg):
        problem = CHECKS.get(key, anything)(value)
        if problem:
            raise ConfigError(f"config key {key} {problem}, got {value!r}")
    for cross in CROSS_CHECKS:
        found = cross(cfg)
        if found:
            raise ConfigError(f"config key {found[0]} {found[1]}")
    unreached = [s for s in cfg.SOLVER.STEPS if s >= cfg.SOLVER.MAX_ITER]
    if unreached:
        logger.warning("SOLVER.STEPS %s are not below SOLVER.MAX_ITER: never reached", unreached)


def check_device(name: str, processes: int = 1) -> None:
    """``MODEL.DEVICE`` is usable here by ``processes`` local processes (one GPU each).

    Raises:
        ConfigError: "cuda" without a CUDA GPU, "cuda:N" beyond the GPUs present, or more
            processes than GPUs.
    """
    if not name.startswith("cuda"):
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ConfigError(f"MODEL.DEVICE {name}: no CUDA GPU on this machine (use cpu or auto)")
    needed = max(int(name.split(":")[1]) + 1 if ":" in name else 1, processes)
    if needed > count:
        raise ConfigError(
            f"MODEL.DEVICE {name} with {processes} process(es) per machine needs {needed} GPU(s);"
            f" this machine has {count}"
        )
