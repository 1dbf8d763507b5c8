"""A synthetic partially supervised instance segmentation dataset, written as real COCO JSON + PNG.

Eight shape classes, half of them mask-supervised ("strong"). What, besides the outline, tells a
class apart depends on the *family*:

- ``hue`` (default): each class has its own hue family (1/8 of the hue circle apart), drawn in two
  random tones with a random pattern (stripes, checks, blotches, gradient), so no single colour
  threshold segments it.
- ``texture``: each class has its own texture (a pattern kind and scale: narrow or wide stripes,
  small or large checks, dots, concentric rings, cross-hatching, blotches) in two random colours of
  random hue: the class is in the shape and the texture, never in the colour.
- ``shape``: every object gets a random pattern in random colours: the class is in the outline
  only.
- ``oriented``: each class has its own stripes — an orientation (0, 45, 90 or 135 degrees) and a
  width (narrow or wide) — in two random colours: a texture the first convolutions see at once,
  as ImageNet-trained filters see a zebra's stripes; never the colour.
 Backgrounds are textured and cluttered with unannotated strokes and blobs; objects
are placed to overlap and occlude each other, so a box often holds parts of other objects — and
box-only ("weak") objects often appear, as background, inside the boxes whose masks are
supervised. That is the partially supervised trap the paper addresses: a class-agnostic mask head
learns to call the weak classes background, while the box head's class activation maps still
find them. Scales from 22 to 64 pixels. Deterministic: the same seed gives byte-identical files.
"""

from __future__ import annotations

import colorsys
import json
import os
import shutil
import tempfile

import numpy as np
from PIL import Image, ImageDraw

from .coco import mask_to_rle, segm_to_mask

CLASSES = ["circle", "square", "triangle", "star", "hexagon", "cross", "crescent", "ring"]
STRONG = ["circle", "square", "star", "ring"]  # masks given; the others are box-only
MIN_RADIUS, MAX_RADIUS = 11, 32  # object sizes 22-64 px: smaller shapes are ambiguous even to us
OBJECTS = (3, 6)  # objects drawn per image (before dropping heavily occluded ones)
HUE_JITTER = 1 / 32  # a tone's hue is the class's hue +- this (class hues are 1/8 apart)
_VERTICES = {"circle": 24, "square": 4, "triangle": 3, "hexagon": 6}
FAMILIES = ("hue", "texture", "shape", "oriented")
# texture family: (pattern, period in px) of each class, in CLASSES order
CLASS_TEXTURES = (  # periods >= 8 px: visible at the stride (4) of the finest FPN level
    ("stripes", 8.0),
    ("checks", 8.0),
    ("dots", 9.0),
    ("rings", 8.0),
    ("hatch", 10.0),
    ("blotches", 12.0),
    ("stripes", 15.0),
    ("checks", 15.0),
)
# oriented family: (stripe orientation in degrees, period in px) of each class, in CLASSES order;
# strong and weak classes both get every orientation and both widths
CLASS_STRIPES = (
    (0.0, 6.0),
    (45.0, 6.0),
    (90.0, 6.0),
    (135.0, 6.0),
    (0.0, 12.0),
    (45.0, 12.0),
    (90.0, 12.0),
    (135.0, 12.0),
)


def _outline(name: str, cx: float, cy: float, r: float, angle: float) -> list[list[float]]:
    """Polygon(s) of a shape; for ring/crescent the second polygon is cut out of the first."""

    def ngon(n, radius, x=cx, y=cy, phase=angle):
        t = phase + 2 * np.pi * np.arange(n) / n
        return np.stack([x + radius * np.cos(t), y + radius * np.sin(t)], 1).reshape(-1).tolist()

    if name in _VERTICES:
        return [ngon(_VERTICES[name], r)]
    if name == "star":
        t = angle + np.pi * np.arange(10) / 5
        rad = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        return [np.stack([cx + rad * np.cos(t), cy + rad * np.sin(t)], 1).reshape(-1).tolist()]
    if name == "cross":
        a, b = r, 0.35 * r
        pts = np.array(
            [
                (-b, -a),
                (b, -a),
                (b, -b),
                (a, -b),
                (a, b),
                (b, b),
                (b, a),
                (-b, a),
                (-b, b),
                (-a, b),
                (-a, -b),
                (-b, -b),
            ]
        )
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        return [(pts @ rot.T + (cx, cy)).reshape(-1).tolist()]
    if name == "ring":
        return [ngon(32, r), ngon(32, 0.55 * r)]
    if name == "crescent":
        off = 0.45 * r
        return [ngon(32, r), ngon(32, r, cx + off * np.cos(angle), cy + off * np.sin(angle))]
    raise ValueError(name)


def _shape_mask(name: str, polys: list, h: int, w: int) -> np.ndarray:
    outer = segm_to_mask([polys[0]], h, w)
    if len(polys) == 1:
        return outer
    return outer & (1 - segm_to_mask([polys[1]], h, w))


def _class_colours(rng: np.random.Generator, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Two tones (dark, light) of the class's hue family, as RGB in 0..255."""
    hue = CLASSES.index(name) / len(CLASSES)
    tones = []
    for value in (rng.uniform(0.3, 0.6), rng.uniform(0.7, 1.0)):
        h = (hue + rng.uniform(-HUE_JITTER, HUE_JITTER)) % 1.0
        tones.append(np.array(colorsys.hsv_to_rgb(h, rng.uniform(0.55, 1.0), value)) * 255)
    return tones[0], tones[1]


def _texture(rng: np.random.Generator, h: int, w: int, colours: tuple | None = None) -> np.ndarray:
    """(H, W, 3) float two-tone pattern: stripes, checks, blotches or a gradient."""
    c1, c2 = colours if colours is not None else (rng.uniform(0, 255, 3), rng.uniform(0, 255, 3))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = rng.integers(4)
    if kind == 0:
        theta, period = rng.uniform(0, np.pi), rng.uniform(4, 12)
        t = (np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period) > 0) * 1.0
    elif kind == 1:
        s = rng.integers(3, 9)
        t = ((xx // s + yy // s) % 2) * 1.0
    elif kind == 2:
        small = rng.random((h // 8 + 2, w // 8 + 2))
        t = np.asarray(
            Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
        )
        t = t / 255.0
    else:
        theta = rng.uniform(0, 2 * np.pi)
        t = xx * np.cos(theta) + yy * np.sin(theta)
        t = (t - t.min()) / (np.ptp(t) + 1e-6)
    return c1 * (1 - t[..., None]) + c2 * t[..., None]


def _random_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two RGB colours (0..255) of random hue, one dark, one light: the pattern stays visible."""
    tones = []
    for value in (rng.uniform(0.15, 0.5), rng.uniform(0.65, 1.0)):
        rgb = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0, 1), value)
        tones.append(np.array(rgb) * 255)
    return (tones[0], tones[1]) if rng.random() < 0.5 else (tones[1], tones[0])


def _class_texture(rng: np.random.Generator, name: str, h: int, w: int) -> np.ndarray:
    """(H, W, 3) float: the class's own pattern (``CLASS_TEXTURES``) in two random colours,
    at a random orientation and phase, its period jittered by +-15 %."""
    kind, period = CLASS_TEXTURES[CLASSES.index(name)]
    period *= rng.uniform(0.85, 1.15)
    theta = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + rng.uniform(0, 2 * period, (2, 1, 1))
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    wave = lambda a: np.sin(a * 2 * np.pi / period) > 0  # noqa: E731
    if kind == "stripes":
        t = wave(u)
    elif kind == "checks":
        t = (np.floor(u / period) + np.floor(v / period)) % 2 > 0
    elif kind == "dots":
        t = np.hypot((u % period) - period / 2, (v % period) - period / 2) < period * 0.3
    elif kind == "rings":
        t = wave(np.hypot(xx - xx.mean(), yy - yy.mean()))
    elif kind == "hatch":
        t = wave(u) & wave(v)
    else:  # blotches: smooth noise thresholded at its median
        small = rng.random((int(h / period) + 2, int(w / period) + 2))
        big = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), 2))
        t = big > np.median(big)
    c1, c2 = _random_colours(rng)
    t = t.astype(np.float32)[..., None]
    return c1 * (1 - t) + c2 * t


def _class_stripes(rng: np.random.Generator, name: str, h: int, w: int) -> np.ndarray:
    """(H, W, 3) float: the class's stripes (``CLASS_STRIPES``: orientation +- 5 degrees, period
    +- 10 %) at a random phase, in two random colours."""
    angle, period = CLASS_STRIPES[CLASSES.index(name)]
    theta = np.deg2rad(angle + rng.uniform(-5, 5))
    period *= rng.uniform(0.9, 1.1)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = xx * np.cos(theta) + yy * np.sin(theta) + rng.uniform(0, period)
    t = (np.sin(u * 2 * np.pi / period) > 0).astype(np.float32)[..., None]
    c1, c2 = _random_colours(rng)
    return c1 * (1 - t) + c2 * t


def _object_texture(rng: np.random.Generator, name: str, family: str, h: int, w: int):
    """(H, W, 3) float fill of one object of class ``name`` in ``family``."""
    if family == "hue":
        return _texture(rng, h, w, _class_colours(rng, name))
    if family == "texture":
        return _class_texture(rng, name, h, w)
    if family == "shape":
        return _texture(rng, h, w)
    if family == "oriented":
        return _class_stripes(rng, name, h, w)
    raise ValueError(f"unknown shapes family {family!r}: use one of {', '.join(FAMILIES)}")


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    img = _texture(rng, h, w) * 0.6 + _texture(rng, h, w) * 0.4
    canvas = Image.fromarray(img.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(4, 10)):  # clutter: unannotated strokes and blobs
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        if rng.random() < 0.5:
            draw.line(
                [x0, y0, x0 + rng.uniform(-40, 40), y0 + rng.uniform(-40, 40)],
                fill=color,
                width=int(rng.integers(1, 4)),
            )
        else:
            rr = rng.uniform(2, 6)
            draw.ellipse([x0 - rr, y0 - rr, x0 + rr, y0 + rr], fill=color)
    return np.asarray(canvas).astype(np.float32)


def _place(rng: np.random.Generator, h: int, w: int, boxes: list) -> tuple[float, float, float]:
    r = float(np.exp(rng.uniform(np.log(MIN_RADIUS), np.log(MAX_RADIUS))))
    if boxes and rng.random() < 0.6:  # overlap an earlier object's box on purpose
        x0, y0, x1, y1 = boxes[rng.integers(len(boxes))]
        cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
    else:
        cx, cy = rng.uniform(r * 0.5, w - r * 0.5), rng.uniform(r * 0.5, h - r * 0.5)
    return float(cx), float(cy), r


def render_image(
    rng: np.random.Generator, h: int, w: int, family: str = "hue"
) -> tuple[np.ndarray, list[dict]]:
    """One image and its objects: ``{class, mask (visible part), polygons or None}``."""
    img = _background(rng, h, w)
    objects, boxes = [], []
    for _ in range(rng.integers(OBJECTS[0], OBJECTS[1] + 1)):
        name = CLASSES[rng.integers(len(CLASSES))]
        cx, cy, r = _place(rng, h, w, boxes)
        polys = [
            [round(v, 2) for v in p]
            for p in _outline(name, cx, cy, r, float(rng.uniform(0, 2 * np.pi)))
        ]
        full = _shape_mask(name, polys, h, w)
        if full.sum() < 30:
            continue
        tex = _object_texture(rng, name, family, h, w)
        img = np.where(full[..., None] > 0, tex, img)
        for o in objects:  # this object occludes earlier ones
            o["mask"] = o["mask"] & (1 - full)
        objects.append(
            {
                "class": name,
                "mask": full,
                "full_area": int(full.sum()),
                "polygons": polys if len(polys) == 1 else None,
            }
        )
        ys, xs = np.nonzero(full)
        boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    noise = rng.normal(0, 6, img.shape)
    kept = [o for o in objects if o["mask"].sum() >= max(25, 0.35 * o["full_area"])]
    return (img + noise).clip(0, 255).astype(np.uint8), kept


def _annotation(obj: dict, ann_id: int, image_id: int) -> dict:
    m = obj["mask"]
    ys, xs = np.nonzero(m)
    x0, y0 = int(xs.min()), int(ys.min())
    occluded = int(m.sum()) < obj["full_area"]
    if obj["polygons"] is not None and not occluded:
        segm = obj["polygons"]
    else:
        segm = mask_to_rle(m)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": CLASSES.index(obj["class"]) + 1,
        "bbox": [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0],
        "area": int(m.sum()),
        "iscrowd": 0,
        "segmentation": segm,
    }


def write_split(
    out_dir: str, num_images: int, seed: int, image_size: int, family: str = "hue"
) -> None:
    """Write ``out_dir/annotations.json`` and ``out_dir/images/*.png``."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(out_dir, "images"))
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        h, w = (
            (image_size, image_size * 5 // 4)
            if rng.random() < 0.5
            else (image_size * 5 // 4, image_size)
        )
        img, objects = render_image(rng, h, w, family)
        file_name = f"{image_id:06d}.png"
        Image.fromarray(img).save(os.path.join(out_dir, "images", file_name))
        images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
        for obj in objects:
            annotations.append(_annotation(obj, len(annotations) + 1, image_id))
    strong = [CLASSES.index(c) + 1 for c in STRONG]
    data = {
        "info": {"description": "OPMask synthetic shapes", "seed": seed, "family": family},
        "categories": [
            {"id": i + 1, "name": c, "supercategory": "shape"} for i, c in enumerate(CLASSES)
        ],
        "images": images,
        "annotations": annotations,
        "opmask": {
            "strong_category_ids": strong,
            "weak_category_ids": [i for i in range(1, 9) if i not in strong],
        },
    }
    with open(os.path.join(out_dir, "annotations.json"), "w", encoding="utf-8") as f:
        json.dump(data, f, sort_keys=True, separators=(",", ":"))


def generate(
    out: str,
    *,
    seed: int,
    num_train: int,
    num_val: int,
    image_size: int = 128,
    overwrite: bool = False,
    family: str = "hue",
) -> None:
    """Generate ``out/train`` and ``out/val`` of ``family`` (one of ``FAMILIES``); writes into a
    temporary folder, then renames."""
    if family not in FAMILIES:
        raise ValueError(f"unknown shapes family {family!r}: use one of {', '.join(FAMILIES)}")
    if os.path.exists(out) and os.listdir(out) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty (use --overwrite)")
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".shapes-", dir=parent)
    try:
        write_split(os.path.join(tmp, "train"), num_train, seed, image_size, family)
        write_split(os.path.join(tmp, "val"), num_val, seed + 1_000_003, image_size, family)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
