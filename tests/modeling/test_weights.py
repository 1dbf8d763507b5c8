import os
import pickle

import numpy as np
import pytest
import torch
import torchvision

from opmask.config import load_config
from opmask.modeling import build_model
from opmask.modeling.weights import BODY, UnsafeWeightsError, detectron2_file, load_weights

from ..conftest import SHAPES_BASELINE, SHAPES_OPMASK, TINY

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
    with pytest.raises(UnsafeWeightsError, match="evil") as e:
        load_weights(r50, str(path))
    assert not marker.exists()
    message = str(e.value)  # one line naming the blocked global (os.system is posix.system)
    assert "\n" not in message and f"{os.system.__module__}.system" in message, message


# ---------------------------------------------------------------- Detectron2 checkpoints in and out
def _small(config: str, seed: int):
    torch.manual_seed(seed)
    cfg = load_config(config, [*TINY, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    return build_model(cfg).eval()


def _detectron2_state(ours: dict, opmask: bool) -> dict:
    """Our R18-FPN weights under Detectron2 v0.6's names, written out from its module layout
    (``ResNet`` stem/res2..5 with BasicBlocks, ``FPN`` fpn_lateral/fpn_output, ``StandardRPNHead``,
    ``FastRCNNConvFCHead`` fc1/fc2 + ``FastRCNNOutputLayers``, ``MaskRCNNConvUpsampleHead``) and,
    for OPMask, the official code's (``CAMBoxHeadConv`` conv{k} holding cls_score/bbox_pred,
    ``CamMaskHead`` mask_down{k}/mask_up{k}); background moved last by hand."""
    d2 = {}

    def put(d2_module: str, our_module: str) -> None:
        for key, value in ours.items():
            if key.rsplit(".", 1)[0] == our_module:
                d2[f"{d2_module}.{key.rsplit('.', 1)[1]}"] = value.clone()

    put("backbone.bottom_up.stem.conv1", "backbone.fpn.body.conv1")
    put("backbone.bottom_up.stem.conv1.norm", "backbone.fpn.body.bn1")
    for stage in (2, 3, 4, 5):
        for block in (0, 1):
            ours_b, d2_b = f"backbone.fpn.body.layer{stage - 1}.{block}", f"res{stage}.{block}"
            for c in (1, 2):
                put(f"backbone.bottom_up.{d2_b}.conv{c}", f"{ours_b}.conv{c}")
                put(f"backbone.bottom_up.{d2_b}.conv{c}.norm", f"{ours_b}.bn{c}")
            if stage > 2 and block == 0:
                put(f"backbone.bottom_up.{d2_b}.shortcut", f"{ours_b}.downsample.0")
                put(f"backbone.bottom_up.{d2_b}.shortcut.norm", f"{ours_b}.downsample.1")
        for ours_name, d2_name in (("inner_blocks", "fpn_lateral"), ("layer_blocks", "fpn_output")):
            put(f"backbone.{d2_name}{stage}", f"backbone.fpn.fpn.{ours_name}.{stage - 2}.0")
            put(f"backbone.{d2_name}{stage}.norm", f"backbone.fpn.fpn.{ours_name}.{stage - 2}.1")
    for name in ("conv", "objectness_logits", "anchor_deltas"):
        put(f"proposal_generator.rpn_head.{name}", f"rpn.head.{name}")
    if opmask:
        for k in (1, 2):
            put(f"roi_heads.box_head.conv{k}", f"box_head.convs.{k - 1}.0")
            put(f"roi_heads.box_head.conv{k}.norm", f"box_head.convs.{k - 1}.1")
        for k in range(1, 8):
            put(f"roi_heads.mask_head.mask_down{k}", f"mask_head.layers.{k - 1}.0")
            put(f"roi_heads.mask_head.mask_down{k}.norm", f"mask_head.layers.{k - 1}.1")
        put("roi_heads.mask_head.mask_up1", "mask_head.layers.7")
    else:
        put("roi_heads.box_head.fc1", "box_head.layers.1")
        put("roi_heads.box_head.fc2", "box_head.layers.3")
        for k in range(1, 5):
            put(f"roi_heads.mask_head.mask_fcn{k}", f"mask_head.layers.{k - 1}.0")
            put(f"roi_heads.mask_head.mask_fcn{k}.norm", f"mask_head.layers.{k - 1}.1")
        put("roi_heads.mask_head.deconv", "mask_head.layers.4")
    put("roi_heads.mask_head.predictor", "mask_head.predictor")
    pred = "roi_heads.box_head" if opmask else "roi_heads.box_predictor"
    for leaf in ("weight", "bias"):
        cls, box = ours[f"box_predictor.cls_score.{leaf}"], ours[f"box_predictor.bbox_pred.{leaf}"]
        d2[f"{pred}.cls_score.{leaf}"] = torch.cat([cls[1:], cls[:1]])  # background last
        d2[f"{pred}.bbox_pred.{leaf}"] = box[4:].clone()  # no background deltas
    return d2


def _class_scores(model) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 96, 128, generator=g) * 255
    boxes = torch.tensor([[10.0, 12.0, 60.0, 70.0], [40.0, 5.0, 120.0, 90.0], [0, 0, 30, 20]])
    return model.segment_given_boxes(image, boxes, torch.tensor([1, 3, 8]))["class_logits"]


@pytest.mark.parametrize("config", [SHAPES_BASELINE, SHAPES_OPMASK])
def test_detectron2_checkpoint_loads_and_scores_match(tmp_path, config):
    ours = _small(config, seed=1)
    ours.box_predictor.bbox_pred.weight.data[:4] = 0  # never used; Detectron2 has no such rows
    ours.box_predictor.bbox_pred.bias.data[:4] = 0
    d2 = _detectron2_state(ours.state_dict(), opmask=config == SHAPES_OPMASK)
    assert len(d2) == len(ours.state_dict())
    torch.save({"model": d2, "iteration": 5}, tmp_path / "model_final.pth")
    fresh = _small(config, seed=2)
    assert not torch.equal(_class_scores(fresh), _class_scores(ours))
    report = load_weights(fresh, str(tmp_path / "model_final.pth"))
    assert report.missing == [] and report.unexpected == [] and report.ignored == []
    assert len(report.loaded) == len(d2)
    torch.testing.assert_close(_class_scores(fresh), _class_scores(ours), rtol=0, atol=0)
    for key, value in ours.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


@pytest.mark.parametrize("protocol", [2, 4])
def test_detectron2_model_zoo_pkl_of_numpy_arrays_loads(tmp_path, protocol):
    ours = _small(SHAPES_BASELINE, seed=1)
    d2 = {k: v.numpy() for k, v in _detectron2_state(ours.state_dict(), opmask=False).items()}
    with open(tmp_path / "model_final_f10217.pkl", "wb") as f:
        pickle.dump({"model": d2, "__author__": "Detectron2 Model Zoo"}, f, protocol=protocol)
    fresh = _small(SHAPES_BASELINE, seed=2)
    report = load_weights(fresh, str(tmp_path / "model_final_f10217.pkl"))
    assert report.missing == [] and report.unexpected == []
    assert torch.equal(fresh.box_predictor.cls_score.weight, ours.box_predictor.cls_score.weight)


@pytest.mark.parametrize("suffix", [".pth", ".pkl"])
@pytest.mark.parametrize("config", [SHAPES_BASELINE, SHAPES_OPMASK])
def test_export_then_import_is_the_identity(tmp_path, config, suffix):
    ours = _small(config, seed=1)
    data, left_out = detectron2_file(ours, pkl=suffix == ".pkl")
    assert left_out == []
    path = tmp_path / f"exported{suffix}"
    path.write_bytes(data)
    fresh = _small(config, seed=2)
    report = load_weights(fresh, str(path))
    assert report.missing == [] and report.unexpected == []
    for key, value in ours.state_dict().items():
        got = fresh.state_dict()[key]
        if key.startswith("box_predictor.bbox_pred."):  # background rows: not in Detectron2
            assert torch.equal(got[4:], value[4:]) and not got[:4].any(), key
        else:
            assert torch.equal(got, value), key
    assert detectron2_file(fresh, pkl=suffix == ".pkl")[0] == data  # and back: same bytes
    exported = torch.load(path, weights_only=True) if suffix == ".pth" else None
    if exported is not None:  # the Detectron2 side holds the hand-written names and order
        assert (
            exported["model"].keys()
            == _detectron2_state(ours.state_dict(), opmask=config == SHAPES_OPMASK).keys()
        )


def test_unmapped_keys_are_reported_by_name(tmp_path, caplog):
    ours = _small(SHAPES_OPMASK, seed=1)
    d2 = _detectron2_state(ours.state_dict(), opmask=True)
    del d2["roi_heads.mask_head.predictor.weight"]
    d2["roi_heads.keypoint_head.conv_fcn1.weight"] = torch.zeros(3)
    d2["pixel_mean"] = torch.zeros(3, 1, 1)  # old Detectron2 files: the config gives these
    d2["proposal_generator.anchor_generator.cell_anchors.0"] = torch.zeros(3, 4)
    torch.save({"model": d2}, tmp_path / "old.pth")
    with caplog.at_level("INFO", logger="opmask.modeling.weights"):
        report = load_weights(_small(SHAPES_OPMASK, seed=2), str(tmp_path / "old.pth"))
    assert report.unexpected == ["roi_heads.keypoint_head.conv_fcn1.weight"]
    assert report.missing == ["mask_head.predictor.weight"]
    assert sorted(report.ignored) == [
        "pixel_mean",
        "proposal_generator.anchor_generator.cell_anchors.0",
    ]
    assert "roi_heads.keypoint_head.conv_fcn1.weight" in caplog.text
    assert "mask_head.predictor.weight" in caplog.text


def test_detectron2_class_count_mismatch_is_one_clear_error(tmp_path):
    ours = _small(SHAPES_BASELINE, seed=1)
    d2 = _detectron2_state(ours.state_dict(), opmask=False)
    d2["roi_heads.box_predictor.cls_score.weight"] = torch.zeros(81, 1024)
    torch.save({"model": d2}, tmp_path / "coco.pth")
    with pytest.raises(ValueError, match="roi_heads.box_predictor.cls_score.weight has shape"):
        load_weights(_small(SHAPES_BASELINE, seed=2), str(tmp_path / "coco.pth"))
