import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from opmask.data.catalog import load_dataset, resolve
from opmask.data.coco import DatasetError, load_coco_json, mask_to_rle, segm_to_mask


def _write(tmp_path, images, annotations, categories=None, name="ann.json"):
    (tmp_path / "img").mkdir(exist_ok=True)
    for im in images:
        Image.fromarray(np.zeros((im["height"], im["width"], 3), np.uint8)).save(
            tmp_path / "img" / im["file_name"]
        )
    data = {
        "images": images,
        "annotations": annotations,
        "categories": categories or [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}],
    }
    (tmp_path / name).write_text(json.dumps(data))
    return str(tmp_path / name), str(tmp_path / "img")


def _img(i=1, h=40, w=50):
    return {"id": i, "file_name": f"{i}.png", "height": h, "width": w}


def test_polygon_and_rle_decoding_match_pycocotools(tmp_path):
    rng = np.random.default_rng(0)
    m = (rng.random((40, 50)) > 0.7).astype(np.uint8)
    uncompressed = {"size": [40, 50], "counts": mask_util.encode(np.asfortranarray(m))["counts"]}
    anns = [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 3,
            "bbox": [5, 5, 20, 10],
            "iscrowd": 0,
            "segmentation": [
                [5.5, 5.2, 25.1, 6.0, 20.7, 15.3, 7.0, 14.9],
                [30, 30, 40, 30, 35, 38],
            ],
        },
        {
            "id": 2,
            "image_id": 1,
            "category_id": 7,
            "bbox": [0, 0, 50, 40],
            "iscrowd": 0,
            "segmentation": mask_to_rle(m),
        },
    ]
    json_file, root = _write(tmp_path, [_img()], anns)
    coco = COCO(json_file)
    for a in coco.anns.values():
        assert np.array_equal(segm_to_mask(a["segmentation"], 40, 50), coco.annToMask(a))
    # uncompressed RLE (counts as a list of run lengths, as COCO's crowd annotations have)
    rle_list = mask_util.frPyObjects({"size": [40, 50], "counts": _runs(m)}, 40, 50)
    assert np.array_equal(
        segm_to_mask({"size": [40, 50], "counts": _runs(m)}, 40, 50), mask_util.decode(rle_list)
    )
    assert uncompressed["size"] == [40, 50]


def _runs(m):
    flat = m.flatten(order="F")
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    return runs + [n]


def test_contiguous_ids_crowd_and_degenerates(tmp_path, caplog):
    anns = [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 7,
            "bbox": [1, 2, 3, 4],
            "segmentation": [[1, 2, 4, 2, 4, 6]],
            "iscrowd": 0,
        },
        {
            "id": 2,
            "image_id": 1,
            "category_id": 3,
            "bbox": [1, 2, 0, 4],
            "segmentation": [],
            "iscrowd": 0,
        },
        {
            "id": 3,
            "image_id": 1,
            "category_id": 3,
            "bbox": [1, 2, 3, 4],
            "segmentation": [[1, 2, 3, 4]],
            "iscrowd": 0,
        },
        {
            "id": 4,
            "image_id": 1,
            "category_id": 3,
            "bbox": [0, 0, 9, 9],
            "segmentation": mask_to_rle(np.ones((40, 50), np.uint8)),
            "iscrowd": 1,
        },
    ]
    json_file, root = _write(tmp_path, [_img()], anns)
    dicts, info = load_coco_json(json_file, root, "t")
    annos = dicts[0]["annotations"]
    assert [a["category_id"] for a in annos] == [1, 0]  # id 7 -> 1, id 3 -> 0
    # the model's labels (0 = background) and back, from the one mapping DatasetInfo owns
    assert info.labels([7, 3]) == [2, 1]
    assert [info.category_id(label) for label in (1, 2)] == [3, 7]
    assert annos[0]["bbox"] == [1.0, 2.0, 4.0, 6.0] and annos[1]["iscrowd"] == 1
    assert info.dropped == {
        "degenerate box": 1,
        "degenerate polygon": 1,
        "annotation without valid polygon": 1,
    }
    assert "dropped" in caplog.text


def test_malformed_json_names_file(tmp_path):
    (tmp_path / "bad.json").write_text('{"images": [')
    with pytest.raises(DatasetError, match=r"bad\.json: malformed JSON"):
        load_coco_json(str(tmp_path / "bad.json"), str(tmp_path), "x")


def test_missing_image_names_file_and_id(tmp_path):
    json_file, root = _write(tmp_path, [_img(4)], [])
    (tmp_path / "img" / "4.png").unlink()
    with pytest.raises(DatasetError, match=r"image id 4: file not found: .*4\.png"):
        load_coco_json(json_file, root, "x")


def test_unknown_category_names_category_and_image(tmp_path):
    anns = [{"id": 9, "image_id": 1, "category_id": 42, "bbox": [1, 1, 2, 2], "segmentation": []}]
    json_file, root = _write(tmp_path, [_img()], anns)
    with pytest.raises(DatasetError, match="image id 1, annotation 9: unknown category_id 42"):
        load_coco_json(json_file, root, "x")


def test_catalog_spec_and_unknown_name(tmp_path, monkeypatch):
    json_file, root = _write(tmp_path, [_img()], [])
    assert resolve(f"{json_file}:{root}") == (json_file, root, "ann")
    dicts, info = load_dataset(f"{json_file}:{root}")
    assert len(dicts) == 1 and info.name == "ann"
    with pytest.raises(DatasetError, match="unknown dataset 'nope'"):
        load_dataset("nope")
    monkeypatch.setenv("OPMASK_DATASETS", str(tmp_path))
    with pytest.raises(DatasetError, match="opmask-data shapes"):
        load_dataset("shapes_train")


def _ann(**kw):
    ann = {"id": 5, "image_id": 1, "category_id": 3, "bbox": [1, 1, 10, 10], "iscrowd": 0}
    return {**ann, **kw}


def test_boxes_within_tolerance_and_uncompressed_rle_load(tmp_path):
    """Boxes may overshoot the image by 1 px + 5 % (annotation rounding); RLE counts may be a
    list (COCO crowd annotations)."""
    rle = {"size": [40, 50], "counts": _runs(np.ones((40, 50), np.uint8))}
    anns = [
        _ann(id=1, bbox=[-1.5, -0.5, 53.0, 41.0]),
        _ann(id=2, bbox=[0, 0, 50, 40], segmentation=rle, iscrowd=1),
        _ann(id=3, bbox=[0, 0, 5, 5], segmentation=None),
    ]
    json_file, root = _write(tmp_path, [_img()], anns)
    dicts, _ = load_coco_json(json_file, root, "x")
    assert len(dicts[0]["annotations"]) == 3
    assert dicts[0]["annotations"][0]["bbox"] == [-1.5, -0.5, 51.5, 40.5]


@pytest.mark.parametrize(
    "ann,message",
    [
        (
            _ann(bbox=[0, 0, 1e30, 5]),
            "image id 1, annotation 5: bbox [0, 0, 1e+30, 5] lies outside",
        ),
        (_ann(bbox=[0, 0, float("inf"), 5]), "annotation 5: bbox must be 4 finite numbers"),
        (_ann(segmentation={"size": [4, 5], "counts": "abc"}), "RLE size [4, 5] differs"),
        (_ann(segmentation="x"), "segmentation must be a list of polygons or an RLE object"),
        (_ann(category_id=[3]), "annotation 5: unknown category_id [3]"),
        (_ann(image_id=2), "annotation 5 refers to image id 2, not in 'images'"),
        (_ann(id="5"), "annotations[0]: id '5' is not an integer"),
    ],
)
def test_bad_annotation_names_file_image_and_annotation(tmp_path, ann, message):
    json_file, root = _write(tmp_path, [_img()], [ann])
    with pytest.raises(DatasetError) as e:
        load_coco_json(json_file, root, "x")
    assert str(e.value).startswith(json_file + ": ") and message in str(e.value)


def test_duplicate_image_ids_are_refused_not_merged(tmp_path):
    json_file, root = _write(tmp_path, [_img(1), {**_img(1), "file_name": "2.png"}], [])
    with pytest.raises(DatasetError, match=r"duplicate image id 1 \(images\[1\]\)"):
        load_coco_json(json_file, root, "x")


def test_declared_split_must_name_categories(tmp_path):
    json_file, root = _write(tmp_path, [_img()], [])
    data = json.loads(open(json_file).read())
    data["opmask"] = {"strong_category_ids": [3, 99]}
    (tmp_path / "ann.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"opmask.strong_category_ids \[99\] are not categories"):
        load_coco_json(json_file, root, "x")


def test_files_without_cocoeval_fields_load_for_training_but_say_why_not_for_testing(tmp_path):
    full = _ann(area=100.0, segmentation=[[1, 1, 11, 1, 11, 11]])
    json_file, root = _write(tmp_path, [_img()], [full, _ann(id=6)])
    dicts, info = load_coco_json(json_file, root, "x")
    assert len(dicts[0]["annotations"]) == 2
    assert info.not_evaluable == (
        f"{json_file}: image id 1, annotation 6: no area, segmentation "
        "(COCO evaluation needs area, iscrowd, segmentation)"
    )
    json_file, root = _write(tmp_path, [_img()], [full], name="full.json")
    assert load_coco_json(json_file, root, "x")[1].not_evaluable is None
