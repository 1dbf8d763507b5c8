"""One owner of validation: a value a builder would refuse is refused by ``load_config`` first.

The test walks (with ``ast``) every ``raise`` statement of the builder modules, the code that turns
a checked config into objects after the run folder is claimed:

- ``opmask/modeling/**``: ``build.py`` and every module it builds (backbone, anchors, heads,
  norms, matcher, the detector) plus ``weights.py`` (MODEL.WEIGHTS into the built model);
- ``opmask/train/solver.py``: optimizer, LR schedule, gradient clipping;
- ``opmask/data/build.py`` and ``opmask/data/mapper.py``: loaders and the per-image mapper;
- ``opmask/evaluation/coco_eval.py``: the evaluator backend.

Not walked: the modules that *are* the input checks (``opmask/config``, ``opmask/data/coco.py``,
``check.py``, ``splits.py``, ``catalog.py``: they raise ``OPMaskInputError`` subclasses by design,
before anything is written), the run folder and checkpoints (``run/claim.py``,
``checkpoint.py``: their own input errors, e.g. ``--resume`` states), and the training loop
(``train/loop.py``: non-finite loss and checkpoint-exit signals, not config rules).

Each raise (file, enclosing function, exception, the message's first words) has one entry in
``RAISES``: :class:`Refused` — a config that would reach it, which ``load_config`` must refuse
with a ``ConfigError`` naming the key; :class:`InputError` — it raises an ``OPMaskInputError``
(one line, exit 1) about a file's content, not a config value; or :class:`Internal` — why a
config cannot reach it. A new ``raise`` without an entry fails :func:`test_every_raise_is_owned`,
naming it; so does an entry whose raise is gone.
"""

from __future__ import annotations

import ast
import importlib
import pathlib
from dataclasses import dataclass

import pytest

from opmask.config import ConfigError, load_config
from opmask.utils.errors import OPMaskInputError
from tests.conftest import SHAPES_BASELINE, SHAPES_OPMASK, TINY

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILDERS = sorted(
    [p.relative_to(ROOT).as_posix() for p in (ROOT / "opmask" / "modeling").rglob("*.py")]
    + [
        "opmask/train/solver.py",
        "opmask/data/build.py",
        "opmask/data/catalog.py",
        "opmask/data/mapper.py",
        "opmask/evaluation/coco_eval.py",
    ]
)


@dataclass(frozen=True)
class Refused:
    """``load_config(config, TINY + opts)`` raises a ConfigError naming ``key``."""

    opts: tuple[str, ...]
    key: str
    config: str = SHAPES_OPMASK


@dataclass(frozen=True)
class InputError:
    """The raise is of an OPMaskInputError subclass (checked); ``when`` says when it fires."""

    when: str


@dataclass(frozen=True)
class Internal:
    """Why no config value reaches the raise (a programming error if it fires)."""

    why: str


_WEIGHTS_READ = InputError(
    "MODEL.WEIGHTS: check_weights_file reads the file as load_weights does, before the run"
    " folder is claimed (test_bad_inputs 'weights ...' rows)"
)
_IMAGE_READ = InputError(
    "an image file's content (unreadable, other size than its annotation) is known only when"
    " the loader reads it; the run then removes its folder (exit 1)"
)
_DATA_CHECK = InputError(
    "check_datasets (entry.validate_inputs) loads every dataset this way before the run folder"
    " is claimed (test_bad_inputs 'data ...' rows)"
)

RAISES: dict[str, dict[str, Refused | InputError | Internal]] = {  # file -> raise -> owner
    "opmask/modeling/anchor_generator.py": {
        "_per_level::ValueError: ANCHOR_GENERATOR.{}: {} lists for": Refused(
            ("MODEL.ANCHOR_GENERATOR.SIZES", "[[16], [32], [64]]"), "SIZES"
        ),
        "AnchorGenerator.__init__::ValueError: ANCHOR_GENERATOR.OFFSET must be in": Refused(
            ("MODEL.ANCHOR_GENERATOR.OFFSET", "1.0"), "MODEL.ANCHOR_GENERATOR.OFFSET"
        ),
        "AnchorGenerator.forward::ValueError: {} feature maps for": Internal(
            "the RPN passes the maps of MODEL.RPN.IN_FEATURES and build_rpn gives the generator"
            " the strides of the same list"
        ),
    },
    "opmask/modeling/backbone.py": {
        "ResNetFPN.__init__::ValueError: MODEL.RESNETS.DEPTH must be one": Refused(
            ("MODEL.RESNETS.DEPTH", "42"), "MODEL.RESNETS.DEPTH"
        ),
    },
    "opmask/modeling/box_heads.py": {
        "CAMBoxHead.__init__::ValueError: CAMBoxHead needs MODEL.ROI_BOX_HEAD.NUM_CONV >=": Refused(
            ("MODEL.ROI_BOX_HEAD.NUM_CONV", "0"), "MODEL.ROI_BOX_HEAD.NUM_CONV"
        ),
    },
    "opmask/modeling/matcher.py": {
        "Matcher.__init__::ValueError: Matcher: {} thresholds need": Internal(
            "the labels are constants of the RPN and RoI sampler; the threshold counts are fixed "
            "by the checks (RPN.IOU_THRESHOLDS 2 items, ROI_HEADS.IOU_THRESHOLDS 1)"
        ),
    },
    "opmask/modeling/meta_arch.py": {
        "OPMask.__init__::TypeError: use_prior needs a CAMBoxHead": Refused(
            ("MODEL.ROI_BOX_HEAD.NAME", "FastRCNNConvFCHead", "MODEL.ROI_BOX_HEAD.NUM_CONV", "0"),
            "MODEL.ROI_MASK_HEAD.NAME",
        ),
    },
    "opmask/modeling/norm.py": {
        "get_norm::ValueError: unknown norm {}: use": Refused(
            ("MODEL.FPN.NORM", "LN"), "MODEL.FPN.NORM"
        ),
    },
    "opmask/modeling/weights.py": {
        "_SafeUnpickler.find_class::UnsafeWeightsError: refusing to load {}.{}": _WEIGHTS_READ,
        "safe_load_pickle::UnsafeWeightsError: {}: {}": _WEIGHTS_READ,
        "safe_load_pickle::UnsafeWeightsError: {}: not a readable": _WEIGHTS_READ,
        "safe_load_pickle::UnsafeWeightsError: {}: expected a dict": _WEIGHTS_READ,
        "_read_state::UnsafeWeightsError: {}: expected a dict": _WEIGHTS_READ,
        "_read_state::UnsafeWeightsError: {}: refused: {}": _WEIGHTS_READ,
        "_read_state::UnsafeWeightsError: {}: not a readable": _WEIGHTS_READ,
        "_read_state::UnsafeWeightsError: {}: expected a state": _WEIGHTS_READ,
        "load_weights::ValueError: {}: {} has shape": Internal(
            "NOT a config value: a MODEL.WEIGHTS file whose tensors do not fit the built model"
            " (e.g. ResNet-50 weights for DEPTH 18) is found only when copied into it, after the"
            " run folder is claimed (a traceback today); the weights check would have to compare"
            " shapes with the model (known gap, reported)"
        ),
    },
    "opmask/data/build.py": {
        "MapDataset.__getitem__::DatasetError: {}": _IMAGE_READ,
        "Loader.__iter__::DatasetError: {}": _IMAGE_READ,  # a worker's, raised in the main process
    },
    "opmask/data/catalog.py": {
        "resolve::DatasetError: unknown dataset {}: use": _DATA_CHECK,
        "load_dataset::DatasetError: dataset {}: annotation file": _DATA_CHECK,
        "load_datasets::DatasetError: no dataset given (DATASETS.TRAIN": _DATA_CHECK,
        "load_datasets::DatasetError: dataset {} has other": _DATA_CHECK,
        "check_num_classes::DatasetError: MODEL.ROI_HEADS.NUM_CLASSES is {} but": _DATA_CHECK,
        "check_datasets::DatasetError: {}": _DATA_CHECK,
        "check_datasets::DatasetError: test dataset {} has": _DATA_CHECK,
        "check_datasets::DatasetError: test dataset {}: {}": _DATA_CHECK,
    },
    "opmask/data/mapper.py": {
        "DatasetMapper.__init__::ValueError: INPUT.MIN_SIZE_TRAIN_SAMPLING must be choice": Refused(
            ("INPUT.MIN_SIZE_TRAIN_SAMPLING", "random"), "INPUT.MIN_SIZE_TRAIN_SAMPLING"
        ),
        "DatasetMapper.__init__::ValueError: mask_format must be polygon": Internal(
            "mask_format is chosen by the calling code (training, the GT-box diagnostic)"
        ),
        "DatasetMapper.__call__::DatasetError: image id {}: {}": _IMAGE_READ,
    },
    "opmask/evaluation/coco_eval.py": {
        "coco_backend::ValueError: TEST.EVALUATOR must be one": Refused(
            ("TEST.EVALUATOR", "detectron2"), "TEST.EVALUATOR"
        ),
    },
}

# The values builders refused after the run folder was claimed (traceback, exit 4) before the
# checks owned them; each now fails in load_config. (id, config, overrides, key in the message)
KNOWN_CASES = [
    ("box NUM_CONV 4 on the baseline", SHAPES_BASELINE, ("MODEL.ROI_BOX_HEAD.NUM_CONV", "4"),
     "config key MODEL.ROI_BOX_HEAD.NUM_CONV must be 0 with FastRCNNConvFCHead"),
    ("box NUM_CONV 0 on OPMask", SHAPES_OPMASK, ("MODEL.ROI_BOX_HEAD.NUM_CONV", "0"),
     "config key MODEL.ROI_BOX_HEAD.NUM_CONV must be >= 1 with CAMBoxHead"),
    ("3 size lists, 5 levels", SHAPES_OPMASK,
     ("MODEL.ANCHOR_GENERATOR.SIZES", "[[16], [32], [64]]"),
     "config key MODEL.ANCHOR_GENERATOR.SIZES has 3 lists for 5 RPN level(s)"),
    ("uneven anchors per level", SHAPES_OPMASK,
     ("MODEL.ANCHOR_GENERATOR.SIZES", "[[16, 24], [32], [64], [128], [256]]"),
     "config key MODEL.ANCHOR_GENERATOR.SIZES x ASPECT_RATIOS give the levels [6, 3, 3, 3, 3]"),
    ("2 ratio lists, 5 levels", SHAPES_OPMASK,
     ("MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[0.5, 1.0, 2.0], [1.0]]"),
     "config key MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS has 2 lists for 5 RPN level(s)"),
    ("RPN on p2 alone", SHAPES_OPMASK, ("MODEL.RPN.IN_FEATURES", "['p2']"),
     "config key MODEL.ANCHOR_GENERATOR.SIZES has 5 lists for 1 RPN level(s) "
     "(MODEL.RPN.IN_FEATURES ['p2'])"),
    ("FPN on res5 alone", SHAPES_OPMASK, ("MODEL.FPN.IN_FEATURES", "['res5']"),
     "config key MODEL.RPN.IN_FEATURES names p2, which MODEL.FPN.IN_FEATURES ['res5'] does not"
     " give (it gives p5, p6)"),
    ("MAX_SIZE_TRAIN 1", SHAPES_OPMASK, ("INPUT.MAX_SIZE_TRAIN", "1"),
     "config key INPUT.MAX_SIZE_TRAIN must be >= 32, got 1"),
    ("MIN_SIZE_TRAIN 1", SHAPES_OPMASK, ("INPUT.MIN_SIZE_TRAIN", "(1,)"),
     "config key INPUT.MIN_SIZE_TRAIN item 0 (1) must be >= 32"),
    ("range sampling, descending", SHAPES_OPMASK,
     ("INPUT.MIN_SIZE_TRAIN_SAMPLING", "range", "INPUT.MIN_SIZE_TRAIN", "(128, 96)"),
     "config key INPUT.MIN_SIZE_TRAIN must be (low, high) with low <= high for range sampling"),
    ("GN on FPN width 3", SHAPES_OPMASK,
     ("MODEL.FPN.NORM", "GN", "MODEL.FPN.OUT_CHANNELS", "3"),
     "config key MODEL.FPN.NORM is GN: width 3 (MODEL.FPN.OUT_CHANNELS) is not a multiple of 8"),
    ("GN on box head width 12", SHAPES_OPMASK,
     ("MODEL.ROI_BOX_HEAD.NORM", "GN", "MODEL.ROI_BOX_HEAD.CONV_DIM", "12"),
     "config key MODEL.ROI_BOX_HEAD.NORM is GN: width 12"),
    ("GN on mask head width 3", SHAPES_OPMASK,
     ("MODEL.ROI_MASK_HEAD.NORM", "GN", "MODEL.ROI_MASK_HEAD.CONV_DIM", "3"),
     "config key MODEL.ROI_MASK_HEAD.NORM is GN: width 3 (MODEL.ROI_MASK_HEAD.CONV_DIM)"),
    ("AMP float32", SHAPES_OPMASK, ("SOLVER.AMP.DTYPE", "float32"),
     "config key SOLVER.AMP.DTYPE must be one of ['float16', 'bfloat16'], got 'float32'"),
    ("FPN stages with a gap", SHAPES_OPMASK, ("MODEL.FPN.IN_FEATURES", "['res2', 'res4']"),
     "config key MODEL.FPN.IN_FEATURES must be consecutive"),
    ("RoI levels with a gap", SHAPES_OPMASK, ("MODEL.ROI_HEADS.IN_FEATURES", "['p2', 'p4']"),
     "config key MODEL.ROI_HEADS.IN_FEATURES must be consecutive"),
    ("RPN level twice", SHAPES_OPMASK, ("MODEL.RPN.IN_FEATURES", "['p2', 'p2']"),
     "config key MODEL.RPN.IN_FEATURES must be in the order"),
]  # fmt: skip

# Just inside each rule: loads and builds (the rules are not stricter than the builders).
ACCEPTED = [
    (SHAPES_OPMASK, ("MODEL.ROI_BOX_HEAD.NUM_CONV", "1")),
    (SHAPES_OPMASK, ("MODEL.ANCHOR_GENERATOR.SIZES", "[[32]]", "MODEL.RPN.IN_FEATURES", "['p3']")),
    (SHAPES_OPMASK, ("MODEL.ANCHOR_GENERATOR.SIZES", "[[16, 24], [32, 48], [64, 96], [128, 192],"
                     " [256, 384]]", "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[1.0]]")),
    (SHAPES_OPMASK, ("MODEL.FPN.IN_FEATURES", "['res4', 'res5']", "MODEL.RPN.IN_FEATURES",
                     "['p4', 'p5', 'p6']", "MODEL.ANCHOR_GENERATOR.SIZES", "[[64], [128], [256]]",
                     "MODEL.ROI_HEADS.IN_FEATURES", "['p4', 'p5']")),
    (SHAPES_OPMASK, ("MODEL.FPN.NORM", "GN", "MODEL.FPN.OUT_CHANNELS", "24",
                     "MODEL.ROI_BOX_HEAD.NORM", "GN", "MODEL.ROI_BOX_HEAD.CONV_DIM", "40",
                     "MODEL.ROI_MASK_HEAD.NORM", "GN")),
    (SHAPES_BASELINE, ("MODEL.ROI_BOX_HEAD.NORM", "GN", "MODEL.ROI_BOX_HEAD.CONV_DIM", "3")),
]  # fmt: skip


def _first_words(node: ast.expr | None, n: int = 4) -> str:
    """The first ``n`` words of an exception's message; ``{}`` for each formatted value."""
    if isinstance(node, ast.Call) and node.args:
        arg = node.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            text = arg.value
        elif isinstance(arg, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in arg.values)
        else:
            text = "{}"
        return " ".join(text.split()[:n])
    return ""


def _exception_name(node: ast.expr | None) -> str:
    target = node.func if isinstance(node, ast.Call) else node
    if isinstance(target, ast.Name):
        return target.id
    if isinstance(target, ast.Attribute):
        return target.attr
    return "raise"


def raises_in(path: str) -> list[str]:
    """``function::Exception: first words`` of every raise in the file (``raise`` alone
    for a re-raise); the function is ``Class.method`` inside a class."""
    tree = ast.parse((ROOT / path).read_text(), path)
    out = []

    def visit(node: ast.AST, scope: tuple[str, ...]) -> None:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = scope + (child.name,)
            if isinstance(child, ast.Raise):
                where = ".".join(scope) or "<module>"
                if child.exc is None:
                    out.append(f"{where}::raise")
                else:
                    name, words = _exception_name(child.exc), _first_words(child.exc)
                    out.append(f"{where}::{name}" + (f": {words}" if words else ""))
            visit(child, inner)

    visit(tree, ())
    return out


def test_builder_list_is_what_the_docstring_says():
    assert "opmask/modeling/build.py" in BUILDERS and "opmask/modeling/weights.py" in BUILDERS
    assert all((ROOT / p).is_file() for p in BUILDERS)


def test_every_raise_is_owned():
    found = [f"{p}::{r}" for p in BUILDERS for r in raises_in(p)]
    owned = {f"{path}::{r}" for path, table in RAISES.items() for r in table}
    unowned = [r for r in found if r not in owned]
    assert not unowned, (
        "raise statements in builder modules without an entry in RAISES (make load_config refuse"
        " the value first, a row of opmask/config/checks.py, and add a Refused entry; or say why"
        " no config reaches it):\n  " + "\n  ".join(unowned)
    )
    gone = sorted(owned - set(found))
    assert not gone, "RAISES entries whose raise is gone:\n  " + "\n  ".join(gone)


def test_input_error_entries_raise_input_errors():
    for path, table in RAISES.items():
        module = importlib.import_module(path[:-3].replace("/", "."))
        for ident, owner in table.items():
            if isinstance(owner, InputError) and not ident.endswith("::raise"):
                cls = getattr(module, ident.split("::")[1].split(":")[0])
                assert issubclass(cls, OPMaskInputError), (path, ident)


REFUSED = sorted(
    {
        (o.config, o.opts, o.key)
        for t in RAISES.values()
        for o in t.values()
        if isinstance(o, Refused)
    }
)


@pytest.mark.parametrize("config,opts,key", REFUSED, ids=[" ".join(r[1]) for r in REFUSED])
def test_refused_entries_fail_in_load_config(config, opts, key):
    with pytest.raises(ConfigError) as e:
        load_config(config, [*TINY, *opts])
    assert key in str(e.value)


@pytest.mark.parametrize("case", KNOWN_CASES, ids=[c[0] for c in KNOWN_CASES])
def test_known_builder_failures_fail_in_load_config(case):
    _id, config, opts, message = case
    with pytest.raises(ConfigError) as e:
        load_config(config, [*TINY, *opts])
    assert message in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("config,opts", ACCEPTED, ids=[" ".join(o[::2]) for _c, o in ACCEPTED])
def test_values_just_inside_the_rules_build(config, opts):
    from opmask.modeling import build_model

    cfg = load_config(config, [*TINY, *opts])
    model = build_model(cfg)
    assert model.rpn.anchor_generator.strides == [
        2 ** int(f[1:]) for f in cfg.MODEL.RPN.IN_FEATURES
    ]


def test_gn_width_rule_follows_cam_box_head():
    """checks.cam_box_head_widths is CAMBoxHead's conv widths (the GN rule relies on it)."""
    from opmask.config.checks import cam_box_head_widths
    from opmask.modeling.box_heads import CAMBoxHead

    for in_ch, num_conv, conv_dim in [(64, 2, 128), (8, 4, 1024), (3, 3, 40), (256, 1, 64)]:
        head = CAMBoxHead(in_channels=in_ch, num_conv=num_conv, conv_dim=conv_dim)
        widths = [block[0].out_channels for block in head.convs]
        assert widths == cam_box_head_widths(in_ch, num_conv, conv_dim)
