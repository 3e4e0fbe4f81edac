"""Opening image files safely: the one place the data loaders decode untrusted pictures.

`open_image` reads the size from the header and refuses decompression bombs before any pixel is
decoded, decodes fully (so truncated files fail here, not mid-training), applies the EXIF
orientation, and recognises the format from the content (a PNG named .jpg still loads; a text
file named .png is refused). `to_rgb` turns every PIL mode (palette, CMYK, 16-bit, alpha, 1-bit,
float) into 8-bit RGB. Every failure is an ImageLoadError whose message names the file and why.
"""
from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

FALLBACK_MAX_PIXELS = 89_478_485  # PIL's own default limit, used when PIL's is switched off (None)


def pixel_limit(max_pixels: int | None = None) -> int:
    """The pixel limit: the one given, else PIL's Image.MAX_IMAGE_PIXELS (so a program's PIL setting holds)."""
    return int(max_pixels or Image.MAX_IMAGE_PIXELS or FALLBACK_MAX_PIXELS)


class ImageLoadError(ValueError):
    """A file that is not a readable image, or one refused by the pixel limit; the message says which."""


def open_image(source: str | os.PathLike | bytes | BinaryIO, max_pixels: int | None = None,
               name: str | None = None) -> Image.Image:
    """Decode an image fully, EXIF-rotated, in its own mode (see to_rgb); ImageLoadError otherwise."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        name, source = name or "image bytes", io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        name = name or str(source)
        if not Path(source).is_file():
            raise ImageLoadError(f"{name}: no such file")
    else:
        name = name or getattr(source, "name", "image stream")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below decides
            warnings.simplefilter("ignore", UserWarning)  # e.g. TIFF metadata complaints: the decode decides
            image = Image.open(source)
            w, h = image.size
            max_pixels = pixel_limit(max_pixels)
            if w * h > max_pixels:
                raise ImageLoadError(f"{name}: {w}x{h} = {w * h:,} pixels is above the limit of {max_pixels:,} "
                                     "(a decompression bomb, or raise max_pixels if you trust the file)")
            if w == 0 or h == 0:
                raise ImageLoadError(f"{name}: the image has zero size")
            image.load()
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageLoadError(f"{name}: refused as a decompression bomb ({e})") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"{name}: not an image file (format not recognised from its content)") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError, IndexError, TypeError, struct.error) as e:
        # PIL's many ways of saying "corrupt": truncated data, bad chunks, broken headers
        raise ImageLoadError(f"{name}: corrupt or truncated image ({type(e).__name__}: {e})") from None
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a damaged EXIF block: keep the pixels, skip the rotation
        return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB: transparency composited on white, 16-bit and float grey rescaled,
    palette and CMYK converted."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        a = np.asarray(image, dtype=np.float32) / 65535.0
        image = Image.fromarray(np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    elif image.mode in ("I", "F"):  # 32-bit int or float: 8-bit values, else 16-bit, else [0, 1] floats
        a = np.asarray(image, dtype=np.float64)
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
        top = 1.0 if image.mode == "F" and a.max(initial=0) <= 1.0 else 255.0 if a.max(initial=0) <= 255 else 65535.0
        image = Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode in ("P", "L", "RGB") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def load_rgb(source: str | os.PathLike | bytes | BinaryIO, max_pixels: int | None = None,
             name: str | None = None) -> np.ndarray:
    """An image file as HWC uint8 RGB (see open_image and to_rgb)."""
    image = open_image(source, max_pixels, name)
    try:
        return np.asarray(to_rgb(image))
    except (OSError, ValueError) as e:
        raise ImageLoadError(f"{name or source}: cannot convert mode {image.mode} to RGB ({e})") from None


def resize_center_crop(image: Image.Image, resolution: int) -> Image.Image:
    """Scale the shorter side to `resolution` (bicubic, antialiased), then crop the centre square."""
    w, h = image.size
    scale = resolution / min(w, h)
    size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
    if size != (w, h):
        image = image.resize(size, Image.BICUBIC)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution))
