import glob
import os

import pytest

from opmask.config import ConfigError, load_config

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
        'MODEL:\n  ROI_BOX_HEAD:\n    NAME: "CAMBoxHeadConv"\n'
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
