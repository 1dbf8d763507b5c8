"""COCO evaluation (bbox, segm, segm_strong, segm_weak, per class) and the GT-box diagnostic
(mask IoU, OMP IoU and box-head accuracy given the ground-truth boxes, strong vs weak)."""
