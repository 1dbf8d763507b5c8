"""The body of ``opmask-predict``: expand the inputs, load the predictor, write one overlay PNG per
image and one COCO results JSON for all of them, report progress, skip unreadable files."""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import io
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from pycocotools.coco import COCO

from ..data.catalog import BUILTIN, resolve
from ..data.coco import DatasetError
from ..data.images import DECODE_ERRORS, decode_reason, to_rgb8
from ..run.folder import RunFolder
from ..train.vis import Detections, compose, draw_detections, draw_priors
from ..utils.fs import atomic_write_bytes
from .predict import PredictError, Predictor

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
RESULTS = RunFolder.PREDICTIONS  # the COCO results of all images in --output (as a run writes)
PROGRESS_SECONDS = 5.0  # a progress line at least this often ...
PROGRESS_IMAGES = 100  # ... and every this many images
SKIPPED = 1  # exit code when some inputs could not be read (the others are written)


@dataclasses.dataclass
class Item:
    """One input image: its path, the image id of the results, the overlay's file name."""

    path: str
    image_id: int | None = None
    name: str = ""


# ---------------------------------------------------------------------- inputs
def expand_inputs(specs: list[str]) -> list[Item]:
    """Image files, folders (their image files, sorted), globs, and COCO annotation files
    (``ANN.json``: file names relative to its folder; ``ANN.json:IMAGE_DIR``; a dataset name such
    as ``shapes_val``): their images, with their ids. Each path once, in order.

    Raises:
        PredictError: an input that does not exist or matches nothing; a bad annotation file.
    """
    items, seen = [], set()
    for spec in specs:
        for item in _expand(spec):
            key = os.path.abspath(item.path)
            if key not in seen:
                seen.add(key)
                items.append(item)
    if not items:
        raise PredictError(f"no images in {' '.join(specs)}")
    return items


def _expand(spec: str) -> list[Item]:
    if spec in BUILTIN or ".json:" in spec or (spec.endswith(".json") and os.path.isfile(spec)):
        return _coco_images(spec)
    if os.path.isdir(spec):
        names = sorted(n for n in os.listdir(spec) if n.lower().endswith(IMAGE_EXTENSIONS))
        return [Item(os.path.join(spec, n)) for n in names]
    if os.path.isfile(spec):
        return [Item(spec)]
    if any(c in spec for c in "*?["):
        found = sorted(p for p in glob.glob(spec) if os.path.isfile(p))
        if found:
            return [Item(p) for p in found]
        raise PredictError(f"--input {spec}: matches no file")
    raise PredictError(f"--input {spec}: no such file or folder")


def _coco_images(spec: str) -> list[Item]:
    if spec.endswith(".json"):
        json_file, root = spec, os.path.dirname(spec)
    else:
        json_file, root, _ = resolve(spec)
    data = _read_json(json_file)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not all(
        isinstance(i, dict) and "id" in i and "file_name" in i for i in images
    ):
        raise PredictError(f"{json_file}: not a COCO annotation file (no images with ids)")
    return [Item(os.path.join(root, i["file_name"]), i["id"]) for i in images]


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise PredictError(f"{path}: cannot read it ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PredictError(f"{path}: not JSON ({e})") from None


def read_rgb(path: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB with the EXIF orientation applied (as a viewer shows the image), each
    pixel mode converted as the evaluation's reader converts it (``data.images.to_rgb8``).

    Raises:
        PredictError: not a readable image.
    """
    try:
        with Image.open(path) as im:
            im.load()
            return to_rgb8(ImageOps.exif_transpose(im))  # the evaluation's pixel conversion
    except DatasetError as e:
        raise PredictError(f"{path}: not a readable image ({e})") from None
    except DECODE_ERRORS as e:
        raise PredictError(f"{path}: not a readable image ({decode_reason(e)})") from None


# ---------------------------------------------------------------------- outputs
def overlay_names(items: list[Item]) -> None:
    """``item.name``: the input's stem + ``.png``; ``_2``, ``_3`` ... where stems repeat."""
    used: set[str] = set()
    for item in items:
        stem = os.path.splitext(os.path.basename(item.path))[0]
        name, k = f"{stem}.png", 1
        while name in used:
            k += 1
            name = f"{stem}_{k}.png"
        used.add(name)
        item.name = name


def check_output(folder: str, names: list[str], overwrite: bool) -> None:
    """Refuse before anything is written: an output that cannot be a writable folder, or files
    in it that would be replaced without ``overwrite``."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise PredictError(f"--output {folder}: exists and is not a folder")
    probe = os.path.abspath(folder)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        raise PredictError(f"--output {folder}: cannot write in {probe}")
    existing = [n for n in names if os.path.lexists(os.path.join(folder, n))]
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise PredictError(
            f"--output {folder}: {existing[0]}{more} exist(s); pass --overwrite to replace them"
        )


def write_png(path: str, image: Image.Image) -> None:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


class Progress:
    """``PROG: 40/300 images, 0.52 s/image, ETA 2m15s`` on ``stream`` every ``every_s`` seconds
    or ``every_n`` images, and once at the end."""

    def __init__(
        self,
        total: int,
        prog: str,
        stream,
        every_s: float = PROGRESS_SECONDS,
        every_n: int = PROGRESS_IMAGES,
        clock=time.monotonic,
    ):
        self.total, self.prog, self.stream = total, prog, stream
        self.every_s, self.every_n, self.clock = every_s, every_n, clock
        self.start = self.last = clock()
        self.shown = 0

    def update(self, done: int) -> None:
        now = self.clock()
        due = now - self.last >= self.every_s or done // self.every_n > self.shown // self.every_n
        if not (due or done == self.total):
            return
        per = (now - self.start) / max(done, 1)
        eta = int(round(per * (self.total - done)))
        print(
            f"{self.prog}: {done}/{self.total} images, {per:.2f} s/image, "
            f"ETA {eta // 60}m{eta % 60:02d}s",
            file=self.stream,
            flush=True,
        )
        self.last, self.shown = now, done


# ---------------------------------------------------------------------- ground truth
class GroundTruth:
    """A COCO annotation file's objects per image file name (its base name)."""

    def __init__(self, json_file: str, predictor: Predictor):
        _read_json(json_file)  # one-line errors for a missing or broken file
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco = COCO(json_file)
        self.by_name = {os.path.basename(i["file_name"]): i for i in self.coco.imgs.values()}
        self.predictor = predictor

    def image_id(self, path: str):
        img = self.by_name.get(os.path.basename(path))
        return None if img is None else img["id"]

    def detections(self, path: str, size: tuple[int, int]) -> Detections | None:
        """The image's objects as ``Detections`` (score 1); None when the file has no such
        image or gives it another size."""
        img = self.by_name.get(os.path.basename(path))
        if img is None or (img["height"], img["width"]) != size:
            return None
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=img["id"]))
        info, strong = self.predictor.info, self.predictor.strong_ids
        ids = info.category_ids
        cats = [a["category_id"] for a in anns]
        masks = [
            self.coco.annToMask(a).astype(bool) if a.get("segmentation") else np.zeros(size, bool)
            for a in anns
        ]
        return Detections(
            boxes=np.array([_xyxy(a["bbox"]) for a in anns], np.float32).reshape(-1, 4),
            scores=np.ones(len(anns), np.float32),
            labels=np.array([ids.index(c) + 1 if c in ids else c for c in cats], np.int64),
            category_ids=np.array(cats, np.int64),
            class_names=[self.coco.cats[c]["name"] for c in cats],
            weak=np.array([c not in strong for c in cats], bool),
            masks=np.stack(masks) if masks else np.zeros((0, *size), bool),
        )


def _xyxy(b) -> list[float]:
    return [b[0], b[1], b[0] + b[2], b[1] + b[3]]


# ---------------------------------------------------------------------- drawing one image
def scaled(image: np.ndarray, dets: Detections | None, max_size: int):
    """``image`` and ``dets`` shrunk so the longer side is at most ``max_size`` (0: as is)."""
    h, w = image.shape[:2]
    if not max_size or max(h, w) <= max_size:
        return image, dets
    s = max_size / max(h, w)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    image = np.asarray(Image.fromarray(image).resize(size[::-1], Image.BILINEAR))
    if dets is None:
        return image, None

    def resize(a, mode):
        if a is None or not len(a):
            return None if a is None else np.zeros((0, *size), a.dtype)
        t = F.interpolate(torch.from_numpy(a)[:, None].float(), size=size, mode=mode)[:, 0]
        return (t > 0.5).numpy() if a.dtype == bool else t.numpy()

    return image, dataclasses.replace(
        dets,
        boxes=dets.boxes * np.float32(s),
        masks=resize(dets.masks, "nearest"),
        priors=resize(dets.priors, "bilinear"),
    )


def overlay(image, dets, *, prior: bool, truth: Detections | None, gt: bool, max_size: int):
    """The PNG of one image: prediction, [object mask prior], [ground truth], and the legend."""
    small, d = scaled(image, dets, max_size)
    panels = [draw_detections(small, d)]
    if prior:
        panels.append(draw_priors(small, d))
    if gt:
        _, t = scaled(image, truth, max_size)
        panels.append(small if t is None else draw_detections(small, t, scores=False))
    return compose(panels)


# ---------------------------------------------------------------------- the command
def load_predictor(source: str, config_file: str | None, device, threshold) -> Predictor:
    if config_file:
        if not os.path.isfile(source):
            raise PredictError(f"{source}: no such weights file")
        return Predictor.from_weights(config_file, source, device=device, score_threshold=threshold)
    if os.path.isfile(source):
        raise PredictError(f"{source} is a file: weights need --config-file")
    if not os.path.isdir(source):
        raise PredictError(f"{source}: no such run folder")
    return Predictor.from_run(source, device=device, score_threshold=threshold)


def predict_files(
    source: str,
    *,
    inputs: list[str],
    output: str,
    config_file: str | None = None,
    threshold: float = 0.5,
    device: str | None = None,
    max_size: int = 0,
    overwrite: bool = False,
    batch_size: int = 1,
    show_prior: bool = False,
    gt: str | None = None,
    prog: str = "opmask-predict",
    err=None,
    progress_every: int = PROGRESS_IMAGES,
) -> int:
    """Overlays and COCO results of ``inputs`` in ``output``; 0, or SKIPPED when some inputs
    could not be read (each named on ``err``; the others are written). Bad input raises
    (nothing written)."""
    err = err or sys.stderr
    items = expand_inputs(inputs)
    predictor = load_predictor(source, config_file, device, threshold)
    if show_prior and not predictor.has_prior:
        raise PredictError(f"--show-prior: {source} has no object mask prior (not OPMask)")
    truth = GroundTruth(gt, predictor) if gt else None
    overlay_names(items)
    check_output(output, [i.name for i in items] + [RESULTS], overwrite)
    for k, item in enumerate(items):
        found = truth.image_id(item.path) if truth and item.image_id is None else None
        if item.image_id is None:
            item.image_id = found if found is not None else k + 1
    os.makedirs(output, exist_ok=True)
    progress = Progress(len(items), prog, err, every_n=progress_every)
    results, skipped = [], 0
    for start in range(0, len(items), batch_size):
        loaded = []
        for item in items[start : start + batch_size]:
            try:
                loaded.append((item, read_rgb(item.path)))
            except PredictError as e:
                print(f"{prog}: skipped {e}", file=err, flush=True)
                skipped += 1
        outs = predictor.outputs([im for _, im in loaded], with_prior=show_prior) if loaded else []
        for (item, image), out in zip(loaded, outs):
            results += predictor.coco_results(out, item.image_id)
            t = truth.detections(item.path, image.shape[:2]) if truth else None
            png = overlay(
                image,
                predictor.detections(out),
                prior=show_prior,
                truth=t,
                gt=truth is not None,
                max_size=max_size,
            )
            write_png(os.path.join(output, item.name), png)
        progress.update(min(start + batch_size, len(items)))
    atomic_write_bytes(os.path.join(output, RESULTS), json.dumps(results).encode())
    written = len(items) - skipped
    print(f"wrote {written} overlay(s) and {os.path.join(output, RESULTS)} ({len(results)} dets)")
    if skipped:
        print(
            f"{prog}: error: {skipped} of {len(items)} inputs could not be read (named above); "
            f"the other {written} are written",
            file=err,
            flush=True,
        )
        return SKIPPED
    return 0
