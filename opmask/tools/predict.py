"""The predictor: a trained model on an image, computing exactly what the run's evaluation
computes (the test mapper's resize, ``coco_eval.infer``, the model's own postprocessing and mask
paste), and the overlay drawing (torchvision's drawing functions, Pillow for text).

    from opmask.tools.predict import Predictor
    predictor = Predictor.from_run("output/OPMask/shapes_train_run_01")
    dets = predictor(image)  # image: (H, W, 3) uint8 RGB; dets.boxes, .masks, .class_names ...
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..config import check_device, load_config
from ..data.build import build_test_mapper
from ..data.catalog import check_num_classes, load_datasets, strong_ids_from_cfg
from ..data.coco import DatasetInfo
from ..evaluation.coco_eval import infer, predictions_to_coco
from ..modeling import build_model
from ..modeling.mask_paste import paste_masks_in_image
from ..modeling.postprocess import rescale_detections
from ..modeling.weights import load_weights
from ..run.claim import RunFolderError
from ..run.folder import RunFolder
from ..train.vis import Detections, above, detections_of
from ..utils.errors import OPMaskInputError


class PredictError(OPMaskInputError):
    """The predictor cannot do what was asked with this model or input."""


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
        self.mapper = build_test_mapper(cfg)  # the evaluation's

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
        return [above(o, self.score_threshold) for o in outs]

    def coco_results(self, output: dict, image_id) -> list[dict]:
        """COCO result entries of one output (``outputs``), as the evaluation writes them."""
        return predictions_to_coco(output, image_id, self.info.category_id)

    def detections(self, out: dict) -> Detections:
        return detections_of(out, self.info, self.strong_ids)

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
