"""``format_table``: exact strings, as the evaluation summaries print them."""

import pytest

from opmask.utils.table import format_table


def test_first_column_left_others_right_with_format_and_missing():
    text = format_table(
        ["GT boxes", "strong", "weak"],
        [["mask IoU", 0.81234, 0.5], ["OMP >= 0.5 IoU", None, 0.25], ["raw", "n/a", 3]],
        [16, 8, 8],
        fmt=".3f",
    )
    assert text == (
        "GT boxes          strong    weak\n"
        "mask IoU           0.812   0.500\n"
        "OMP >= 0.5 IoU         -   0.250\n"
        "raw                  n/a   3.000"
    )


def test_long_cells_are_kept_whole_and_numbers_keep_their_sign():
    text = format_table(
        ["k", "v"], [["much-too-long", -1.5], ["x", float("nan")]], [4, 6], fmt="+.1f"
    )
    assert text == "k        v\nmuch-too-long  -1.5\nx     +nan"


def test_align_missing_and_no_rows():
    assert format_table(["a", "b"], [], [3, 3]) == "a    b"
    text = format_table(["n", "MB"], [[1, None], [16, 2048]], [3, 6], align=">>", missing="?")
    assert text == "  n    MB\n  1     ?\n 16  2048"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"widths": [3]}, "format_table: 2 columns need 2 widths and 2 of '<' or '>'"),
        (
            {"widths": [3, 3], "align": "<^"},
            "format_table: 2 columns need 2 widths and 2 of '<' or '>'",
        ),
        (
            {"widths": [3, 3], "rows": [["a"]]},
            "format_table: a row of 1 cells in a table of 2 columns",
        ),
    ],
)
def test_shape_mismatch_is_a_value_error(kwargs, message):
    with pytest.raises(ValueError) as e:
        format_table(["a", "b"], **{"rows": [], **kwargs})
    assert str(e.value) == message


def test_the_evaluation_tables_print_as_before():
    """``coco_eval.format_table`` and ``gt_boxes.format_table`` are built on it; their text is
    pinned here byte for byte (as they printed before, hand-formatted)."""
    from opmask.evaluation import coco_eval, gt_boxes

    ap = dict(zip(coco_eval.METRICS, [41.2345, 0.0, 100.0, -1.0, 5.555, 12345678.9]))
    res = {"bbox": ap, "a_long_task_name": ap, "per_class": {}}
    assert coco_eval.format_table(res) == (
        "task              AP    AP50    AP75     APs     APm     APl\n"
        "bbox           41.23    0.00  100.00   -1.00    5.5512345678.90\n"
        "a_long_task_name   41.23    0.00  100.00   -1.00    5.5512345678.90"
    )
    diag = {"mask_iou_strong": 0.5, "mask_iou_weak": 0.12345, "omp_iou_weak": 0.9}
    assert gt_boxes.format_table({**diag, "cls_acc_strong": float("nan")}) == (
        "GT boxes                    strong    weak\n"
        "mask IoU                     0.500   0.123\n"
        "OMP >= 0.5 IoU                   -   0.900\n"
        "classification accuracy        nan       -"
    )


def test_a_rule_under_the_header_is_as_long_as_the_header():
    text = format_table(["model", "AP"], [["x", 1.5]], [7, 6], fmt=".1f", rule="-")
    assert text == "model      AP\n-------------\nx         1.5"
