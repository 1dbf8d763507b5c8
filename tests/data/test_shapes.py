import json

import numpy as np
from PIL import Image
from pycocotools.coco import COCO

from opmask.data.coco import load_coco_json
from opmask.data.shapes import CLASSES, STRONG, generate


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    generate(str(tmp_path / "a"), seed=5, num_train=6, num_val=2, image_size=64)
    generate(str(tmp_path / "b"), seed=5, num_train=6, num_val=2, image_size=64)
    generate(str(tmp_path / "c"), seed=6, num_train=6, num_val=2, image_size=64)
    a = (tmp_path / "a" / "train" / "annotations.json").read_bytes()
    assert a == (tmp_path / "b" / "train" / "annotations.json").read_bytes()
    assert a != (tmp_path / "c" / "train" / "annotations.json").read_bytes()
    png = "train/images/000003.png"
    assert (tmp_path / "a" / png).read_bytes() == (tmp_path / "b" / png).read_bytes()


def test_pycocotools_loads_and_split_metadata(tmp_path):
    generate(str(tmp_path / "s"), seed=1, num_train=20, num_val=2, image_size=96)
    path = str(tmp_path / "s" / "train" / "annotations.json")
    coco = COCO(path)
    assert len(coco.getCatIds()) == len(CLASSES) and len(coco.getImgIds()) == 20
    meta = json.load(open(path))["opmask"]
    assert meta["strong_category_ids"] == [CLASSES.index(c) + 1 for c in STRONG]
    kinds = {type(a["segmentation"]).__name__ for a in coco.anns.values()}
    assert kinds == {"list", "dict"}  # both polygons and RLE are exercised
    for a in coco.anns.values():  # annotation boxes are the tight boxes of the masks
        m = coco.annToMask(a)
        ys, xs = np.nonzero(m)
        assert a["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
        assert a["area"] == m.sum() > 0
    dicts, info = load_coco_json(path, str(tmp_path / "s" / "train" / "images"), "s")
    assert info.dataset_strong_ids == meta["strong_category_ids"] and len(dicts) == 20


def test_refuses_to_overwrite(tmp_path):
    generate(str(tmp_path / "s"), seed=1, num_train=2, num_val=1, image_size=64)
    import pytest

    with pytest.raises(FileExistsError):
        generate(str(tmp_path / "s"), seed=1, num_train=2, num_val=1, image_size=64)


def test_each_class_has_its_own_hue_family(tmp_path):
    """Objects are coloured from their class's hue family (what the box head's CAM can find), in
    two tones with a random pattern, so no single colour threshold segments them."""
    import colorsys

    generate(str(tmp_path / "s"), seed=2, num_train=12, num_val=1, image_size=96)
    coco = COCO(str(tmp_path / "s" / "train" / "annotations.json"))
    checked = 0
    for a in coco.anns.values():
        m = coco.annToMask(a).astype(bool)
        if m.sum() < 60:
            continue
        info = coco.imgs[a["image_id"]]
        img = np.asarray(Image.open(tmp_path / "s" / "train" / "images" / info["file_name"]))
        hues = np.array([colorsys.rgb_to_hsv(*(px / 255.0))[0] for px in img[m][::3]])
        want = (a["category_id"] - 1) / len(CLASSES)
        off = np.abs((hues - want + 0.5) % 1.0 - 0.5)  # circular distance on the hue circle
        assert np.median(off) < 0.5 / len(CLASSES), (a["id"], CLASSES[a["category_id"] - 1])
        checked += 1
    assert checked >= 20


def _object_hues(root, split="train"):
    """(category_id, median hue) of every object with at least 60 visible pixels."""
    import colorsys

    coco = COCO(str(root / split / "annotations.json"))
    out = []
    for a in coco.anns.values():
        m = coco.annToMask(a).astype(bool)
        if m.sum() < 60:
            continue
        info = coco.imgs[a["image_id"]]
        img = np.asarray(Image.open(root / split / "images" / info["file_name"]))
        rgb = img[m][::3] / 255.0
        hues = np.array([colorsys.rgb_to_hsv(*px)[0] for px in rgb])
        out.append((a["category_id"], float(np.median(hues))))
    return out


def _assert_every_class_spans_the_hue_circle(root):
    by_class = {}
    for cat, hue in _object_hues(root):
        by_class.setdefault(cat, []).append(hue)
    spread = [np.ptp(h) for h in by_class.values() if len(h) >= 4]
    assert len(spread) >= 5 and min(spread) > 0.3  # hue circle is [0, 1)


def test_texture_family_classes_do_not_differ_by_hue(tmp_path):
    """In the texture family a class's objects come in all hues: colour does not tell the class."""
    generate(str(tmp_path / "t"), seed=4, num_train=16, num_val=1, image_size=96, family="texture")
    data = json.loads((tmp_path / "t" / "train" / "annotations.json").read_text())
    assert data["info"]["family"] == "texture"
    _assert_every_class_spans_the_hue_circle(tmp_path / "t")


def test_texture_family_pattern_is_class_specific():
    """The texture family draws each class with its own pattern: the period of a class's stripes
    is visible in the pixels (its dominant spatial frequency)."""
    from opmask.data.shapes import CLASS_TEXTURES, _class_texture

    rng = np.random.default_rng(0)
    for name in ("circle", "crescent"):  # stripes of 8 and 15 px
        tex = _class_texture(rng, name, 128, 128).mean(2)
        spectrum = np.abs(np.fft.fft2(tex - tex.mean()))
        fy, fx = np.unravel_index(spectrum.argmax(), spectrum.shape)
        freq = np.hypot(min(fy, 128 - fy), min(fx, 128 - fx)) / 128
        want = CLASS_TEXTURES[CLASSES.index(name)][1]
        assert abs(1 / freq - want) < 0.25 * want, (name, 1 / freq)


def test_oriented_family_stripes_are_class_specific(tmp_path):
    """The oriented family draws each class with its own stripe orientation and width (visible
    as the dominant spatial frequency of the pixels), in colours of any hue."""
    from opmask.data.shapes import CLASS_STRIPES, _class_stripes

    rng = np.random.default_rng(0)
    for name in ("circle", "triangle", "hexagon", "ring"):  # 0/90/0/135 degrees, 6/6/12/12 px
        tex = _class_stripes(rng, name, 128, 128).mean(2)
        spectrum = np.abs(np.fft.fft2(tex - tex.mean()))
        spectrum[:, 65:] = 0  # the spectrum of a real image is symmetric: keep one half-plane
        fy, fx = np.unravel_index(spectrum.argmax(), spectrum.shape)
        fy = fy - 128 if fy > 64 else fy
        angle = np.degrees(np.arctan2(fy, fx)) % 180
        want_angle, want_period = CLASS_STRIPES[CLASSES.index(name)]
        assert min(abs(angle - want_angle), 180 - abs(angle - want_angle)) < 12, (name, angle)
        assert abs(128 / np.hypot(fx, fy) - want_period) < 0.2 * want_period, name
    generate(str(tmp_path / "o"), seed=4, num_train=16, num_val=1, image_size=96, family="oriented")
    _assert_every_class_spans_the_hue_circle(tmp_path / "o")


def test_families_are_deterministic_and_differ(tmp_path):
    paths = {}
    for fam in ("hue", "texture", "shape", "oriented"):
        generate(str(tmp_path / fam), seed=7, num_train=2, num_val=1, image_size=64, family=fam)
        paths[fam] = (tmp_path / fam / "train" / "images" / "000001.png").read_bytes()
    generate(str(tmp_path / "again"), seed=7, num_train=2, num_val=1, image_size=64, family="shape")
    assert (tmp_path / "again" / "train" / "images" / "000001.png").read_bytes() == paths["shape"]
    assert len(set(paths.values())) == 4


def test_unknown_family_is_refused_before_writing(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="unknown shapes family 'plaid'"):
        generate(str(tmp_path / "x"), seed=1, num_train=1, num_val=1, family="plaid")
    assert not (tmp_path / "x").exists()


def test_cli_family_flag(tmp_path, capsys):
    from opmask.cli.data import main

    out = tmp_path / "d"
    args = ["shapes", "--output", str(out), "--num-train", "2", "--num-val", "1"]
    args += ["--image-size", "64"]
    assert main(args + ["--family", "texture"]) == 0
    assert "texture family" in capsys.readouterr().out
    info = json.loads((out / "train" / "annotations.json").read_text())["info"]
    assert info == {"description": "OPMask synthetic shapes", "seed": 0, "family": "texture"}
    import pytest

    with pytest.raises(SystemExit) as e:
        main(args + ["--family", "plaid", "--overwrite"])
    assert e.value.code == 2
