import pytest

from opmask.data.splits import COCO_IDS, VOC_IDS, SplitError, strong_category_ids


def test_coco_splits():
    voc = strong_category_ids("voc", COCO_IDS)
    nvoc = strong_category_ids("nvoc", COCO_IDS)
    inc = strong_category_ids("40_classes_inc", COCO_IDS)
    assert voc == sorted(VOC_IDS) and len(nvoc) == 60 and not set(voc) & set(nvoc)
    assert len(inc) == 40 and set(voc) < set(inc)
    assert 10 in inc and 11 in inc  # contiguous indices 9, 10 -> traffic light, fire hydrant
    assert strong_category_ids("", COCO_IDS) == list(COCO_IDS)


def test_dataset_and_explicit_splits():
    assert strong_category_ids("dataset", [1, 2, 3], dataset_strong_ids=[3, 1]) == [1, 3]
    assert strong_category_ids("voc", [1, 2, 3], explicit_ids=[2]) == [2]
    with pytest.raises(SplitError, match="declares no strong/weak split"):
        strong_category_ids("dataset", [1, 2])
    with pytest.raises(SplitError, match="COCO's 80 categories"):
        strong_category_ids("voc", [1, 2, 3], dataset_name="mine")
    with pytest.raises(SplitError, match=r"\[7\]"):
        strong_category_ids("", [1, 2], explicit_ids=[7])


def test_unknown_explicit_id_is_named():
    """Not "99 is not in list": the key and the id."""
    with pytest.raises(SplitError) as e:
        strong_category_ids("voc", COCO_IDS, explicit_ids=[1, 99], dataset_name="coco_2017_train")
    assert str(e.value) == (
        "EXP.STRONG_CATEGORY_IDS names categories [99] that coco_2017_train lacks"
    )
