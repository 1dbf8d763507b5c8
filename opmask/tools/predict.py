"""The predictor: a trained model on an image, computing exactly what the run's evaluation
computes (the test mapper's resize, ``coco_eval.infer``, the model's own postprocessing and mask
paste), and the overlay drawing (torchvision's drawing functions, Pillow for text).

    from opmask.tools.predict import Predictor
    predictor = Predictor.from_run("output/OPMask/shapes_train_run_01")
    dets = predictor(image)  # image: (H, W, 3) uint8 RGB; dets.boxes, .masks, .class_names ...
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from ..config import check_device, load_config
from ..data.build import check_num_classes, load_datasets, strong_ids_from_cfg
from ..data.coco import DatasetInfo
from ..data.mapper import DatasetMapper
from ..engine.run_dir import RunFolderError
from ..engine.run_folder import RunFolder
from ..evaluation.coco_eval import infer, predictions_to_coco
from ..modeling import build_model
from ..modeling.mask_paste import paste_masks_in_image
from ..modeling.postprocess import rescale_detections
from ..modeling.weights import load_weights
from ..utils.errors import OPMaskInputError


class PredictError(OPMaskInputError):
    """The predictor cannot do what was asked with this model or input."""


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


class Predictor:
    """A model of a run in eval mode, called on RGB images.

    Args:
        cfg: the run's config (its INPUT and MODEL keys say how images are resized and read).
        model: the detector with its weights loaded.
        info: the training dataset's categories (names, COCO ids).
        strong_ids: category ids with mask labels in training; the others are weak.
        score_threshold: detections scoring below it are dropped (the model's own
            ``SCORE_THRESH_TEST`` applies first, as in evaluation).
    """

    def __init__(self, cfg, model, info: DatasetInfo, strong_ids, *, score_threshold=0.5):
        self.cfg, self.model, self.info = cfg, model.eval(), info
        self.strong_ids = set(int(c) for c in strong_ids)
        self.score_threshold = float(score_threshold)
        self.mapper = DatasetMapper(  # the evaluation's test mapper (data.build_test_loader)
            is_train=False,
            min_sizes=[cfg.INPUT.MIN_SIZE_TEST],
            max_size=cfg.INPUT.MAX_SIZE_TEST,
            image_format=cfg.INPUT.FORMAT,
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_run(cls, run_dir: str, *, device: str | None = None, score_threshold=0.5):
        """The newest valid checkpoint of an ``opmask-train`` run folder, with its config.

        Raises:
            RunFolderError: not a run folder. CheckpointError: no valid checkpoint in it.
        """
        run = RunFolder(run_dir)
        if not run.is_run():
            raise RunFolderError(f"{run_dir}: no {run.CONFIG} (not a run folder of opmask-train)")
        cfg = _config(run.config, device)
        model, _, _ = run.load_model(cfg)
        return cls(cfg, model, *class_info(cfg), score_threshold=score_threshold)

    @classmethod
    def from_weights(
        cls, config_file: str, weights: str, *, device: str | None = None, score_threshold=0.5
    ):
        """A config file and a weights file: ours, Detectron2's or the official OPMask code's
        (``modeling.weights.load_weights`` converts names and class order)."""
        cfg = _config(config_file, device)
        model = build_model(cfg)
        try:
            report = load_weights(model, weights)
        except OPMaskInputError:
            raise
        except ValueError as e:  # a tensor of another shape: weights of another config
            raise PredictError(str(e)) from None
        heads = [k for k in report.loaded if not k.startswith("backbone.")]
        if report.missing or not heads:
            missing = report.missing[0] if report.missing else "every head"
            raise PredictError(
                f"{weights}: not a whole detector for {config_file} ({missing} "
                f"and {max(len(report.missing) - 1, 0)} more tensors missing)"
            )
        return cls(cfg, model, *class_info(cfg), score_threshold=score_threshold)

    # ------------------------------------------------------------------ prediction
    def __call__(self, image: np.ndarray) -> Detections:
        """Detections on one (H, W, 3) uint8 RGB image."""
        return self.predict([image])[0]

    def predict(self, images: list[np.ndarray], *, with_prior: bool = False) -> list[Detections]:
        """Detections on (H, W, 3) uint8 RGB images, run as one batch (padded to one size as in
        training; batches of one image give exactly the evaluation's numbers)."""
        outputs = self.outputs(images, with_prior=with_prior)
        return [self.detections(out) for out in outputs]

    def outputs(self, images: list[np.ndarray], *, with_prior: bool = False) -> list[dict]:
        """The model's outputs (``OPMask`` inference dicts, on the CPU) with score >=
        ``score_threshold``; with ``with_prior`` also ``priors`` (D, H, W)."""
        if with_prior and not self.has_prior:
            raise PredictError("this model has no object mask prior (not an OPMask model)")
        batch = [self._mapped(im) for im in images]
        if not with_prior:
            outs = infer(self.model, batch)
        else:
            with _captured_mask_inputs(self.model) as seen:
                outs = infer(self.model, batch)
            outs = [_with_priors(o, x, *s) for o, x, s in zip(outs, batch, _per_image(seen, batch))]
        return [_above(o, self.score_threshold) for o in outs]

    def coco_results(self, output: dict, image_id) -> list[dict]:
        """COCO result entries of one output (``outputs``), as the evaluation writes them."""
        return predictions_to_coco(output, image_id, self.info.category_id)

    def detections(self, out: dict) -> Detections:
        labels = out["labels"].numpy()
        cats = np.array([self.info.category_id(int(c)) for c in labels], dtype=np.int64)
        masks = out.get("masks")
        return Detections(
            boxes=out["boxes"].float().numpy(),
            scores=out["scores"].float().numpy(),
            labels=labels,
            category_ids=cats,
            class_names=[self.info.thing_classes[int(c) - 1] for c in labels],
            weak=np.array([int(c) not in self.strong_ids for c in cats], dtype=bool),
            masks=None if masks is None else masks[:, 0].numpy(),
            priors=out["priors"].numpy() if "priors" in out else None,
        )

    @property
    def has_prior(self) -> bool:
        """True for an OPMask model (an object mask prior feeds its mask head)."""
        return bool(self.model.use_prior)

    def _mapped(self, image: np.ndarray) -> dict:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            shape = tuple(image.shape)
            raise PredictError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} {shape}")
        pixels = image[:, :, ::-1] if self.cfg.INPUT.FORMAT == "BGR" else image
        h, w = image.shape[:2]
        return self.mapper({"pixels": pixels, "height": h, "width": w, "image_id": None})


def _config(config_file: str, device: str | None):
    """The config with ``MODEL.DEVICE`` ``device`` (None: the config's own), checked usable."""
    cfg = load_config(config_file, [] if device is None else ["MODEL.DEVICE", device])
    check_device(cfg.MODEL.DEVICE)
    return cfg


def class_info(cfg) -> tuple[DatasetInfo, list[int]]:
    """The training set's categories and the run's strong category ids (as training derives
    them: ``DATASETS.TRAIN``'s first dataset, ``EXP.PS``)."""
    _, info = load_datasets(cfg.DATASETS.TRAIN[:1], cache_dir=cfg.DATASETS.CACHE_DIR)
    check_num_classes(cfg, info)
    return info, strong_ids_from_cfg(cfg, info)


def _above(out: dict, threshold: float) -> dict:
    keep = out["scores"] >= threshold
    return {k: v[keep].cpu() for k, v in out.items()}


# ---------------------------------------------------------------------- the object mask prior
@contextlib.contextmanager
def _captured_mask_inputs(model):
    """Records what the mask stage is given at inference, without changing the model: the boxes
    of each image (network-input pixels) and the prior (N, 1, M, M) added to the mask features."""
    seen: dict = {}

    def pooler(_, args):
        seen["boxes"] = [b.detach() for b in args[1]]

    def head(_, args):
        seen["prior"] = args[1].detach() if len(args) > 1 else None

    hooks = [
        model.mask_pooler.register_forward_pre_hook(pooler),
        model.mask_head.register_forward_pre_hook(head),
    ]
    try:
        yield seen
    finally:
        for h in hooks:
            h.remove()


def _per_image(seen: dict, batch: list[dict]) -> list[tuple]:
    """(boxes (D_i, 4), prior (D_i, 1, M, M)) per image of the batch."""
    if seen.get("prior") is None:
        raise PredictError("this model has no object mask prior (not an OPMask model)")
    priors = seen["prior"].split([len(b) for b in seen["boxes"]])
    return list(zip(seen["boxes"], priors))


def _with_priors(out: dict, x: dict, boxes, prior) -> dict:
    """``out`` plus ``priors`` (D, H, W): the OMP of each kept detection pasted into its box as
    the masks are (the model drops the same detections when rescaling)."""
    size, original = tuple(x["image"].shape[1:]), (x["height"], x["width"])
    kept = rescale_detections({"boxes": boxes, "prior": prior}, size, original)
    assert torch.equal(kept["boxes"], out["boxes"]), "prior and detections out of step"
    out = dict(out)
    out["priors"] = paste_masks_in_image(kept["prior"], out["boxes"], original, threshold=None)
    return out


# ---------------------------------------------------------------------- drawing
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
