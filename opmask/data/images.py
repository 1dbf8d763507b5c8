"""Image files to the model's 8-bit input: every PIL pixel mode converted or refused by name.

8-bit modes go through PIL's own conversion to RGB, as Detectron2's ``read_image`` does: ``1``
(0/255), ``L``, ``P`` (its palette), ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``; the alpha channel of
``LA``, ``PA``, ``RGBA`` is dropped (Detectron2 drops it too: the colour under a transparent pixel
is what the model sees). 16-bit images (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``; a 16-bit PNG
or TIFF) are scaled by the fixed factor 1/257 (0 -> 0, 65535 -> 255, rounded), not by each
image's own range: the same value gives the same grey in every image of a dataset, and a dark
image stays dark. ``I`` (32-bit integers: a 16-bit PGM opens so) is read the same way when every
value lies in 0..65535 and refused otherwise; ``F`` (floating point) has no agreed 8-bit scale and
is refused. A mode PIL cannot convert is refused with its name. (A 48-bit RGB PNG opens as ``RGB``
already: PIL keeps the high byte of each channel.)
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .coco import DatasetError, shown

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
INTEGER_MODES = (*SIXTEEN_BIT_MODES, "I")  # read by the fixed 1/257 scale
REFUSED_MODES = {"F": "32-bit floating point pixels have no agreed 8-bit scale"}

# what a decoder raises on a file that is not a (complete) image
DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    KeyError,  # e.g. a TIFF tag or compression the plugin does not know
    TypeError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)


def _scale_16bit(a: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255 by 1/257, rounded half up (exact integers)."""
    return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)


def to_rgb8(im: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a loaded PIL image (see the module docstring for each mode).

    Raises:
        DatasetError: a mode without a defined 8-bit conversion (the message names it, without
            the file: the caller adds it).
    """
    mode = im.mode
    if mode in REFUSED_MODES:
        raise DatasetError(f"pixel mode {mode} is not supported ({REFUSED_MODES[mode]})")
    if mode in INTEGER_MODES:
        a = np.asarray(im)
        if a.size and (int(a.min()) < 0 or int(a.max()) > 65535):
            raise DatasetError(
                f"pixel mode {mode} (32-bit integers) with values {int(a.min())}..{int(a.max())}:"
                " only 0..65535 (16-bit) has a defined 8-bit scale"
            )
        return np.repeat(_scale_16bit(a)[..., None], 3, axis=2)
    try:
        return np.asarray(im.convert("RGB"))
    except ValueError as e:
        raise DatasetError(f"pixel mode {mode} cannot be converted to RGB ({e})") from None


def decode_reason(e: BaseException) -> str:
    """The decoder's reason in a few words (without the path, which the caller names)."""
    if isinstance(e, UnidentifiedImageError):
        return "not an image file PIL can identify"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


EXIF_ORIENTATION = 0x0112


def exif_oriented(im: Image.Image) -> Image.Image:
    """``im`` turned upright by its EXIF Orientation tag (2..8), as Detectron2's ``read_image``
    (``_apply_exif_orientation``); ``im`` itself when it has none (1, absent, no EXIF)."""
    if im.getexif().get(EXIF_ORIENTATION, 1) in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(im)
    return im


def read_image(file_name: str, image_format: str) -> np.ndarray:
    """(H, W, 3) uint8 in ``image_format`` channel order (RGB or BGR), upright by the EXIF
    Orientation tag when the file has one (as Detectron2).

    Raises:
        DatasetError: the file cannot be opened or decoded (truncated, not an image, a
            directory), or its pixel mode cannot be converted; the message names the file
            (escaped when it holds control characters) and the reason.
    """
    try:
        with Image.open(file_name) as im:
            im.load()
            arr = to_rgb8(exif_oriented(im))
    except DatasetError as e:
        raise DatasetError(f"cannot read image {shown(file_name)}: {e}") from None
    except DECODE_ERRORS as e:
        raise DatasetError(f"cannot read image {shown(file_name)}: {decode_reason(e)}") from None
    return arr[:, :, ::-1] if image_format == "BGR" else arr
