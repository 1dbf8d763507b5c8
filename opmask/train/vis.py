"""Pictures of what the model does, for TensorBoard and ``opmask-predict``: per sampled
foreground RoI, the RoI's image crop | OMP | predicted mask | GT mask, under a caption with the
class name and whether the class is strong (mask-supervised) or weak; and prediction overlays
(masks, boxes, class names and scores; weak classes in cool colours), drawn with torchvision's
drawing functions and Pillow for text."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torchvision.ops import roi_align
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from ..data.coco import DatasetInfo
from ..data.images import read_image
from ..evaluation.coco_eval import infer

PANEL = 112  # pixels per column (the 28x28 mask scaled 4x)
CAPTION = 14  # caption strip height


def roi_triptychs(
    extras: dict,
    max_rois: int,
    images: list[torch.Tensor] | None = None,
    class_names: list[str] | None = None,
    bgr: bool = True,
) -> list[tuple[str, torch.Tensor]]:
    """``(tag, image (3, CAPTION + PANEL, 4 PANEL))`` per sampled foreground RoI, in [0, 1].

    Args:
        extras: the training forward's extras: ``mask`` (F, 1, M, M) probabilities, ``gt``
            (F, M, M), ``prior`` (F, 1, m, m) or None (baseline: a black OMP column),
            ``labels`` (F,) 1..K, ``strong`` (F,), ``samples`` [(boxes (R_i, 4), labels (R_i,))]
            per image (foreground RoIs are those with label > 0, in this order).
        images: the batch's images (3, H_i, W_i), 0-255, in the boxes' coordinates; without
            them the crop column is black.
        class_names: name per label - 1. bgr: the images' channels are BGR.

    Tags are stable (``image_omp_mask_gt/roiN``): TensorBoard shows a slider over iterations.
    """
    mask = extras.get("mask")
    if mask is None or len(mask) == 0:
        return []
    idx = torch.linspace(0, len(mask) - 1, steps=min(max_rois, len(mask))).round().long()
    crops = _crops(extras, idx, images, bgr)  # (n, 3, P, P)
    out = []
    for n, i in enumerate(idx.tolist()):
        cols = [_gray(c) for c in _mask_columns(extras, i)]  # OMP, mask, GT: (3, P, P) each
        panel = torch.cat([crops[n], *cols], dim=2).clamp(0, 1)  # (3, P, 4P)
        caption = _caption(extras, i, class_names, panel.shape[2])
        out.append((f"image_omp_mask_gt/roi{n}", torch.cat([caption, panel], dim=1)))
    return out


def _mask_columns(extras: dict, i: int) -> list[torch.Tensor]:
    """OMP, predicted mask and GT mask of RoI ``i`` as (P, P) maps."""
    mask = extras["mask"][i, 0].detach().float().cpu()
    prior = extras.get("prior")
    omp = prior[i, 0].detach().float().cpu() if prior is not None else torch.zeros_like(mask)
    gt = extras["gt"][i].detach().float().cpu()
    return [_resize(x, "bilinear" if x is omp else "nearest") for x in (omp, mask, gt)]


def _resize(x: torch.Tensor, mode: str) -> torch.Tensor:
    kw = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(x[None, None], size=(PANEL, PANEL), mode=mode, **kw)[0, 0]


def _gray(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(0).repeat(3, 1, 1)


def _crops(extras: dict, idx: torch.Tensor, images: list | None, bgr: bool) -> torch.Tensor:
    """The chosen RoIs' image regions, RGB in [0, 1]: (n, 3, P, P); black without images."""
    if images is None or "samples" not in extras:
        return torch.zeros(len(idx), 3, PANEL, PANEL)
    boxes, owner = [], []
    for b, (img_boxes, labels) in enumerate(extras["samples"]):
        fg = labels.detach().cpu() > 0
        boxes.append(img_boxes.detach().float().cpu()[fg])
        owner += [b] * int(fg.sum())
    boxes = torch.cat(boxes)[idx]  # (n, 4)
    out = []
    for box, b in zip(boxes, [owner[i] for i in idx.tolist()]):
        img = images[b].detach().float().cpu()[None]  # (1, 3, H, W)
        crop = roi_align(img, [box[None]], output_size=PANEL, aligned=True)[0]
        out.append((crop.flip(0) if bgr else crop) / 255.0)
    return torch.stack(out)


def _caption(extras: dict, i: int, class_names: list[str] | None, width: int) -> torch.Tensor:
    """A white-on-black strip: ``name (strong|weak)  crop | OMP | mask | GT``: (3, CAPTION, W)."""
    label = int(extras["labels"][i])
    name = class_names[label - 1] if class_names else f"class {label}"
    strong = extras.get("strong")
    kind = "" if strong is None else (" (strong)" if bool(strong[i]) else " (weak)")
    strip = Image.new("RGB", (width, CAPTION), "black")
    ImageDraw.Draw(strip).text((3, 1), f"{name}{kind}   image | OMP | mask | GT", fill="white")
    return torch.from_numpy(np.asarray(strip).copy()).permute(2, 0, 1).float() / 255.0


# ---------------------------------------------------------------------- predictions
@dataclass
class Detections:
    """One image's detections in the input image's pixels, best score first.

    ``boxes`` (D, 4) float32 x0, y0, x1, y1; ``scores`` (D,) float32; ``labels`` (D,) the model's
    labels 1..K; ``category_ids`` (D,) the dataset's (COCO) category ids; ``class_names`` D
    names; ``weak`` (D,) bool, the class had box labels only in training (not in the run's
    strong split); ``masks`` (D, H, W) bool (None for a model without a mask head); ``priors``
    (D, H, W) float32 in [0, 1], each detection's object mask prior pasted into its box (only
    when asked for, and only for OPMask models).
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    category_ids: np.ndarray
    class_names: list[str]
    weak: np.ndarray
    masks: np.ndarray | None
    priors: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.boxes)


# Strong classes in warm colours, weak (box-only) classes in cool ones.
STRONG_COLOURS = [(230, 25, 75), (245, 130, 48), (255, 225, 25), (240, 50, 230), (170, 110, 40)]
WEAK_COLOURS = [(0, 130, 200), (70, 240, 240), (60, 180, 75), (145, 30, 180), (0, 128, 128)]
LEGEND = "warm colours: strong classes (masks in training)   cool colours, (weak): box-only classes"
MASK_ALPHA = 0.5


def colour_of(label: int, weak: bool) -> tuple[int, int, int]:
    palette = WEAK_COLOURS if weak else STRONG_COLOURS
    return palette[int(label) % len(palette)]


def caption(name: str, weak: bool, score: float | None) -> str:
    """``dog (weak) 0.87``; no score for ground truth."""
    text = f"{name} (weak)" if weak else name
    return text if score is None else f"{text} {score:.2f}"


def draw_detections(image: np.ndarray, dets: Detections, *, scores: bool = True) -> np.ndarray:
    """(H, W, 3) uint8: ``image`` with each detection's mask (alpha MASK_ALPHA), box and caption
    in its class colour; weak classes in the cool colours with a thinner box and "(weak)"."""
    out = torch.from_numpy(np.array(image, np.uint8)).permute(2, 0, 1)  # a writable copy
    if not len(dets):
        return np.ascontiguousarray(image)
    colours = [colour_of(c, w) for c, w in zip(dets.labels, dets.weak)]
    if dets.masks is not None:
        masks = torch.from_numpy(dets.masks)
        out = draw_segmentation_masks(out, masks, alpha=MASK_ALPHA, colors=colours)
    boxes = torch.from_numpy(dets.boxes)
    texts = [
        caption(n, bool(w), float(s) if scores else None)
        for n, w, s in zip(dets.class_names, dets.weak, dets.scores)
    ]
    for weak, width in ((False, 2), (True, 1)):
        rows = [i for i in range(len(dets)) if bool(dets.weak[i]) == weak]
        if rows:
            out = draw_bounding_boxes(
                out,
                boxes[rows],
                labels=[texts[i] for i in rows],
                colors=[colours[i] for i in rows],
                width=width,
            )
    return np.ascontiguousarray(out.permute(1, 2, 0).numpy())


def draw_priors(image: np.ndarray, dets: Detections) -> np.ndarray:
    """(H, W, 3) uint8: each detection's object mask prior (its maximum where boxes overlap) as
    the red channel over a dimmed grey image, with the boxes."""
    grey = image.astype(np.float32).mean(axis=2, keepdims=True) * 0.4
    heat = np.zeros(image.shape[:2], np.float32)
    if dets.priors is not None and len(dets):
        heat = dets.priors.max(axis=0)
    panel = np.concatenate([grey + heat[..., None] * 153, grey, grey], axis=2)
    panel = np.clip(panel, 0, 255).astype(np.uint8)
    if not len(dets):
        return panel
    boxes = torch.from_numpy(dets.boxes)
    colours = [colour_of(c, w) for c, w in zip(dets.labels, dets.weak)]
    out = draw_bounding_boxes(torch.from_numpy(panel).permute(2, 0, 1), boxes, colors=colours)
    return np.ascontiguousarray(out.permute(1, 2, 0).numpy())


def compose(panels: list[np.ndarray], legend: str = LEGEND) -> Image.Image:
    """Panels side by side (4 px apart) above one line of legend text."""
    font = ImageFont.load_default()
    h = max(p.shape[0] for p in panels)
    w = sum(p.shape[1] for p in panels) + 4 * (len(panels) - 1)
    text_w = int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(legend, font=font))
    canvas = Image.new("RGB", (max(w, text_w + 8), h + 16), (255, 255, 255))
    x = 0
    for p in panels:
        canvas.paste(Image.fromarray(p), (x, 0))
        x += p.shape[1] + 4
    ImageDraw.Draw(canvas).text((4, h + 3), legend, fill=(0, 0, 0), font=font)
    return canvas


def detections_of(out: dict, info: DatasetInfo, strong_ids) -> Detections:
    """The :class:`Detections` of one model output (an inference dict on the CPU, in the input
    image's pixels); ``strong_ids``: category ids with mask labels in training."""
    strong = set(int(c) for c in strong_ids)
    labels = out["labels"].numpy()
    cats = np.array([info.category_id(int(c)) for c in labels], dtype=np.int64)
    masks = out.get("masks")
    return Detections(
        boxes=out["boxes"].float().numpy(),
        scores=out["scores"].float().numpy(),
        labels=labels,
        category_ids=cats,
        class_names=[info.thing_classes[int(c) - 1] for c in labels],
        weak=np.array([int(c) not in strong for c in cats], dtype=bool),
        masks=None if masks is None else masks[:, 0].numpy(),
        priors=out["priors"].numpy() if "priors" in out else None,
    )


def above(out: dict, threshold: float) -> dict:
    """``out`` (an inference dict) with the detections scoring >= ``threshold``, on the CPU."""
    keep = out["scores"] >= threshold
    return {k: v[keep].cpu() for k, v in out.items()}


OVERLAY_SCORE = 0.5  # the detections drawn in TensorBoard (opmask-predict's default threshold)


def prediction_overlays(model, dicts: list[dict], mapper, info: DatasetInfo, strong_ids) -> list:
    """For each dataset dict (the same images at every evaluation): its image with the model's
    detections scoring >= OVERLAY_SCORE drawn on it, (3, H, W) uint8 for TensorBoard."""
    out = []
    for d in dicts:
        (pred,) = infer(model, [mapper(d)])
        dets = detections_of(above(pred, OVERLAY_SCORE), info, strong_ids)
        image = read_image(d["file_name"], "RGB")
        out.append(torch.tensor(draw_detections(image, dets)).permute(2, 0, 1))  # a copy
    return out
