"""Which categories have mask supervision ("strong") and which only boxes ("weak")."""

from __future__ import annotations

from typing import Sequence

from ..utils.errors import OPMaskInputError

# The 80 COCO category ids in sorted order (contiguous index i <-> COCO_IDS[i]).
COCO_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90,
)  # fmt: skip
# COCO ids of the 20 PASCAL VOC classes.
VOC_IDS = (1, 2, 3, 4, 5, 6, 7, 9, 16, 17, 18, 19, 20, 21, 44, 62, 63, 64, 67, 72)
# The 20 extra classes of "40_classes_inc", as contiguous (0-based, sorted-id) COCO indices.
EXTRA_40_INDICES = (9, 10, 13, 23, 24, 25, 26, 36, 42, 47, 48, 49, 52, 54, 61, 63, 70, 74, 76, 79)

COCO_SPLITS = ("voc", "nvoc", "40_classes_inc", "")
DATASET_SPLIT = "dataset"


class SplitError(OPMaskInputError):
    """The requested split does not fit the dataset."""


def strong_category_ids(
    ps: str,
    category_ids: Sequence[int],
    dataset_strong_ids: Sequence[int] | None = None,
    explicit_ids: Sequence[int] = (),
    dataset_name: str = "dataset",
) -> list[int]:
    """The dataset category ids that get mask supervision.

    Args:
        ps: ``EXP.PS``: one of ``voc``, ``nvoc``, ``40_classes_inc``, ``""`` (all) or ``dataset``.
        category_ids: all category ids of the dataset.
        dataset_strong_ids: the split the dataset itself declares (synthetic data), if any.
        explicit_ids: ``EXP.STRONG_CATEGORY_IDS``; when non-empty it wins over ``ps``.
        dataset_name: used in error messages.
    """
    ids = sorted(int(c) for c in category_ids)
    if explicit_ids:
        unknown = sorted(set(explicit_ids) - set(ids))
        if unknown:
            raise SplitError(
                f"EXP.STRONG_CATEGORY_IDS names categories {unknown} that {dataset_name} lacks"
            )
        return sorted(int(c) for c in explicit_ids)
    if ps == "":
        return ids
    if ps == DATASET_SPLIT:
        if dataset_strong_ids is None:
            raise SplitError(
                f"EXP.PS 'dataset': {dataset_name} declares no strong/weak split; "
                "set EXP.STRONG_CATEGORY_IDS or a COCO split"
            )
        return sorted(int(c) for c in dataset_strong_ids)
    if ps not in COCO_SPLITS:
        raise SplitError(f"EXP.PS {ps!r} is not one of {list(COCO_SPLITS) + [DATASET_SPLIT]}")
    if tuple(ids) != COCO_IDS:
        raise SplitError(
            f"EXP.PS {ps!r} is a COCO split but {dataset_name} does not have COCO's 80 categories;"
            " use EXP.PS dataset or EXP.STRONG_CATEGORY_IDS"
        )
    if ps == "voc":
        return sorted(VOC_IDS)
    if ps == "nvoc":
        return sorted(set(COCO_IDS) - set(VOC_IDS))
    return sorted(set(VOC_IDS) | {COCO_IDS[i] for i in EXTRA_40_INDICES})
