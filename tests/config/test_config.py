import glob
import logging
import os

import pytest

from opmask.config import ConfigError, load_config

from ..conftest import SHAPES_OPMASK

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ALL_CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))


def test_all_paper_configs_present():
    names = {os.path.basename(p) for p in ALL_CONFIGS}
    for n in [
        "Base-RCNN-FPN.yaml",
        "opmask_R50_FPN_130k.yaml",
        "opmask_R50_FPN_1x.yaml",
        "opmask_R50_FPN_3x.yaml",
        "opmask_R101_FPN_130k.yaml",
        "opmask_R101_FPN_3x.yaml",
    ]:
        assert n in names


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=os.path.basename)
def test_every_config_loads(path):
    cfg = load_config(path)
    assert cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK


def test_paper_values():
    cfg = load_config(os.path.join(REPO, "configs", "opmask_R101_FPN_3x.yaml"))
    assert cfg.MODEL.RESNETS.DEPTH == 101
    assert cfg.SOLVER.STEPS == (210000, 250000) and cfg.SOLVER.MAX_ITER == 270000
    assert cfg.MODEL.ROI_BOX_HEAD.NAME == "CAMBoxHead" and cfg.MODEL.ROI_BOX_HEAD.NUM_FC == 0
    assert cfg.MODEL.ROI_MASK_HEAD.NUM_CONV == 7 and cfg.MODEL.ROI_MASK_HEAD.NORM == "SyncBN"
    assert cfg.INPUT.MIN_SIZE_TRAIN == (640, 672, 704, 736, 768, 800)
    base = load_config(os.path.join(REPO, "configs", "mask_rcnn_ca_R50_FPN_130k.yaml"))
    assert base.MODEL.ROI_MASK_HEAD.NAME == "MaskRCNNConvUpsampleHead"
    assert base.SOLVER.MAX_ITER == 130000


def test_original_opmask_names_are_accepted(tmp_path):
    f = tmp_path / "orig.yaml"
    f.write_text(
        'MODEL:\n  ROI_BOX_HEAD:\n    NAME: "CAMBoxHeadConv"\n    NUM_CONV: 4\n'
        '  ROI_MASK_HEAD:\n    NAME: "CamMaskHead"\n'
    )
    cfg = load_config(str(f))
    assert (cfg.MODEL.ROI_BOX_HEAD.NAME, cfg.MODEL.ROI_MASK_HEAD.NAME) == (
        "CAMBoxHead",
        "CAMMaskHead",
    )


def test_unknown_key_in_base_file_names_key_file_and_closest(tmp_path):
    (tmp_path / "base.yaml").write_text("SOLVER:\n  BASE_RL: 0.1\n")
    (tmp_path / "child.yaml").write_text('_BASE_: "base.yaml"\n')
    with pytest.raises(ConfigError) as e:
        load_config(str(tmp_path / "child.yaml"))
    msg = str(e.value)
    assert "SOLVER.BASE_RL" in msg and "base.yaml" in msg and "SOLVER.BASE_LR" in msg


def test_unknown_override_names_closest_key():
    with pytest.raises(
        ConfigError,
        match=r"command line: unknown config key MODEL\.ROI_HEAD"
        r"\.NUM_CLASSES; did you mean MODEL\.ROI_HEADS\.NUM_CLASSES",
    ):
        load_config(None, ["MODEL.ROI_HEAD.NUM_CLASSES", "3"])


def test_bad_type_names_key_expected_and_given(tmp_path):
    (tmp_path / "c.yaml").write_text("SOLVER:\n  MAX_ITER: fast\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(tmp_path / "c.yaml"))
    assert "SOLVER.MAX_ITER expects int, got str 'fast'" in str(e.value)
    with pytest.raises(ConfigError, match="MODEL.MASK_ON expects bool, got int"):
        load_config(None, ["MODEL.MASK_ON", "1"])


def test_overrides_are_typed():
    cfg = load_config(None, ["SOLVER.BASE_LR", "1", "SOLVER.STEPS", "(5, 9)", "EXP.PS", "nvoc"])
    assert cfg.SOLVER.BASE_LR == 1.0 and isinstance(cfg.SOLVER.BASE_LR, float)
    assert cfg.SOLVER.STEPS == (5, 9) and cfg.EXP.PS == "nvoc"
    with pytest.raises(ConfigError, match="no value"):
        load_config(None, ["SOLVER.BASE_LR"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(str(tmp_path / "nope.yaml"))
    (tmp_path / "bad.yaml").write_text("SOLVER: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(str(tmp_path / "bad.yaml"))


def test_config_diff_ignores_yaml_tuple_list_round_trip(tmp_path):
    from fvcore.common.config import CfgNode

    from opmask.config import config_diff

    cfg = load_config(None, ["SOLVER.STEPS", "(3, 4)"])
    back = CfgNode.load_cfg(cfg.dump())
    assert back.SOLVER.STEPS == [3, 4] and config_diff(cfg, back) == []
    other = load_config(None, ["SOLVER.STEPS", "(3, 5)", "EXP.PS", "nvoc"])
    assert config_diff(other, back) == ["SOLVER.STEPS", "EXP.PS"]


# ---------------------------------------------------------------------- declared value checks


def test_every_key_has_a_declared_check():
    from opmask.config import get_cfg
    from opmask.config.checks import CHECKS, leaves

    assert sorted(CHECKS) == sorted(k for k, _ in leaves(get_cfg()))


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("SOLVER.IMS_PER_BATCH", "-2", "SOLVER.IMS_PER_BATCH must be >= 1, got -2"),
        ("SOLVER.BASE_LR", "0", "SOLVER.BASE_LR must be > 0.0, got 0.0"),
        ("SOLVER.CHECKPOINT_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD must be >= 1, got 0"),
        ("TEST.EVAL_PERIOD", "-1", "TEST.EVAL_PERIOD must be >= 0 (0: off), got -1"),
        ("SOLVER.STEPS", "(5, 5)", "SOLVER.STEPS must be strictly increasing"),
        ("SOLVER.AMP.DTYPE", "half", "SOLVER.AMP.DTYPE must be one of ['float16', 'bfloat16']"),
        ("MODEL.DEVICE", "gpu", "MODEL.DEVICE must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        ("MODEL.PIXEL_STD", "(1, 1)", "MODEL.PIXEL_STD must have 3 items"),
        ("EXP.STRONG_CATEGORY_IDS", "[3, 3]", "EXP.STRONG_CATEGORY_IDS names a category twice"),
        (
            "SOLVER.MAX_ITER",
            "None",
            "command line: config key SOLVER.MAX_ITER expects int, got None",
        ),
    ],
)
def test_values_outside_their_declared_range_name_the_key(key, value, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, [key, value])
    assert message in str(e.value)


def test_none_and_nan_in_a_file(tmp_path):
    (tmp_path / "c.yaml").write_text("SOLVER:\n  BASE_LR: null\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: config key SOLVER.BASE_LR expects float"):
        load_config(str(tmp_path / "c.yaml"))
    (tmp_path / "c.yaml").write_text("SOLVER:\n  BASE_LR: .nan\n")
    with pytest.raises(ConfigError, match="SOLVER.BASE_LR must be a finite number, got nan"):
        load_config(str(tmp_path / "c.yaml"))


def test_a_section_given_a_value_says_so():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["SOLVER", "3"])
    assert str(e.value) == (
        "command line: SOLVER is a section, not a key: give a value to one of its keys, "
        "e.g. SOLVER.MAX_ITER"
    )


def test_steps_beyond_max_iter_warn_but_load(caplog):
    """A shortened run (smoke test, MAX_ITER is resume-safe) keeps its schedule's steps."""
    cfg = load_config(None, ["SOLVER.MAX_ITER", "10", "SOLVER.STEPS", "(5, 20)"])
    assert cfg.SOLVER.STEPS == (5, 20) and "[20] are not below SOLVER.MAX_ITER" in caplog.text


@pytest.mark.parametrize("key,value", [("EXP.TRAINER", "Custom"), ("VERSION", "1")])
def test_unread_detectron2_keys_warn_once_and_are_resume_safe(caplog, key, value):
    from opmask.run.claim import incompatible_keys

    with caplog.at_level(logging.WARNING, logger="opmask.config.checks"):
        default = load_config(None)
        assert caplog.text == ""  # the default value: nothing is ignored, nothing said
        changed = load_config(None, [key, value])
    assert caplog.text.count(f"config key {key} = ") == 1 and "is not read" in caplog.text
    assert incompatible_keys(default, changed) == []  # --resume accepts the change


def test_prior_without_cam_box_head_is_one_config_error():
    with pytest.raises(ConfigError, match="ROI_MASK_HEAD.NAME is CAMMaskHead.*CAMBoxHead"):
        load_config(
            None,
            [
                "MODEL.ROI_MASK_HEAD.NAME",
                "CAMMaskHead",
                "MODEL.ROI_BOX_HEAD.NAME",
                "FastRCNNConvFCHead",
            ],
        )


def test_check_device():
    import torch

    from opmask.config import check_device

    check_device("cpu", 4)
    check_device("auto")
    if torch.cuda.is_available():
        with pytest.raises(ConfigError, match="needs 99 GPU"):
            check_device("cuda:98")
    else:
        with pytest.raises(ConfigError, match="MODEL.DEVICE cuda:1: no CUDA GPU on this machine"):
            check_device("cuda:1")


def test_shipped_configs_load_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here: the shipped copies are found
    assert load_config("configs/shapes/opmask_R18_shapes.yaml").MODEL.RESNETS.DEPTH == 18
    assert load_config("opmask_R50_FPN_130k.yaml").MODEL.RESNETS.DEPTH == 50  # _BASE_ followed
    (tmp_path / "configs").mkdir()  # a user's own file of the same name wins
    (tmp_path / "configs" / "opmask_R50_FPN_130k.yaml").write_text("SOLVER:\n  MAX_ITER: 7\n")
    assert load_config("configs/opmask_R50_FPN_130k.yaml").SOLVER.MAX_ITER == 7
    with pytest.raises(ConfigError, match="config file not found: nope.yaml$"):
        load_config("nope.yaml")


def test_resume_safety_is_a_column_of_the_checks_table():
    """What may change on --resume is marked where each key's values are declared: how long,
    how often, where and how fast a run goes and what it is evaluated on — never what it learns."""
    from opmask.config.checks import CHECKS, RESUME_SAFE_KEYS, UNREAD_KEYS

    marked = {k for k, check in CHECKS.items() if getattr(check, "resume_safe", False)}
    assert marked == {
        "SOLVER.MAX_ITER",
        "SOLVER.CHECKPOINT_PERIOD",
        "SOLVER.MAX_TO_KEEP",
        "TEST.EVAL_PERIOD",
        "EXP.PRINT_PERIOD",
        "VIS_PERIOD",
        "EXP.VIS_ROIS",
        "EXP.VIS_PREDICTIONS",
        "OUTPUT_DIR",
        "DATALOADER.NUM_WORKERS",
        "DATALOADER.WORKER_MMAP_THRESHOLD",
        "MODEL.DEVICE",
        "MODEL.WEIGHTS",
        "DATASETS.TEST",
        "CUDNN_BENCHMARK",
        "SOLVER.TF32",
        "MODEL.CHANNELS_LAST",
        "MODEL.COMPILE",
    }
    assert RESUME_SAFE_KEYS == marked | set(UNREAD_KEYS)
    assert CHECKS["SOLVER.MAX_ITER"](0) == "must be >= 1"  # marking keeps the check
    assert not getattr(CHECKS["SOLVER.IMS_PER_BATCH"], "resume_safe", False)  # shared checks stay


def test_the_batch_must_split_over_the_processes():
    from opmask.config.checks import check_world

    cfg = load_config(SHAPES_OPMASK, ["SOLVER.IMS_PER_BATCH", "6"])
    check_world(cfg, 3)
    with pytest.raises(ConfigError) as e:
        check_world(cfg, 4, "processes (--num-gpus x --num-machines)")
    assert str(e.value) == (
        "SOLVER.IMS_PER_BATCH 6 is not a multiple of the 4 processes (--num-gpus x --num-machines)"
    )
