"""Upscale images with a super-resolution network (or bicubic): tiled, colour-safe, alpha- and grey-aware.

Tiling crops the centre of overlapping tiles: each tile is run with `overlap` pixels of real
context on every side and only its core is kept, so the seams vanish once the overlap covers
the network's effective receptive field (the output then equals the untiled one).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from wordcanvas.assets import AssetMissing
from wordcanvas.utils.images import ImageLoadError, open_image  # noqa: F401  (ImageLoadError re-exported)

DEFAULT_MAX_PIXELS = 4096 * 4096  # input pixels; a x4 result of this size is already 268 megapixels
METHODS = ("fast", "quality", "quality-gan", "realesrgan", "srmd", "bicubic")
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"  # shipped trained weights: sr-<name>-x<scale>/
EDGE_PAD = 8  # input pixels mirrored beyond each image edge, for the networks that gain from it (mirror_edges)


# --------------------------------------------------------------------------- loading

def load_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image (utils.images.open_image: header pixel limit before decoding,
    corrupt files refused, EXIF rotation), with the upscaler's own pixel limit."""
    return open_image(path, max_pixels=max_pixels)


def _pil_to_array(img: Image.Image) -> np.ndarray:
    """Any PIL image -> HWC uint8 with 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA) channels."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I", "F"):  # deep grey: scale to 8 bits instead of clipping
        a = np.asarray(img).astype(np.float64)
        top = 65535.0 if a.max() > 255 else 255.0
        return np.clip(a / top * 255 + 0.5, 0, 255).astype(np.uint8)[..., None]
    if img.mode not in ("L", "LA", "RGB", "RGBA"):
        has_alpha = img.mode in ("PA", "La", "RGBa") or "transparency" in img.info
        grey = img.mode in ("1", "La")
        img = img.convert(("LA" if has_alpha else "L") if grey else ("RGBA" if has_alpha else "RGB"))
    a = np.asarray(img)
    return a[..., None] if a.ndim == 2 else a


# --------------------------------------------------------------------------- tiling

def _spans(size: int, tile: int) -> list[tuple[int, int]]:
    """Split [0, size) into equal-ish cores no longer than `tile` (no thin leftover strip)."""
    n = max(1, math.ceil(size / tile))
    step = math.ceil(size / n)
    return [(i, min(i + step, size)) for i in range(0, size, step)]


def tiled_apply(fn, x: torch.Tensor, scale: int, tile: int, overlap: int, progress: bool = False) -> torch.Tensor:
    """Run `fn` (NCHW -> NCHW upscaled by `scale`) tile by tile and stitch the tile centres.

    `tile` is the core size in input pixels (<= 0: no tiling); each tile gets `overlap` pixels of
    context per side, which is cut away from the result.
    """
    n, c, h, w = x.shape
    if tile <= 0 or (h <= tile and w <= tile):
        return fn(x)
    boxes = [(y0, y1, x0, x1) for y0, y1 in _spans(h, tile) for x0, x1 in _spans(w, tile)]
    out = None
    from tqdm.auto import tqdm

    for y0, y1, x0, x1 in tqdm(boxes, desc="tiles", unit="tile", disable=not progress, leave=False):
        py0, py1, px0, px1 = max(y0 - overlap, 0), min(y1 + overlap, h), max(x0 - overlap, 0), min(x1 + overlap, w)
        y = fn(x[:, :, py0:py1, px0:px1])
        if out is None:
            out = torch.empty(n, y.shape[1], h * scale, w * scale, dtype=y.dtype, device=x.device)
        oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
        out[:, :, y0 * scale : y1 * scale, x0 * scale : x1 * scale] = \
            y[:, :, oy : oy + (y1 - y0) * scale, ox : ox + (x1 - x0) * scale].to(x.device)
    return out


# --------------------------------------------------------------------------- edges and self-ensemble

def mirror_edges(fn, x: torch.Tensor, scale: int, pad: int = EDGE_PAD) -> torch.Tensor:
    """Run fn (NCHW -> NCHW upscaled by `scale`) on x with `pad` pixels mirrored beyond every edge, then cut
    them off the result. A network learns from crops cut out of larger photos, so at an image's edge its
    convolutions' zero padding is context it rarely saw; mirrored pixels look like more of the image."""
    pad = min(pad, x.shape[2] - 1, x.shape[3] - 1)  # reflection needs more pixels than it mirrors
    if pad <= 0:
        return fn(x)
    y = fn(F.pad(x, (pad, pad, pad, pad), mode="reflect"))
    cut = pad * scale
    return y[:, :, cut : y.shape[2] - cut, cut : y.shape[3] - cut]


def square_symmetry(image: torch.Tensor, which: int, inverse: bool = False) -> torch.Tensor:
    """One of the 8 symmetries of the square on the last two axes: `which` % 4 quarter turns, then a horizontal
    flip if `which` >= 4 (or the inverse of that)."""
    turns, flip = which % 4, which >= 4
    if inverse:
        return torch.rot90(image.flip(-1) if flip else image, -turns, (-2, -1))
    image = torch.rot90(image, turns, (-2, -1))
    return image.flip(-1) if flip else image


def self_ensemble(fn, x: torch.Tensor) -> torch.Tensor:
    """Mean of fn over the 8 symmetries of the square (4 rotations, with and without a horizontal
    flip), each result turned back: EDSR's geometric self-ensemble."""
    return sum(square_symmetry(fn(square_symmetry(x, g)), g, inverse=True) for g in range(8)) / 8


# --------------------------------------------------------------------------- the API

class Upscaler:
    """Upscale float NCHW images in [-1, 1] (or PIL images) by `scale` with a network or bicubic.

    Channels: 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA). Grey is run through an RGB network
    as three equal channels and averaged back, so grey in gives grey out; alpha is upscaled with
    bicubic and reattached. `ensemble=True` is the self-ensemble of EDSR+: the network runs on the
    8 flips / 90-degree rotations of the input and the results, turned back, are averaged (8x the
    time, for a little more PSNR). `edge_pad` pixels are mirrored beyond the image's edges before the
    network runs (`mirror_edges`); by default, as the network's folder asks in config.json ("edge_pad",
    set for the networks measured to gain from it), else 0.
    """

    def __init__(self, model: nn.Module | None, scale: int = 4, *, tile: int = 256, overlap: int = 16,
                 device: str | torch.device = "cpu", max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "",
                 progress: bool = False, ensemble: bool = False, edge_pad: int = 0):
        self.model = model.eval().to(device) if model is not None else None
        if self.model is not None and torch.device(device).type == "cpu":
            # oneDNN runs channels-last convolutions ~2x faster on CPU; results are the same
            self.model = self.model.to(memory_format=torch.channels_last)
        if edge_pad < 0:
            raise ValueError(f"edge_pad is a number of pixels, >= 0; got {edge_pad}")
        self.scale, self.tile, self.overlap, self.ensemble, self.edge_pad = scale, tile, overlap, ensemble, edge_pad
        self.device, self.max_pixels, self.progress = torch.device(device), max_pixels, progress
        self.name = name or ("bicubic" if model is None else type(model).__name__)
        if model is not None:
            net_scale = int(getattr(model, "scale"))
            if net_scale % scale or net_scale < scale:
                raise ValueError(f"a x{net_scale} network cannot produce a x{scale} upscale")
        elif scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")

    # ---- construction
    @classmethod
    def from_name(cls, name: str, scale: int = 4, **kwargs) -> "Upscaler":
        """`fast` / `quality` / `quality-gan` (trained weights), `realesrgan`, `srmd`, `bicubic`, or a model folder."""
        if name == "bicubic":
            return cls(None, scale, name="bicubic", **kwargs)
        if name == "realesrgan":
            from wordcanvas.sr.ncnn import load_realesrgan

            if scale not in (2, 4):
                raise ValueError(f"realesrgan upscales by 4 (or by 2: x4 then downsampled); got scale {scale}")
            return cls(load_realesrgan("realesrgan-x4plus"), scale, name="realesrgan", **kwargs)
        if name == "srmd":
            from wordcanvas.sr.ncnn import load_srmd

            kwargs.setdefault("edge_pad", EDGE_PAD)
            return cls(load_srmd(scale), scale, name="srmd", **kwargs)
        if name in ("fast", "quality", "quality-gan"):
            if scale not in (2, 4):
                raise ValueError(f"'{name}' exists for scale 2 and 4, got {scale}")
            folder = WEIGHTS_DIR / f"sr-{name}-x{scale}"
            if not (folder / "config.json").exists():
                raise AssetMissing(
                    f"no trained weights for the '{name}' x{scale} super-resolution network are installed "
                    f"(expected {folder}); train it (wordcanvas train) and pass the output folder as the model, "
                    f"or use 'realesrgan' or 'bicubic'")
            return cls.from_pretrained(folder, scale, name=name, **kwargs)
        if Path(name).is_dir():
            return cls.from_pretrained(name, scale, **kwargs)
        raise ValueError(f"unknown upscaler '{name}': choose from {', '.join(METHODS)} or give a model folder")

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, scale: int | None = None, **kwargs) -> "Upscaler":
        from wordcanvas.models.base import CONFIG_NAME, CheckpointError
        from wordcanvas.models.sr import load_sr_model, resolve_sr_folder

        model = load_sr_model(folder)  # refuses a missing or broken config.json first
        kwargs.setdefault("name", Path(folder).name)
        edge_pad = json.loads((resolve_sr_folder(folder) / CONFIG_NAME).read_text()).get("edge_pad", 0)
        if type(edge_pad) is not int or edge_pad < 0:
            raise CheckpointError(f"{folder}: {CONFIG_NAME} sets edge_pad to {edge_pad!r}; it must be a whole number "
                                  f"of pixels, 0 or more")
        kwargs.setdefault("edge_pad", edge_pad)
        return cls(model, scale or model.scale, **kwargs)

    # ---- tensors
    @torch.inference_mode()
    def upscale(self, images: torch.Tensor) -> torch.Tensor:
        """NCHW float in [-1, 1] -> NCHW upscaled by `self.scale`, clamped to [-1, 1] (returned on CPU)."""
        if images.ndim != 4 or images.shape[1] not in (1, 2, 3, 4):
            raise ValueError(f"expected NCHW images with 1-4 channels, got shape {tuple(images.shape)}")
        n, c, h, w = images.shape
        if h * w > self.max_pixels:
            raise ValueError(f"{w}x{h} image is above the limit of {self.max_pixels:,} pixels")
        images = images.float().cpu()
        n_colour = 3 if c >= 3 else 1
        colour, alpha = images[:, :n_colour], images[:, n_colour:]
        out = self._upscale_colour(colour)
        if alpha.shape[1]:
            out = torch.cat([out, self._bicubic(alpha)], 1)
        return out

    def _bicubic(self, x: torch.Tensor) -> torch.Tensor:
        from wordcanvas.models.sr import bicubic_upsample  # torch's bicubic, as a faster convolution

        return bicubic_upsample(x, self.scale).clamp(-1, 1)

    def _upscale_colour(self, x: torch.Tensor) -> torch.Tensor:
        if self.model is None:
            return self._bicubic(x)
        grey = x.shape[1] == 1
        net_in = getattr(getattr(self.model, "config", None), "channels", 3)
        if grey and net_in == 3:
            x = x.expand(-1, 3, -1, -1)
        net_scale = int(self.model.scale)
        net = lambda t: self.model(t.to(self.device)).float().cpu()  # noqa: E731
        run = (lambda t: self_ensemble(net, t)) if self.ensemble else net  # noqa: E731
        tiled = lambda t: tiled_apply(run, t, net_scale, self.tile, self.overlap, self.progress)  # noqa: E731
        y = mirror_edges(tiled, x, net_scale, self.edge_pad).clamp(-1, 1)
        if net_scale != self.scale:  # e.g. Real-ESRGAN x4 asked for x2: downsample its result with antialiasing
            y = F.interpolate(y, size=(x.shape[2] * self.scale, x.shape[3] * self.scale), mode="bicubic",
                              antialias=True, align_corners=False).clamp(-1, 1)
        if grey and net_in == 3:
            y = y.mean(1, keepdim=True)
        return y

    # ---- PIL
    def upscale_pil(self, image: Image.Image) -> Image.Image:
        """PIL image in any mode -> upscaled PIL image in L, LA, RGB or RGBA (alpha kept)."""
        array = _pil_to_array(image)
        h, w = array.shape[:2]
        if h * w > self.max_pixels:
            raise ImageLoadError(f"{w}x{h} image is above the limit of {self.max_pixels:,} pixels")
        from wordcanvas.utils.io import from_uint8, to_uint8

        out = to_uint8(self.upscale(from_uint8(array.copy())[None]))[0]
        return Image.fromarray(out[..., 0] if out.shape[-1] == 1 else out)

    def upscale_file(self, path: str | os.PathLike) -> Image.Image:
        return self.upscale_pil(load_image(path, self.max_pixels))

    def __repr__(self) -> str:
        return (f"Upscaler({self.name!r}, scale={self.scale}, tile={self.tile}, overlap={self.overlap}"
                + (f", edge_pad={self.edge_pad}" if self.edge_pad else "") + (", ensemble=True)" if self.ensemble else ")"))
