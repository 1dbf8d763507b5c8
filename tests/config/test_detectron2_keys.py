"""The paper configs name what Detectron2 v0.6 needs to read them: its FPN backbone builder."""

from __future__ import annotations

import glob
import os

import yaml

from opmask.config import load_config
from tests.conftest import REPO

BASE = os.path.join(REPO, "configs", "Base-RCNN-FPN.yaml")


def test_base_config_names_the_fpn_backbone():
    with open(BASE) as f:
        raw = yaml.safe_load(f)
    assert raw["MODEL"]["BACKBONE"]["NAME"] == "build_resnet_fpn_backbone"
    paths = sorted(glob.glob(os.path.join(REPO, "configs", "*_FPN_*.yaml")))
    assert len(paths) == 10  # the paper's OPMask and class-agnostic Mask R-CNN configs
    for path in paths:
        assert load_config(path, []).MODEL.BACKBONE.NAME == "build_resnet_fpn_backbone", path
