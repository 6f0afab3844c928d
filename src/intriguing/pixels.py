"""Image files to pixels in [0, 1] as people see them: the box in which the paper's attack (Section 4.1)
measures distortion, so a wrong white level or a photo on its side changes every distance it reports.

One rule for every file, whatever Pillow mode it decodes to:

* the EXIF orientation is applied (``ImageOps.exif_transpose``): a phone photo stored sideways is upright;
* transparency (RGBA, LA, a palette's or a grey image's transparent colour) is composited on white, as
  viewers and pages show it: the colour a fully transparent pixel stores is arbitrary, often black;
* 8-bit modes (``1``, ``L``, ``P``, ``RGB``, ``CMYK``, ``YCbCr``, ...) become grey (``L``) or ``RGB``, 255
  being 1; 16-bit grey (``I;16`` of either byte order, ``I`` from a 16-bit PGM) is divided by 65535 and
  float grey (``F``) must already lie in [0, 1], both kept at full precision (mode ``F``);
* 32-bit integer pixels (a TIFF made from an ``int32`` array) are refused: nothing says whether 255,
  65535 or 2**32 - 1 is white, and every guess would silently darken or saturate some file.

Pillow is imported only here, and only when an image folder is read.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from intriguing.errors import IntriguingError
from intriguing.preprocessing import centre_region

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
GREY_MODES = ("L", "F")  # what read() returns besides "RGB"
WHITE16 = 65535.0
BITS_PER_SAMPLE = 258  # the TIFF tag
# How an image of another shape is fitted to the size asked for: its central region of that size's aspect
# ratio resized (the default, as ImageNet evaluation crops), or the whole image resized, its proportions lost.
FITS = ("crop", "squash")


def read(file: Path, name: str):
    """``file`` decoded, upright, on white, as a Pillow image of mode ``L``, ``RGB`` or ``F``; an
    unreadable file raises one line naming it as ``name``."""
    from PIL import Image, ImageOps

    failures = (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError)
    try:
        with Image.open(file) as image:
            image.load()
            if image.mode == "I" and _bits(image) > 16:  # read before exif_transpose: its copy has no TIFF tags
                raise IntriguingError(f"{name}: 32-bit integer pixels have no standard white level (255? 65535?); "
                                      "save it as 8-bit or 16-bit")
            upright = ImageOps.exif_transpose(image)
            return _deep(upright, name) if image.mode == "F" or image.mode.startswith("I") else _eight_bit(upright)
    except IntriguingError:
        raise  # a ValueError too: already one line naming the file
    except failures as e:
        raise IntriguingError(f"cannot read image {name} ({type(e).__name__}: {e}); re-save or remove it") from None


def _eight_bit(image):
    """An 8-bit image as ``L`` or ``RGB``, its transparency composited on white."""
    from PIL import Image

    grey = image.mode in ("1", "L", "LA", "La")
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert("L" if grey else "RGB")


def _deep(image, name: str):
    """A 16-bit or float grey image as mode ``F`` in [0, 1], or one line saying why it cannot be."""
    from PIL import Image

    top = 1.0 if image.mode == "F" else WHITE16
    array = np.asarray(image).astype(np.float32) / top
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise IntriguingError(f"{name}: {image.mode} pixels must lie in [0, {top:g}], got [{array.min() * top:.4g}, "
                              f"{array.max() * top:.4g}]; save it as 8-bit, or scale it to [0, {top:g}]")
    return Image.fromarray(array)


def _bits(image) -> int:
    """Bits per pixel of a mode ``I`` image: a TIFF says (32 when it does not); Pillow's other ``I`` images
    (16-bit PGM) hold 16-bit values."""
    if image.format != "TIFF":
        return 16
    bits = image.tag_v2.get(BITS_PER_SAMPLE, 32)
    return max(bits) if isinstance(bits, tuple) else int(bits)


def to_array(image, channels: int, size: tuple[int, int] | None, fit: str = "crop") -> np.ndarray:
    """One image from :func:`read` as (C, H, W) float32 in [0, 1], fitted to ``size`` (H, W) as ``fit`` says
    (see :data:`FITS`; bilinear, antialiased when shrinking)."""
    from PIL import Image

    if image.mode != "F":
        image = image.convert("L" if channels == 1 else "RGB")
    if size is not None and image.size != (size[1], size[0]):
        if fit == "crop":
            top, left, height, width = centre_region(image.height, image.width, size)
            image = image.crop((left, top, left + width, top + height))
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    if image.mode == "F":
        return np.repeat(np.asarray(image, dtype=np.float32)[None], channels, axis=0)  # bilinear: still in [0, 1]
    array = np.asarray(image, dtype=np.float32) / 255.0
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1).copy()
