import os
import pickle

import numpy as np
import pytest
import torch
import torchvision

from opmask.config import load_config
from opmask.modeling import build_model
from opmask.modeling.weights import BODY, UnsafeWeightsError, load_weights

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _caffe2_name(tv_key: str) -> str | None:
    """torchvision ResNet key -> MSRA Caffe2 blob name (the inverse of the loader's mapping)."""
    leaf = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}
    parts = tv_key.split(".")
    if parts[0] == "conv1":
        return "conv1_w"
    if parts[0] == "bn1":
        return f"res_conv1_bn_{leaf[parts[1]]}"
    if not parts[0].startswith("layer"):
        return None
    stage, block = int(parts[0][5:]) + 1, parts[1]
    if parts[2] == "downsample":
        branch, is_conv = "1", parts[3] == "0"
    else:
        branch, is_conv = "2" + "abc"[int(parts[2][-1]) - 1], parts[2].startswith("conv")
    suffix = "w" if is_conv else f"bn_{leaf[parts[-1]]}"
    return f"res{stage}_{block}_branch{branch}_{suffix}"


@pytest.fixture(scope="module")
def r50():
    cfg = load_config(
        os.path.join(REPO, "configs", "opmask_R50_FPN_130k.yaml"),
        ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""],
    )
    return build_model(cfg)


def test_caffe2_pkl_loads_without_missing_backbone_keys(r50, tmp_path):
    src = torchvision.models.resnet50(weights=None).state_dict()
    blobs = {}
    for k, v in src.items():
        name = None if "num_batches_tracked" in k else _caffe2_name(k)
        if name is not None:
            blobs[name] = np.full(v.shape, 0.5, dtype=np.float32) if v.ndim else v.numpy()
    blobs["fc1000_w"] = np.zeros((1000, 2048), dtype=np.float32)
    path = tmp_path / "R-50.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": blobs, "__author__": "test"}, f)
    report = load_weights(r50, str(path))
    assert report.missing == []
    assert report.unexpected == ["fc1000_w"]
    body = r50.state_dict()
    assert torch.all(body[BODY + "layer3.2.conv2.weight"] == 0.5)
    assert torch.all(body[BODY + "layer1.0.downsample.1.weight"] == 0.5)


def test_torchvision_state_dict_loads(r50, tmp_path):
    sd = torchvision.models.resnet50(weights=None).state_dict()
    torch.save(sd, tmp_path / "r50.pth")
    report = load_weights(r50, str(tmp_path / "r50.pth"))
    assert [k for k in report.missing if "num_batches" not in k] == []
    assert torch.equal(
        r50.state_dict()[BODY + "layer4.2.conv3.weight"], sd["layer4.2.conv3.weight"]
    )


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_code_execution_payload_is_refused_without_running(r50, tmp_path, suffix):
    marker = tmp_path / "pwned"
    path = tmp_path / f"evil{suffix}"
    with open(path, "wb") as f:
        pickle.dump({"model": {"conv1_w": _Payload(str(marker))}}, f)
    with pytest.raises(UnsafeWeightsError, match="evil"):
        load_weights(r50, str(path))
    assert not marker.exists()
